"""The seed's LSTM encoder-decoder, in Flax linen.

Encoder: `num_layers` LSTM layers with dropout between them. Decoder: `num_layers`
LSTM layers, layer k started from the encoder's final (c, h) of layer k, then a
dense layer to the vocabulary (the softmax is in the loss). The seed's model is
`num_layers=2, hidden=1024` (configs/paper.py); `from_config` builds a config's.

Each layer runs one of two forms, the same function with the same parameters:
- fused (the default): the input projection `x @ W_x` as one product over all time
  steps, hoisted out of the loop, then `lstm.recurrence`, whose backward pass is
  hand-written; the one-hot input's projection is a row gather of W_x;
- plain: `nn.scan` of a cell, differentiated by autodiff (the reference the tests
  hold the fused form to).

Genre conditioning: the genre is one more one-hot input of the first layer of the
encoder and of the decoder, so its projection is a learned row added to the gates
at every step. A key input (`num_keys` > 0, `jaxmusic.key_input`) is one more, the
same way. With `condition_output`, the genre and the key also add a learned row to
the logits (a prior over the vocabulary for each genre and key, in reach of every
note however far the recurrent state has moved).

Mixed precision follows the policy in `jaxmusic.lstm`: float32 parameters, state,
gates, logits and gradients; `dtype` only as the input of products.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn
from flax.linen.linear import default_embed_init

from jaxmusic import key_input, lstm
from jaxmusic.cli import UsageError
from jaxmusic.lstm import matmul

Carry = tuple[jax.Array, jax.Array]  # (c, h), each float32[B, H]

# From this hidden size on, the fused recurrence runs in its column layout on a CPU
# (faster there on XLA:CPU, slower below; docs/performance.md).
# Only on the CPU: on a TPU or GPU a [4H, B] layout puts the small per-device batch on
# the minor (lane) axis. Chosen when the program is lowered, for the platform it is
# lowered for (`lax.platform_dependent`).
COLUMN_LAYOUT_FROM_HIDDEN = 1024


class _Recurrence(nn.Module):
    """One LSTM step given the precomputed input gates; scanned over time."""

    hidden: int
    dtype: Any

    @nn.compact
    def __call__(self, carry: Carry, gates_x: jax.Array) -> tuple[Carry, jax.Array]:
        c, h = carry
        gates = gates_x + matmul(h, _Kernel(4 * self.hidden, name="h")(self.hidden), self.dtype)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
        h = nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h


class _Kernel(nn.Module):
    """Holds a Dense-shaped kernel at <name>/kernel (so both recurrences share paths)."""

    features: int

    @nn.compact
    def __call__(self, in_features: int) -> jax.Array:
        return self.param("kernel", nn.initializers.lecun_normal(), (in_features, self.features))


class _Affine(nn.Module):
    """nn.Dense's parameters (<name>/kernel, <name>/bias) without applying them, so the
    fused layer can add the bias inside the recurrence; the same tree as nn.Dense."""

    features: int

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (in_features, self.features))
        return kernel, self.param("bias", nn.initializers.zeros, (self.features,))


class _Table(nn.Module):
    """nn.Embed's parameter (<name>/embedding, same initializer) looked up with
    clipped indices: nn.Embed's default out-of-range fill costs a select over the
    whole [T, B, 4H] output (docs/performance.md)."""

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
    """An LSTM layer over a whole sequence.

    Attributes:
      hidden: units H.
      vocab_size: when set, the input is int ids (a one-hot input, gathered).
      dtype: the input type of matrix products (the policy in `jaxmusic.lstm`).
      fused: the recurrence as `lstm.recurrence` (a custom backward pass) rather
        than nn.scan of `_Recurrence`; the same function and parameters.
      column: the fused recurrence in its [4H, B] layout (see `lstm.recurrence`).

    Parameters (the same tree in every form): x/embedding and bias (ids), or
    x/kernel and x/bias (vectors); recurrence/h/kernel.
    """

    hidden: int
    vocab_size: int | None = None
    dtype: Any = jnp.float32
    fused: bool = True
    column: bool = False

    def setup(self):
        h4 = 4 * self.hidden
        if self.vocab_size is not None:
            self.x = _Table(self.vocab_size, h4)
            self.bias = self.param("bias", nn.initializers.zeros, (h4,))
        else:
            self.x = _Affine(h4)
        if self.fused:
            self.recurrence = _RecurrentWeights(self.hidden)
        else:
            scan = nn.scan(_Recurrence, variable_broadcast="params", split_rngs={"params": False},
                           in_axes=1, out_axes=1)  # fmt: skip
            self.recurrence = scan(self.hidden, self.dtype)

    def __call__(
        self, carry: Carry, x: jax.Array, genre_gates: jax.Array | None = None
    ) -> tuple[Carry, jax.Array]:
        """Runs the layer.

        Args:
          carry: (c, h), each float32[B, H].
          x: int32[B, T] ids (vocab_size set) or float[B, T, D].
          genre_gates: float32[B, 4H] added at every step (the genre's row), or None.

        Returns:
          ((c, h) after the last step, outputs float32[B, T, H]).
        """
        carry = jax.tree.map(lambda a: a.astype(jnp.float32), carry)
        if self.fused:
            return self._fused(carry, x, genre_gates)
        gates_x, bias = self.projection(x)
        gates_x = gates_x + bias
        if genre_gates is not None:
            gates_x = gates_x + genre_gates[:, None, :]
        return self.recurrence(carry, gates_x)

    def projection(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The input's share of the gates, without the bias.

        Args:
          x: int32[..., ] ids (vocab_size set) or float[..., D].

        Returns:
          (float32[..., 4H], the bias float32[4H]).
        """
        if self.vocab_size is not None:
            return self.x(x), self.bias
        kernel, bias = self.x(x.shape[-1])
        return matmul(x, kernel, self.dtype), bias

    def input_weights(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        """(W_x float32[D, 4H], b float32[4H]) of a layer that reads vectors."""
        return self.x(in_features)

    def recurrent_weights(self) -> jax.Array:
        """W_h float32[H, 4H] (the fused form's)."""
        return self.recurrence()

    def _fused(self, carry: Carry, x: jax.Array, genre_gates: jax.Array | None) -> tuple[Carry, jax.Array]:
        """The same layer through `lstm.stack` (a stack of one), time-major inside."""
        gates_x, bias = self.projection(jnp.swapaxes(x, 0, 1))
        carries, hs = _run_stack([self], [carry], gates_x, bias, genre_gates, (), order="layers",
                                dtype=self.dtype, column=self.column)  # fmt: skip
        return carries[0], jnp.swapaxes(hs, 0, 1)


def _run_stack(
    layers: list[LSTMLayer],
    carries: list[Carry],
    gates_x: jax.Array,
    bias: jax.Array,
    genre_gates: jax.Array | None,
    keep: tuple[jax.Array, ...],
    *,
    order: str,
    dtype: Any,
    column: bool,
) -> tuple[list[Carry], jax.Array]:
    """Runs fused layers with `lstm.stack`.

    Args:
      gates_x: float32[T, B, 4H] the first layer's input projection, without bias.
      bias: float32[4H] the first layer's bias.
      keep: () or float32[T, B, H] multipliers of each upper layer's input (dropout).

    Returns:
      (each layer's final (c, h) as a list, the last layer's outputs float32[T, B, H]).
    """
    hidden = layers[0].hidden
    w_h = [layer.recurrent_weights() for layer in layers]
    upper = [layer.input_weights(hidden) for layer in layers[1:]]
    # Under shard_map the inputs vary over devices and the parameters do not, but a
    # custom backward must return a gradient typed like its input: the weights and
    # biases are cast to vary as the inputs do (autodiff then sums their gradients
    # over devices, as for every other replicated parameter). A type cast, no copy; the
    # bias before it is broadcast over the batch, so that its [4H] gradient is what
    # crosses devices, not a [B, 4H] one.
    vary = partial(lstm.varying_like, gates_x)
    w_h, bias = [vary(w) for w in w_h], vary(bias)
    w_x, b_x = [vary(w) for w, _ in upper], [vary(b) for _, b in upper]
    gate_bias = jnp.broadcast_to(bias, (gates_x.shape[1], 4 * hidden))
    if genre_gates is not None:
        gate_bias = gate_bias + genre_gates
    carries = [jax.tree.map(lambda a: a.astype(jnp.float32), carry) for carry in carries]
    c0, h0 = (tuple(carry[j] for carry in carries) for j in range(2))
    hs, c, h = lstm.stack(gates_x, w_h, w_x, b_x, c0, h0, gate_bias, keep, dtype=dtype, order=order,
                          column=column)  # fmt: skip
    return list(zip(c, h, strict=True)), hs


class Seq2Seq(nn.Module):
    """The LSTM encoder-decoder.

    Attributes:
      vocab_size: ids of the codec (specials, genres, pseudo-notes).
      num_genres: genres the model can be asked for (`genre` inputs index them).
      num_layers: LSTM layers in the encoder and in the decoder.
      hidden: units per layer.
      dropout: rate between encoder layers (the seed) when training.
      decoder_dropout: rate between decoder layers (0 in the seed).
      fused: the fast recurrence with a hand-written backward (`lstm.recurrence`);
        False: nn.scan of a cell (the plain form; same function and parameters).
      embed_dim: 0 (the seed): the one-hot input goes straight into the first
        layer's gates (a [V, 4H] gather); > 0: an embedding of this size first, then
        the usual input projection (the Embedding + LSTM of most frameworks).
      dtype: the input type of matrix products (the policy in `jaxmusic.lstm`).
      num_keys: 0 (the seed): no key input; > 0: `key` inputs (int32[B], indices
        below num_keys) add a learned row to the first layers' gates, like the genre.
      stack_order: with `fused`, how a stack's layers are scheduled (`lstm.stack`):
        "wavefront" (all layers advance together in one scan, layer k at time t - k:
        T + L - 1 sequential steps instead of L x T), "layers" (one after another), or
        "auto" (per platform, from measurements). The same function and parameters.
      condition_output: the genre (and the key, with num_keys) also add a learned
        row to the logits (head_genre/embedding [G, V], head_key/embedding [K, V],
        zeros at the start).
      num_densities: 0: no density input; > 0 (with num_keys): each `key` index is
        key + num_keys x density bin (`key_input.density_weights`), and the density's
        learned row is added to the first layers' gates as well.
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
    stack_order: str = "auto"
    condition_output: bool = False
    num_densities: int = 0

    def setup(self):
        h4 = 4 * self.hidden
        self.encoder_genre = nn.Embed(max(self.num_genres, 1), h4, dtype=jnp.float32)
        self.decoder_genre = nn.Embed(max(self.num_genres, 1), h4, dtype=jnp.float32)
        if self.num_keys:
            self.encoder_key = nn.Embed(self.num_keys, h4, dtype=jnp.float32)
            self.decoder_key = nn.Embed(self.num_keys, h4, dtype=jnp.float32)
        if self.num_densities:
            # Zeros at the start: the model starts as the key-only one (rows drawn like
            # the key's left the main job 0.018 nat worse than these: 3.187 against 3.169).
            zeros = nn.initializers.zeros
            self.encoder_density = nn.Embed(self.num_densities, h4, dtype=jnp.float32, embedding_init=zeros)
            self.decoder_density = nn.Embed(self.num_densities, h4, dtype=jnp.float32, embedding_init=zeros)
        one_hot_vocab = self.vocab_size if not self.embed_dim else None
        self.encoder_layers = self._layers(one_hot_vocab)
        self.decoder_layers = self._layers(one_hot_vocab)
        if self.embed_dim:
            self.encoder_embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)
            self.decoder_embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)
        self.encoder_dropout = nn.Dropout(self.dropout)
        self.decoder_dropout_layer = nn.Dropout(self.decoder_dropout)
        self.head = _Affine(self.vocab_size)  # nn.Dense's parameters; applied by `matmul`
        if self.condition_output:
            self.head_genre = _Table(max(self.num_genres, 1), self.vocab_size, nn.initializers.zeros)
            if self.num_keys:
                self.head_key = _Table(self.num_keys, self.vocab_size, nn.initializers.zeros)

    def encode(
        self,
        tokens: jax.Array,
        genre: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
        initial: list[Carry] | None = None,
    ) -> list[Carry]:
        """Reads the encoder tokens.

        Args:
          tokens: int32[B, Te].
          genre: int32[B] genre indices (into codec.genres).
          key: int32[B] key indices (`jaxmusic.key_input`); needed when num_keys > 0.
          train: apply dropout (needs a 'dropout' rng).
          initial: each layer's (c, h) to start from, float32[B, H] each (the state
            after the notes before `tokens`, for carried windows); None: zeros.

        Returns:
          The final (c, h) of each layer, each float32[B, H].
        """
        x: jax.Array = self.encoder_embed(tokens) if self.embed_dim else tokens
        if initial is None:
            initial = [self.zero_carry(tokens)] * self.num_layers
        gates = self._conditioning("encoder", genre, key)
        carries, _ = self._stack(self.encoder_layers, list(initial), x, gates, self.encoder_dropout,
                                 train=train)  # fmt: skip
        return carries

    def decode(
        self,
        carries: list[Carry],
        tokens: jax.Array,
        genre: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[list[Carry], jax.Array]:
        """Runs the decoder from the given states.

        Args:
          carries: each layer's (c, h) to start from.
          tokens: int32[B, T] decoder inputs.
          genre: int32[B] genre indices.
          key: int32[B] key indices; needed when num_keys > 0.
          train: apply dropout.

        Returns:
          (each layer's final (c, h), logits float32[B, T, vocab_size]).
        """
        x: jax.Array = self.decoder_embed(tokens) if self.embed_dim else tokens
        gates = self._conditioning("decoder", genre, key)
        carries, x = self._stack(self.decoder_layers, carries, x, gates, self.decoder_dropout_layer,
                                 train=train)  # fmt: skip
        kernel, bias = self.head(x.shape[-1])
        logits = matmul(x, kernel, self.dtype) + bias
        if self.condition_output:
            prior = self.head_genre(genre)
            if self.num_keys:
                prior = prior + self.head_key(key % self.num_keys)
            logits = logits + prior[:, None, :]
        return carries, logits

    def _conditioning(self, stack: str, genre: jax.Array, key: jax.Array | None) -> jax.Array:
        """float32[B, 4H]: the genre's row of a stack's first-layer gates, plus the key's."""
        gates = getattr(self, f"{stack}_genre")(genre)
        if not self.num_keys:
            return gates
        if key is None:
            raise ValueError("this model has a key input (num_keys > 0): pass key=")
        if not self.num_densities:
            return gates + getattr(self, f"{stack}_key")(key)
        # The index holds the key and the density bin (`key_input`: key + num_keys x bin).
        gates = gates + getattr(self, f"{stack}_key")(key % self.num_keys)
        return gates + getattr(self, f"{stack}_density")(key // self.num_keys)

    def _layers(self, one_hot_vocab: int | None) -> list[LSTMLayer]:
        """A stack's layers; the first reads ids (a one-hot input) unless an embedding does."""
        return [
            LSTMLayer(
                hidden=self.hidden,
                vocab_size=one_hot_vocab if k == 0 else None,
                dtype=self.dtype,
                fused=self.fused,
                column=self.hidden >= COLUMN_LAYOUT_FROM_HIDDEN,
            )
            for k in range(self.num_layers)
        ]

    def _stack(
        self,
        layers: list[LSTMLayer],
        carries: list[Carry],
        x: jax.Array,
        genre_gates: jax.Array,
        dropout: nn.Dropout,
        *,
        train: bool,
    ) -> tuple[list[Carry], jax.Array]:
        """Runs a stack of layers, dropout between them, the genre's gates into the first.

        Returns:
          (each layer's final (c, h), the last layer's outputs float32[B, T, H]).
        """
        if self.fused:
            batch, steps = x.shape[:2]
            gates_x, bias = layers[0].projection(jnp.swapaxes(x, 0, 1))
            # The dropout between layers as multipliers drawn by the same module with the
            # same shapes, in the same order, as the layer-by-layer form: the same masks.
            keep = ()
            if train and dropout.rate > 0:
                ones = jnp.ones((batch, steps, self.hidden), jnp.float32)
                keep = tuple(jnp.swapaxes(dropout(ones, deterministic=False), 0, 1) for _ in layers[1:])
            order, column = self.stack_order, layers[0].column
            carries, hs = _run_stack(layers, carries, gates_x, bias, genre_gates, keep, order=order,
                                     dtype=self.dtype, column=column)  # fmt: skip
            return carries, jnp.swapaxes(hs, 0, 1)
        out = []
        for k, (layer, carry) in enumerate(zip(layers, carries, strict=True)):
            if k > 0:
                x = dropout(x, deterministic=not train)
            carry, x = layer(carry, x, genre_gates if k == 0 else None)
            out.append(carry)
        return out, x

    def decode_step(
        self, carries: list[Carry], token: jax.Array, genre: jax.Array, *, key: jax.Array | None = None
    ) -> tuple[list[Carry], jax.Array]:
        """Advances the decoder by one note (sampling).

        Args:
          carries: each layer's (c, h).
          token: int32[B] the previous note.
          genre: int32[B] genre indices.
          key: int32[B] key indices; needed when num_keys > 0.

        Returns:
          (the new carries, logits float32[B, vocab_size]), equal to the
          teacher-forced decoder's logits at that step.
        """
        carries, logits = self.decode(carries, token[:, None], genre, key=key)
        return carries, logits[:, 0]

    def __call__(
        self,
        encoder_tokens: jax.Array,
        decoder_inputs: jax.Array,
        genre: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array:
        """Teacher-forced logits.

        Args:
          encoder_tokens: int32[B, Te].
          decoder_inputs: int32[B, Td].
          genre: int32[B] genre indices.
          key: int32[B] key indices; needed when num_keys > 0.
          train: apply dropout.

        Returns:
          float32[B, Td, vocab_size] logits.
        """
        carries = self.encode(encoder_tokens, genre, key=key, train=train)
        return self.decode(carries, decoder_inputs, genre, key=key, train=train)[1]

    def carried(
        self,
        initial: list[Carry],
        encoder_tokens: jax.Array,
        decoder_inputs: jax.Array,
        genre: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[tuple[Carry, ...], jax.Array]:
        """Teacher-forced logits of one of a piece's consecutive windows (truncated BPTT).

        The encoder starts from `initial`, its state after the piece's notes before
        `encoder_tokens`, so the decoder's start holds the whole piece so far.

        Returns:
          (the encoder's final (c, h) of each layer, the next window's `initial`;
          logits float32[B, Td, vocab_size]).
        """
        carries = self.encode(encoder_tokens, genre, key=key, train=train, initial=initial)
        logits = self.decode(carries, decoder_inputs, genre, key=key, train=train)[1]
        # Tuples, as `steps.zero_carry` makes them: the carry's structure stays one
        # pytree from step to step.
        return tuple(tuple(layer) for layer in carries), logits

    def zero_carry(self, tokens: jax.Array) -> Carry:
        """Zero (c, h), float32[B, H], for a batch of tokens int32[B, T].

        Built from `tokens` rather than from a shape so that under shard_map it
        varies over devices as the batch does (scan needs equal carry types).
        """
        zeros = jnp.zeros_like(tokens[:, :1], dtype=jnp.float32) * jnp.zeros((self.hidden,), jnp.float32)
        return zeros, zeros


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def from_config(config: ml_collections.ConfigDict, vocab_size: int, num_genres: int) -> Seq2Seq:
    """The config's model (`config.model`) for a codec of `vocab_size` ids and `num_genres` genres.

    Raises:
      UsageError: config.model.dtype is not a name in DTYPES.
    """
    m = config.model
    if m.dtype not in DTYPES:
        raise UsageError(f"config.model.dtype {m.dtype!r} is not one of {', '.join(DTYPES)}")
    if m.get("key_context", "window") not in key_input.CONTEXTS:
        raise UsageError(
            f"config.model.key_context {m.key_context!r} is not one of {', '.join(key_input.CONTEXTS)}"
        )
    if m.get("density_input", False) and not m.get("key_input", False):
        raise UsageError(
            "config.model.density_input needs config.model.key_input (the density rides on the key's index)"
        )
    if m.get("stack_order", "auto") not in lstm.ORDERS:
        raise UsageError(f"config.model.stack_order {m.stack_order!r} is not one of {', '.join(lstm.ORDERS)}")
    return Seq2Seq(
        vocab_size=vocab_size,
        num_genres=num_genres,
        num_layers=m.num_layers,
        hidden=m.hidden,
        dropout=m.dropout,
        decoder_dropout=m.decoder_dropout,
        embed_dim=m.get("embed_dim", 0),
        dtype=DTYPES[m.dtype],
        num_keys=key_input.NUM_KEYS if m.get("key_input", False) else 0,
        stack_order=m.get("stack_order", "auto"),
        condition_output=m.get("condition_output", False),
        num_densities=key_input.NUM_DENSITIES if m.get("density_input", False) else 0,
    )
