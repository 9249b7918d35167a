"""The seed's LSTM encoder-decoder, in Flax linen: condition -> LSTM stacks -> head.

Encoder: `num_layers` LSTM layers with dropout between them. Decoder: `num_layers`
LSTM layers, layer k started from the encoder's final (c, h) of layer k, then a
dense layer to the vocabulary (the softmax is in the loss). The seed's model is
`num_layers=2, hidden=1024` (configs/paper.py); `from_config` builds a config's.

The condition (`conditioning.Condition`: genre, and for a model with those inputs the
key and the note density) adds one learned row per value to the gates of each
stack's first layer at every step, as a one-hot input would; with
`condition_output`, the genre and key also add a learned row to the logits. With
`lookback`, each decoder step also reads what followed the longest earlier match of the
notes so far (`jaxmusic.lookback`): its note and the match's length add rows to the
first layer's gates, and a learned amount (from the state and the length) is added to
that note's logit: the decoder may copy the piece's own material (with `copy_groups`,
another to every id of the note's pitch and onset, so that a repeat may vary its loudness
and length). With `factors`, each
id's input rows and output row also get learned rows of its parts (`codec.factors`:
pitch as its instrument plays it, velocity, duration, onset, instrument), shared by every
id with that part: a sparse band vocabulary learns a guitar's register from all its notes.

A stack runs in one of two forms, the same function of the same parameters:
- fused (the default): `lstm.stack`, each layer's input projection one product over
  all steps (the one-hot input's a row gather), the recurrence with a hand-written
  backward pass, in the order and layout best for the platform;
- reference (`fused=False`): `nn.scan` of a plain LSTM cell fed the same weights,
  differentiated by autodiff; the tests hold the fused form to it.

Mixed precision follows the policy in `jaxmusic.lstm`: float32 parameters, state,
gates, logits and gradients; `dtype` only as the input of products.
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn
from flax.linen.linear import default_embed_init

from jaxmusic import codec as codec_lib
from jaxmusic import conditioning, lookback, lstm, recent
from jaxmusic.conditioning import Condition
from jaxmusic.lstm import matmul

Carry = tuple[jax.Array, jax.Array]  # (c, h), each float32[B, H]
Lookback = tuple[jax.Array, jax.Array]  # (notes, run-length buckets), int32[B, T] each (`lookback`)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# From this hidden size on, the fused recurrence runs in its column layout on a CPU,
# where XLA runs it faster (docs/performance.md); never on a TPU or GPU, where [4H, B]
# puts the small per-device batch on the minor (lane) axis (`lstm.stack`).
COLUMN_LAYOUT_FROM_HIDDEN = 1024


@dataclasses.dataclass(frozen=True, eq=False)
class Factors:
    """int32[V, F]: each id's rows in a table of its parts (`codec.factors`), as a
    hashable module field (a module's fields are compared and hashed by Flax and jit)."""

    rows: np.ndarray

    @property
    def table_rows(self) -> int:
        return int(self.rows.max()) + 1

    @property
    def _key(self) -> bytes:
        return hashlib.sha1(np.ascontiguousarray(self.rows, np.int32).tobytes()).digest()

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Factors) and self._key == other._key

    @classmethod
    def synthetic(cls, vocab_size: int) -> Factors:
        """Parts of synthetic ids (benchmarks, lowering): five parts of a family codec's sizes."""
        ids = np.arange(vocab_size, dtype=np.int32)
        sizes = (128 * 17, 8, 16, 16, 17)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        rows = [ids % n + o for n, o in zip(sizes, offsets, strict=True)]
        return cls(np.stack(rows, axis=1).astype(np.int32))


class _Kernel(nn.Module):
    """A Dense-shaped kernel at <name>/kernel."""

    features: int
    init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, in_features: int) -> jax.Array:
        return self.param("kernel", self.init, (in_features, self.features))


class _Affine(nn.Module):
    """nn.Dense's parameters (<name>/kernel, <name>/bias) without applying them, so that
    the fused stack can add the bias inside the recurrence."""

    features: int

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (in_features, self.features))
        return kernel, self.param("bias", nn.initializers.zeros, (self.features,))


class _Table(nn.Module):
    """nn.Embed's parameter (<name>/embedding) looked up with clipped indices: nn.Embed's
    out-of-range fill costs a select over the whole [T, B, 4H] output (docs/performance.md)."""

    num_embeddings: int
    features: int
    init: Any = default_embed_init

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        table = self.param("embedding", self.init, (self.num_embeddings, self.features))
        return jnp.take(table, ids, axis=0, mode="clip")


class _RecurrentWeights(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self) -> jax.Array:
        return _Kernel(4 * self.hidden, name="h")(self.hidden)


class LSTMLayer(nn.Module):
    """One LSTM layer's parameters: x/embedding and bias (a layer reading ids: a one-hot
    input, gathered), or x/kernel and x/bias (a layer reading vectors); recurrence/h/kernel."""

    hidden: int
    vocab_size: int | None = None

    def setup(self):
        h4 = 4 * self.hidden
        if self.vocab_size is not None:
            self.x = _Table(self.vocab_size, h4)
            self.bias = self.param("bias", nn.initializers.zeros, (h4,))
        else:
            self.x = _Affine(h4)
        self.recurrence = _RecurrentWeights(self.hidden)

    def input_gates(self, x: jax.Array, dtype: Any) -> tuple[jax.Array, jax.Array]:
        """(the input's share of the gates float32[..., 4H], the bias float32[4H]) of
        x int32[...] ids or float[..., D] vectors."""
        if self.vocab_size is not None:
            return self.x(x), self.bias
        kernel, bias = self.x(x.shape[-1])
        return matmul(x, kernel, dtype), bias

    def input_weights(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        """(W_x float32[D, 4H], b float32[4H]) of a layer reading vectors."""
        return self.x(in_features)

    def recurrent_weights(self) -> jax.Array:
        """W_h float32[H, 4H]."""
        return self.recurrence()


class _Cell(nn.Module):
    """One LSTM step of the reference form, fed its recurrent weights."""

    dtype: Any

    @nn.compact
    def __call__(self, carry: Carry, gates_x: jax.Array, w_h: jax.Array) -> tuple[Carry, jax.Array]:
        c, h = carry
        i, f, g, o = jnp.split(gates_x + matmul(h, w_h, self.dtype), 4, axis=-1)
        c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
        h = nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h


_ScannedCell = nn.scan(_Cell, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=(1, nn.broadcast), out_axes=1)  # fmt: skip


def run_fused(layers, carries, x, gate_rows, keep, *, dtype, order: str, step_gates=None):
    """A stack through `lstm.stack`.

    Args:
      layers: the stack's `LSTMLayer`s; carries: each layer's (c, h) float32[B, H].
      x: int32[B, T] ids or float[B, T, D] (the first layer's input).
      gate_rows: float32[B, 4H] added to the first layer's gates at every step.
      keep: () or per upper layer float32[B, T, H] multipliers of its input (dropout).
      step_gates: float32[B, T, 4H] added to the first layer's gates step by step, or None.

    Returns:
      (each layer's final (c, h), the last layer's outputs float32[B, T, H]).
    """
    hidden = layers[0].hidden
    gates_x, bias = layers[0].input_gates(jnp.swapaxes(x, 0, 1), dtype)
    if step_gates is not None:
        gates_x = gates_x + jnp.swapaxes(step_gates, 0, 1)
    w_h = [layer.recurrent_weights() for layer in layers]
    upper = [layer.input_weights(hidden) for layer in layers[1:]]
    # Under shard_map the inputs vary over devices and the parameters do not, but a
    # custom backward must return a gradient typed like its input: the weights are cast
    # to vary as the inputs do (a type cast, no copy; autodiff then sums their gradients
    # over devices). The bias is cast before its broadcast over the batch, so that its
    # [4H] gradient crosses devices, not a [B, 4H] one.
    vary = partial(lstm.varying_like, gates_x)
    w_h, bias = [vary(w) for w in w_h], vary(bias)
    w_x, b_x = [vary(w) for w, _ in upper], [vary(b) for _, b in upper]
    gate_bias = jnp.broadcast_to(bias, (gates_x.shape[1], 4 * hidden)) + gate_rows
    c0, h0 = (tuple(carry[j].astype(jnp.float32) for carry in carries) for j in range(2))
    keep = tuple(jnp.swapaxes(m, 0, 1) for m in keep)
    column = hidden >= COLUMN_LAYOUT_FROM_HIDDEN
    hs, c, h = lstm.stack(gates_x, w_h, w_x, b_x, c0, h0, gate_bias, keep, dtype=dtype, order=order,
                          column=column)  # fmt: skip
    return list(zip(c, h, strict=True)), jnp.swapaxes(hs, 0, 1)


def run_reference(cell, layers, carries, x, gate_rows, keep, *, dtype, step_gates=None):
    """`run_fused`'s function, layer by layer with `cell` (nn.scan of `_Cell`)."""
    out = []
    for k, (layer, carry) in enumerate(zip(layers, carries, strict=True)):
        if k > 0 and keep:
            x = x * keep[k - 1]
        gates_x, bias = layer.input_gates(x, dtype)
        if k == 0 and step_gates is not None:
            gates_x = gates_x + step_gates
        gates_x = gates_x + bias + (gate_rows[:, None, :] if k == 0 else 0.0)
        carry, x = cell(jax.tree.map(lambda a: a.astype(jnp.float32), carry), gates_x,
                        layer.recurrent_weights())  # fmt: skip
        out.append(carry)
    return out, x


class Seq2Seq(nn.Module):
    """The LSTM encoder-decoder.

    Attributes:
      vocab_size: ids of the codec (specials, genres, pseudo-notes).
      num_genres: genres the model can be asked for.
      num_layers, hidden: LSTM layers per stack, units per layer.
      dropout, decoder_dropout: rates between encoder (the seed) and decoder layers.
      embed_dim: 0 (the seed): the one-hot input goes straight into the first layer's
        gates; > 0: an embedding of this size first (the Embedding + LSTM of most frameworks).
      fused: the fast stack (`lstm.stack`); False: the nn.scan reference.
      dtype: the input type of matrix products (the policy in `jaxmusic.lstm`).
      num_keys, num_densities: 0 (the seed), or the rows of the key and density inputs.
      stack_order: `lstm.stack`'s order ("auto": per platform).
      condition_output: the genre and key also add a learned row to the logits.
      lookback: the decoder reads each step's lookback (`jaxmusic.lookback`) and may copy it.
      copy_groups: None, or for a lookback model each id's group int32[V, 1] (`repeat_groups`):
        the copy also adds a learned amount to every id of the lookback note's group.
      factors: None (the seed), or each id's parts: their learned rows join the id's own in
        both stacks' first-layer gates and in the logits.
      recent_notes, recent_groups: 0 and None, or the notes back and each id's group and
        instrument int32[V, 2] (`recent.groups`): each id's logit also reads its group's count
        in the last notes (`jaxmusic.recent`).
    """

    vocab_size: int
    num_genres: int = 1
    num_layers: int = 2
    hidden: int = 1024
    dropout: float = 0.2
    decoder_dropout: float = 0.0
    embed_dim: int = 0
    fused: bool = True
    dtype: Any = jnp.float32
    num_keys: int = 0
    num_densities: int = 0
    stack_order: str = "auto"
    condition_output: bool = False
    lookback: bool = False
    factors: Factors | None = None
    copy_groups: Factors | None = None
    recent_notes: int = 0
    recent_groups: Factors | None = None

    def setup(self):
        h4, genres, zeros = 4 * self.hidden, max(self.num_genres, 1), nn.initializers.zeros
        for stack in ("encoder", "decoder"):
            setattr(self, f"{stack}_genre", nn.Embed(genres, h4, dtype=jnp.float32))
            if self.num_keys:
                setattr(self, f"{stack}_key", nn.Embed(self.num_keys, h4, dtype=jnp.float32))
            if self.num_densities:  # zeros at the start: the model starts as the key-only one
                density = nn.Embed(self.num_densities, h4, dtype=jnp.float32, embedding_init=zeros)
                setattr(self, f"{stack}_density", density)
            ids = None if self.embed_dim else self.vocab_size
            layers = [LSTMLayer(self.hidden, ids if k == 0 else None) for k in range(self.num_layers)]
            setattr(self, f"{stack}_layers", layers)
            if self.embed_dim:
                setattr(self, f"{stack}_embed", nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype))
        self.encoder_dropout = nn.Dropout(self.dropout)
        self.decoder_dropout_layer = nn.Dropout(self.decoder_dropout)
        self.head = _Affine(self.vocab_size)
        if self.condition_output:
            self.head_genre = _Table(genres, self.vocab_size, zeros)
            if self.num_keys:
                self.head_key = _Table(self.num_keys, self.vocab_size, zeros)
        if self.lookback:  # zeros at the start: the model starts as the plain one
            self.lookback_note = _Table(self.vocab_size, h4, zeros)
            self.lookback_length = _Table(lookback.NUM_BUCKETS, h4, zeros)
            self.copy = _Kernel(1, zeros)
            self.copy_length = _Table(lookback.NUM_BUCKETS, 1, zeros)
            if self.copy_groups is not None:
                self.copy_group = _Kernel(1, zeros)
                self.copy_group_length = _Table(lookback.NUM_BUCKETS, 1, zeros)
        if self.recent_notes:  # zeros at the start: the model starts as the plain one
            self.recent = _Kernel(1, zeros)
            self.recent_count = _Table(lookback.NUM_BUCKETS, 1, zeros)
        if self.factors is not None:  # zeros at the start: the model starts as the plain one
            for stack in ("encoder", "decoder"):
                setattr(self, f"{stack}_factors", _Table(self.factors.table_rows, h4, zeros))
            self.head_factors = _Kernel(self.factors.table_rows, zeros)
        if not self.fused:
            self.cell = _ScannedCell(self.dtype)

    def encode(self, tokens: jax.Array, cond: Condition, *, train: bool = False,
               initial: list[Carry] | None = None) -> list[Carry]:  # fmt: skip
        """The encoder's final (c, h) of each layer, float32[B, H] each, after reading
        tokens int32[B, Te] from `initial` (the state after the notes before them; None: zeros)."""
        initial = initial or [self.zero_carry(tokens)] * self.num_layers
        return self._stack("encoder", initial, tokens, cond, self.encoder_dropout, train)[0]

    def decode(self, carries: list[Carry], tokens: jax.Array, cond: Condition, *,
               lookback: Lookback | None = None, recent_counts: jax.Array | None = None,
               train: bool = False) -> tuple[list[Carry], jax.Array]:  # fmt: skip
        """(each layer's final (c, h), logits float32[B, T, V]) of the decoder reading
        tokens int32[B, T] from `carries` (and, for a lookback model, each step's lookback;
        for a model of recent counts, each step's float32[B, T, G]: `recent.counts`)."""
        step_gates = None
        if self.lookback:
            step_gates = self.lookback_note(lookback[0]) + self.lookback_length(lookback[1])
        carries, x = self._stack(
            "decoder", carries, tokens, cond, self.decoder_dropout_layer, train, step_gates
        )
        kernel, bias = self.head(x.shape[-1])
        if self.factors is not None:  # one product of the folded kernel (inference folds once: fold_factors)
            kernel = kernel + part_columns(self.head_factors(x.shape[-1]), self.factors)
        logits = matmul(x, kernel, self.dtype) + bias
        if self.condition_output:
            prior = self.head_genre(cond.genre) + (self.head_key(cond.key) if self.num_keys else 0.0)
            logits = logits + prior[:, None, :]
        if self.lookback:
            logits = logits + self._copy(x, *lookback)
        if self.recent_notes:
            logits = recent_logits(x, logits, recent_counts, self.recent(x.shape[-1]), self.recent_count,
                                   self.recent_groups, self.dtype)  # fmt: skip
        return carries, logits

    def _copy(self, x: jax.Array, notes: jax.Array, buckets: jax.Array) -> jax.Array:
        """float32[B, T, V]: the learned amount added to each step's lookback note (and with
        `copy_groups`, another to every id of its group; none where there is no match),
        broadcast by compares the add fuses with."""
        kernels = [self.copy(x.shape[-1])]
        tables = [self.copy_length]
        if self.copy_groups is not None:
            kernels.append(self.copy_group(x.shape[-1]))
            tables.append(self.copy_group_length)
        amounts = matmul(x, jnp.concatenate(kernels, axis=1), self.dtype)  # [B, T, 1 or 2]: one product
        amounts = amounts + jnp.concatenate([t(buckets) for t in tables], -1)
        amounts = jnp.where((buckets > 0)[..., None], amounts, 0.0)
        ids = jnp.arange(self.vocab_size)
        out = amounts[..., :1] * (ids == notes[..., None])
        if self.copy_groups is not None:
            group = jnp.asarray(self.copy_groups.rows[:, 0])
            out = out + amounts[..., 1:] * (group == jnp.take(group, notes, mode="clip")[..., None])
        return out

    def decode_step(self, carries: list[Carry], token: jax.Array, cond: Condition,
                    lookback: Lookback | None = None, recent_counts: jax.Array | None = None
                    ) -> tuple[list[Carry], jax.Array]:  # fmt: skip
        """One note (sampling): (new carries, logits float32[B, V]) of token int32[B] (and
        its lookback, int32[B] each; its recent counts, float32[B, G]), equal to the
        teacher-forced decoder's logits there."""
        step = None if lookback is None else (lookback[0][:, None], lookback[1][:, None])
        counts = None if recent_counts is None else recent_counts[:, None]
        carries, logits = self.decode(carries, token[:, None], cond, lookback=step, recent_counts=counts)
        return carries, logits[:, 0]

    def __call__(self, encoder_tokens: jax.Array, decoder_inputs: jax.Array, cond: Condition, *,
                 lookback: Lookback | None = None, train: bool = False) -> jax.Array:  # fmt: skip
        """Teacher-forced logits float32[B, Td, V] of int32[B, Te] and int32[B, Td] tokens
        (and, for a lookback model, the decoder steps' lookback)."""
        return self.carried(None, encoder_tokens, decoder_inputs, cond, lookback=lookback, train=train)[1]

    def carried(self, initial: list[Carry] | None, encoder_tokens: jax.Array, decoder_inputs: jax.Array,
                cond: Condition, *, lookback: Lookback | None = None,
                train: bool = False) -> tuple[tuple[Carry, ...], jax.Array]:  # fmt: skip
        """One of a piece's consecutive windows (truncated BPTT): the encoder starts from
        `initial`, its state after the windows before (None: zeros). Returns (the encoder's final
        states, the next window's `initial`, as tuples; logits float32[B, Td, V])."""
        carries = self.encode(encoder_tokens, cond, train=train, initial=initial)
        counts = (
            recent.counts(encoder_tokens, decoder_inputs, recent_spec(self), self.dtype)
            if self.recent_notes
            else None
        )
        logits = self.decode(carries, decoder_inputs, cond, lookback=lookback, recent_counts=counts,
                             train=train)[1]  # fmt: skip
        return tuple(tuple(layer) for layer in carries), logits

    def zero_carry(self, tokens: jax.Array) -> Carry:
        """Zero (c, h), float32[B, H], for tokens int32[B, T]: built from `tokens`, so that
        under shard_map it varies over devices as the batch does (scan needs equal types)."""
        zeros = jnp.zeros_like(tokens[:, :1], dtype=jnp.float32) * jnp.zeros((self.hidden,), jnp.float32)
        return zeros, zeros

    def _gate_rows(self, stack: str, cond: Condition) -> jax.Array:
        """float32[B, 4H]: the condition's rows of a stack's first-layer gates."""
        rows = getattr(self, f"{stack}_genre")(cond.genre)
        if self.num_keys:
            rows = rows + getattr(self, f"{stack}_key")(cond.key)
        if self.num_densities:
            rows = rows + getattr(self, f"{stack}_density")(cond.density)
        return rows

    def _stack(self, stack: str, carries, tokens, cond, dropout: nn.Dropout, train: bool, step_gates=None):
        """A stack over tokens int32[B, T]: (each layer's final (c, h), outputs float32[B, T, H])."""
        x = getattr(self, f"{stack}_embed")(tokens) if self.embed_dim else tokens
        layers, rows = getattr(self, f"{stack}_layers"), self._gate_rows(stack, cond)
        if self.factors is not None:
            parts = getattr(self, f"{stack}_factors")(jnp.asarray(self.factors.rows)[tokens]).sum(axis=-2)
            step_gates = parts if step_gates is None else step_gates + parts
        keep = ()
        if train and dropout.rate > 0:  # multipliers drawn alike in both forms: the same masks
            ones = jnp.ones((*tokens.shape[:2], self.hidden), jnp.float32)
            keep = tuple(dropout(ones, deterministic=False) for _ in layers[1:])
        if self.fused:
            return run_fused(layers, carries, x, rows, keep, dtype=self.dtype, order=self.stack_order,
                             step_gates=step_gates)  # fmt: skip
        return run_reference(
            self.cell, layers, carries, x, rows, keep, dtype=self.dtype, step_gates=step_gates
        )


def part_columns(kernel: jax.Array, factors: Factors) -> jax.Array:
    """float32[H, V]: each id's output column from its parts' columns (kernel float32[H, rows])."""
    return kernel[:, jnp.asarray(factors.rows)].sum(-1)


def recent_logits(x: jax.Array, logits: jax.Array, counts: jax.Array, kernel: jax.Array, by_count: Any,
                  groups: Factors, dtype: Any) -> jax.Array:  # fmt: skip
    """float32[B, T, V]: the logits float32[B, T, V] with the recent counts (`jaxmusic.recent`)
    of decoder outputs x float32[B, T, H] and counts float32[B, T, G]: each id gains a learned
    amount of its group's count, (x @ kernel float32[H, 1] plus the row of the count's
    bucket, `by_count`: a `_Table` of lookback.NUM_BUCKETS rows of 1) times log(1 + count),
    and each instrument's ids lose together what keeps the instrument's probability as it
    was (`groups`: int32[V, 2], `recent.groups`). Gathers read only the counts (no
    gradient) and the rest are products and compares: no scatter in the backward pass."""
    per_id = jnp.take(jnp.pad(counts, ((0, 0), (0, 0), (0, 1))), jnp.asarray(groups.rows[:, 0]), axis=-1)
    buckets = lookback.bucket(per_id.astype(jnp.int32), xp=jnp)
    rows = lstm.varying_like(
        per_id, by_count(jnp.arange(lookback.NUM_BUCKETS))
    )  # reduced once, as a parameter
    by_bucket = sum(jnp.where(buckets == k, rows[k, 0], 0.0) for k in range(1, lookback.NUM_BUCKETS))
    raised = logits + (matmul(x, kernel, dtype) + by_bucket) * jnp.log1p(per_id)  # nothing where none sounded
    # Each instrument's probability before and after (P, Q: float32[2, B, T, I]), and the
    # shift that keeps it, spread to its ids: products with the ids' instrument one-hot.
    instrument = groups.rows[:, 1]
    onehot = jnp.asarray(instrument[:, None] == np.arange(instrument.max() + 1), jnp.float32)  # [V, I]
    both = jnp.stack([logits, raised])
    norm = jax.nn.logsumexp(both, axis=-1, keepdims=True)  # each one's normalizer, once: [2, B, T, 1]
    mass = jnp.maximum(matmul(jnp.exp(both - norm), onehot, dtype), jnp.finfo(jnp.float32).tiny)
    shift = matmul(jnp.log(mass[1]) - jnp.log(mass[0]), onehot.T, dtype)
    return raised - shift - (norm[1] - norm[0])


def recent_spec(model: Seq2Seq) -> recent.Spec | None:
    """A model's recent counts (`jaxmusic.recent`), None without them."""
    return recent.Spec(model.recent_notes, model.recent_groups.rows[:, 0]) if model.recent_notes else None


def foldable(model: Seq2Seq) -> bool:
    """Whether a model is factored with id rows to fold its parts into (`fold_factors`)."""
    return model.factors is not None and not model.embed_dim


def plain_of(model: Seq2Seq) -> Seq2Seq:
    """The plain model whose logits equal a foldable factored model's (`fold_factors`)."""
    return model.clone(factors=None) if foldable(model) else model


def fold_factors(model: Seq2Seq, params: Any) -> Any:
    """`plain_of(model)`'s parameters: each id's part rows summed into its own input row
    and output column once, so that sampling reads one row an id, not six (the same
    logits; an embedding-first model, whose first layer reads no id rows, is left as is)."""
    if not foldable(model) or params is None:  # None: parameters a caller sets later
        return params
    rows, out = jnp.asarray(model.factors.rows), dict(params)
    for stack in ("encoder", "decoder"):
        table, layer = out.pop(f"{stack}_factors")["embedding"], dict(out[f"{stack}_layers_0"])
        layer["x"] = {"embedding": layer["x"]["embedding"] + table[rows].sum(1)}
        out[f"{stack}_layers_0"] = layer
    kernel = out.pop("head_factors")["kernel"]
    out["head"] = {**out["head"], "kernel": out["head"]["kernel"] + kernel[:, rows].sum(-1)}
    return out


def repeat_groups(factors: np.ndarray) -> np.ndarray:
    """int32[V, 1]: each id's pitch on its instrument and onset bin (parts 0 and 3 of
    `codec.factors` int32[V, 5]) as one group: the ids a repeat of a note may take when
    it varies the note's loudness and length. The specials share a group no note is in."""
    rows = np.asarray(factors, np.int64)
    return (rows[:, 0] * (rows[:, 3].max() + 1) + rows[:, 3]).astype(np.int32)[:, None]


def example_condition(model: Seq2Seq, batch_size: int = 1) -> Condition:
    """A zero condition of the model's fields (for init and shapes)."""
    zero = jnp.zeros((batch_size,), jnp.int32)
    return Condition(zero, zero if model.num_keys else None, zero if model.num_densities else None)


def from_config(config: ml_collections.ConfigDict, vocab_size: int, num_genres: int,
                factors: np.ndarray | None = None) -> Seq2Seq:  # fmt: skip
    """The model of a complete config (`run_config.complete`) for a codec of `vocab_size`
    ids and `num_genres` genres; `factors`: the codec's (`codec.factors`) for a
    `model.factored`, `model.copy_group` or `model.recent_notes` config (None:
    `Factors.synthetic`, for synthetic ids)."""
    m = config.model
    rows = Factors.synthetic(vocab_size).rows if factors is None else np.asarray(factors, np.int32)
    parts = Factors(rows) if m.factored else None
    groups = Factors(repeat_groups(rows)) if m.copy_group else None
    first_note_id = codec_lib.NUM_SPECIAL + num_genres
    return Seq2Seq(
        vocab_size=vocab_size,
        num_genres=num_genres,
        num_layers=m.num_layers,
        hidden=m.hidden,
        dropout=m.dropout,
        decoder_dropout=m.decoder_dropout,
        embed_dim=m.embed_dim,
        dtype=DTYPES[m.dtype],
        num_keys=conditioning.NUM_KEYS if m.key_input else 0,
        num_densities=conditioning.NUM_DENSITIES if m.density_input else 0,
        stack_order=m.stack_order,
        condition_output=m.condition_output,
        lookback=m.lookback,
        factors=parts,
        copy_groups=groups,
        recent_notes=m.recent_notes,
        recent_groups=Factors(recent.groups(rows, first_note_id)) if m.recent_notes else None,
    )
