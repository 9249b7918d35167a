"""The seed's LSTM encoder-decoder, in Flax linen, scanned over time with nn.scan.

Encoder: `num_layers` LSTM layers with dropout between them. Decoder: `num_layers`
LSTM layers, layer k started from the encoder's final (c, h) of layer k, then a
dense layer to the vocabulary (the softmax is in the loss). The seed's model is
`num_layers=2, hidden=1024` (configs/paper.py).

What makes it fast, without changing the mathematics:
- Each layer's input projection `x @ W_x` is one large matrix product over
  all time steps, hoisted out of the scan; the scan only does `h @ W_h`.
- The input is one-hot, so the first layer's projection is a row gather of W_x
  (`nn.Embed` holds W_x), never a product with a one-hot matrix.
- The recurrence (`lstm_recurrence`) has a hand-written backward: one product per
  step, the recurrent weight gradient as one product over all steps, the gradient
  of the per-step bias and genre rows added up in the reverse scan's carry, and all
  four gate activations as one tanh.

Genre conditioning: the genre is one more one-hot input of the first layer of the
encoder and of the decoder, so its projection is a learned row added to the gates
at every step.

Mixed precision, one policy for every form of the model (the fused recurrence and
its backward, the nn.scan reference, the head, evaluation and sampling), as cuDNN's
LSTM, PyTorch autocast and the Flax/T5X convention keep it:
- parameters are float32, and so is every gradient until the optimizer;
- a matrix product takes `dtype` inputs (bfloat16 on TPUs and GPUs) and accumulates
  and returns float32 (`preferred_element_type`);
- gate pre-activations, the gate nonlinearities, the cell state c and the hidden
  state h are float32; h is cast to `dtype` only as the input of a product;
- row gathers (the one-hot input, the genre rows) read the float32 table exactly;
- logits come out of the head's product in float32, and the log-softmax and loss
  stay float32.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen.linear import default_embed_init
from jax import lax

Carry = tuple[jax.Array, jax.Array]  # (c, h), each float32[B, H]

# From this hidden size on, the fused recurrence runs in its column layout on a CPU
# (XLA:CPU measured it faster at 1024, slower at 256 and 512; README, performance).
# Only on the CPU: on a TPU or GPU a [4H, B] layout puts the small per-device batch on
# the minor (lane) axis. Chosen when the program is lowered, for the platform it is
# lowered for (`lax.platform_dependent`).
COLUMN_LAYOUT_FROM_HIDDEN = 1024


def matmul(a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
    """a @ b with `dtype` inputs, accumulated and returned in float32 (the policy above).

    Args:
      a: float[..., K] (float32 activations, or an embedding in `dtype`).
      b: float32[K, N] a parameter.

    Returns:
      float32[..., N]. Its gradients are float32 too, from products whose inputs are
      again `dtype` (the cotangent is cast, as autocast and cuDNN do): a bfloat16
      program never falls back to a float32 product in its backward pass.
    """
    # Under shard_map, b (a replicated parameter) is cast to vary like a, so that its
    # gradient is typed as it is computed (per device); autodiff then sums it.
    # a enters as float32 (exact for a bfloat16 a; the two casts fold), so that both
    # gradients of `_matmul` are float32.
    return _matmul(a.astype(jnp.float32), _varying_like(a, b).astype(jnp.float32), dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _matmul_fwd(a, b, dtype):
    a, b = a.astype(dtype), b.astype(dtype)
    return jnp.matmul(a, b, preferred_element_type=jnp.float32), (a, b)


def _matmul_bwd(dtype, res, g):
    a, b = res
    g = g.astype(dtype)
    da = jnp.matmul(g, b.T, preferred_element_type=jnp.float32)
    db = jnp.tensordot(a, g, axes=(tuple(range(a.ndim - 1)), tuple(range(g.ndim - 1))),
                       preferred_element_type=jnp.float32)  # fmt: skip
    return da, db


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


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


def _cell(gates: jax.Array, c: jax.Array, axis: int = -1) -> tuple[jax.Array, ...]:
    """LSTM gate activations and new state from pre-activations.

    Args:
      gates: float[B, 4H] (axis -1) or float[4H, B] (axis 0), gates i, f, g, o.
      c: the cell state, float[B, H] or float[H, B].

    The three sigmoids and the tanh are one tanh over all gates, sigmoid(x) =
    (1 + tanh(x / 2)) / 2: XLA:CPU runs that as one vectorized pass, 5 times faster
    per step than four separate activations at [32, 1024] (the same function to
    float rounding; the tests compare it with the plain cell).
    """
    hidden = gates.shape[axis] // 4
    half = jnp.asarray(0.5, gates.dtype)
    scale = jnp.concatenate([jnp.full((2 * hidden,), half), jnp.ones((hidden,), gates.dtype),
                             jnp.full((hidden,), half)])  # fmt: skip
    i, f, g, o = jnp.split(jnp.tanh(gates * (scale[:, None] if axis == 0 else scale)), 4, axis=axis)
    i, f, o = half * i + half, half * f + half, half * o + half
    c = f * c + i * g
    tc = jnp.tanh(c)
    return i, f, g, o, c, tc, o * tc


# The recurrence in one of two layouts. Row: per-step gates [B, 4H], states [B, H],
# w = W_h [H, 4H], the product h @ W_h. Column: gates [4H, B], states [H, B],
# w = W_h^T [4H, H], the product W_h^T @ h. XLA:CPU runs the column product alone at
# hidden 1024 (batch 32) about 35% faster, a whole layer's forward and backward a few
# percent faster; at hidden 256 and 512 the row layout is faster overall.


def _varying_axes(x: jax.Array) -> frozenset:
    """The shard_map mesh axes over which x varies (empty outside shard_map)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "mat", None)
    return frozenset(getattr(aval, "vma", None) or (mat.varying if mat is not None else ()))


def _varying_like(like: jax.Array, x: jax.Array) -> jax.Array:
    """x typed to vary over every shard_map axis `like` varies over (`lax.pcast`)."""
    axes = tuple(sorted(_varying_axes(like) - _varying_axes(x)))
    return lax.pcast(x, axes, to="varying") if axes else x


def _forward(gates_x, w, c0, h0, extra, col: bool):
    """w is already in the compute dtype; everything else is float32."""
    axis = 0 if col else -1

    def step(carry, gx):
        c, h = carry
        i, f, g, o, c, tc, h = _cell(
            gx + extra + (matmul(w, h, w.dtype) if col else matmul(h, w, w.dtype)), c, axis
        )
        return (c, h), (h, c, tc, jnp.concatenate([i, f, g, o], axis))

    (c, h), (hs, cs, tcs, acts) = lax.scan(step, (c0, h0), gates_x)
    return (hs, c, h), (hs, cs, tcs, acts)


def _backward(w, c0, h0, extra, res, d_hs, d_c, d_h, col: bool):
    """Gradients of (gates_x, w, c0, h0, extra) in the layout of `_forward`, all float32;
    w (the compute dtype) enters products only."""
    hs, cs, tcs, acts = res
    axis = 0 if col else -1
    c_prev = jnp.concatenate([c0[None], cs[:-1]], 0)
    w_t = w.T  # transposed once, outside the loop (5% faster per step than inside it)

    def step(carry, xs):
        dh_next, dc_next, d_extra = carry
        dh_out, act, cp, tc = xs
        i, f, g, o = jnp.split(act, 4, axis=axis)
        dh = dh_out + dh_next
        dc = dc_next + dh * o * (1 - tc * tc)
        dgates = jnp.concatenate(
            [dc * g * i * (1 - i), dc * cp * f * (1 - f), dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis
        )
        back = matmul(w_t, dgates, w.dtype) if col else matmul(dgates, w_t, w.dtype)
        return (back, dc * f, d_extra + dgates), dgates

    zero = _varying_like(extra, jnp.zeros(extra.shape, jnp.float32))  # a carry typed as `extra`
    (dh0, dc0, d_extra), dgates = lax.scan(step, (d_h, d_c, zero), (d_hs, acts, c_prev, tcs), reverse=True)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], 0).astype(w.dtype)
    # The weight gradient as one product over every step, accumulated in float32.
    spec = "thb,tgb->gh" if col else "tbh,tbg->hg"
    dw = jnp.einsum(spec, h_prev, dgates.astype(w.dtype), preferred_element_type=jnp.float32)
    return dgates, dw, dc0, dh0, d_extra


def _col(x: jax.Array) -> jax.Array:
    """[..., B, F] -> [..., F, B]."""
    return jnp.swapaxes(x, -1, -2)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def lstm_recurrence(
    gates_x: jax.Array,
    w_h: jax.Array,
    c0: jax.Array,
    h0: jax.Array,
    extra: jax.Array,
    column: bool = False,
    dtype: Any = jnp.float32,
):
    """The LSTM recurrence over precomputed input gates, with a hand-written backward.

    Args:
      gates_x: float32[T, B, 4H] input projections (time-major), gates i, f, g, o.
      w_h: float32[H, 4H] recurrent weights.
      c0, h0: float32[B, H] initial state.
      extra: float32[B, 4H] added to the gates at every step (the bias, and the
        genre's row in a first layer).
      column: run the steps in the [4H, B] layout (faster on a CPU at large H);
        the same function.
      dtype: the input type of the recurrent products (h @ W_h and, backward,
        dgates @ W_h^T and the dW_h product); they accumulate in float32, and the
        state, gates and every gradient stay float32 (the module's policy).

    Returns:
      (hs float32[T, B, H], c_T float32[B, H], h_T float32[B, H]).

    The backward pass runs the recurrence in reverse with one product per step
    (dgates @ W_h^T), adds up the gradient of `extra` in its carry, and computes
    dW_h after it as one large product over every step, instead of the small
    per-step products that autodiff of a scan makes and the [T, B, 4H] reductions
    over time that broadcasting `extra` would (XLA:CPU ran each of those at a few
    GB/s: 130 ms of a 2.6 s step at hidden 1024).
    """
    return _recurrence_fwd(gates_x, w_h, c0, h0, extra, column, dtype)[0]


def _recurrence_fwd(gates_x, w_h, c0, h0, extra, column, dtype):
    w = w_h.astype(dtype)  # once, outside the loop
    if not column:
        out, res = _forward(gates_x, w, c0, h0, extra, False)
        return out, (w, c0, h0, extra, res)
    (hs, c, h), res = _forward(_col(gates_x), w.T, c0.T, h0.T, extra.T, True)
    return (_col(hs), c.T, h.T), (w.T, c0.T, h0.T, extra.T, res)


def _recurrence_bwd(column, dtype, res, cotangents):
    w, c0, h0, extra, saved = res
    d_hs, d_c, d_h = cotangents
    if not column:
        return _backward(w, c0, h0, extra, saved, d_hs, d_c, d_h, False)
    dg, dw, dc0, dh0, de = _backward(w, c0, h0, extra, saved, _col(d_hs), d_c.T, d_h.T, True)
    return _col(dg), dw.T, dc0.T, dh0.T, de.T


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


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
    whole [T, B, 4H] output (5 ms a step at hidden 256 on a CPU)."""

    num_embeddings: int
    features: int

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        table = self.param("embedding", default_embed_init, (self.num_embeddings, self.features))
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
      dtype: the input type of matrix products (the policy in the module docstring).
      fused: the recurrence as `lstm_recurrence` (a custom backward pass) rather
        than nn.scan of `_Recurrence`; the same function and parameters.
      column: the fused recurrence in its [4H, B] layout (see `lstm_recurrence`).
    """

    hidden: int
    vocab_size: int | None = None
    dtype: Any = jnp.float32
    fused: bool = True
    column: bool = False

    @nn.compact
    def __call__(
        self, carry: Carry, x: jax.Array, extra_gates: jax.Array | None = None
    ) -> tuple[Carry, jax.Array]:
        """Runs the layer.

        Args:
          carry: (c, h), each float32[B, H].
          x: int32[B, T] ids (vocab_size set) or float[B, T, D].
          extra_gates: float32[B, 4H] added at every step (the genre's row), or None.

        Returns:
          ((c, h) after the last step, outputs float32[B, T, H]).
        """
        carry = jax.tree.map(lambda a: a.astype(jnp.float32), carry)
        if self.fused:
            return self._fused(carry, x, extra_gates)
        if self.vocab_size is not None:
            gates_x = nn.Embed(self.vocab_size, 4 * self.hidden, dtype=jnp.float32, name="x")(x)
            gates_x = gates_x + self.param("bias", nn.initializers.zeros, (4 * self.hidden,))
        else:
            kernel, bias = _Affine(4 * self.hidden, name="x")(x.shape[-1])
            gates_x = matmul(x, kernel, self.dtype) + bias
        if extra_gates is not None:
            gates_x = gates_x + extra_gates[:, None, :]
        scan = nn.scan(
            _Recurrence,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
        )
        return scan(self.hidden, self.dtype, name="recurrence")(carry, gates_x)

    def _fused(self, carry: Carry, x: jax.Array, extra_gates: jax.Array | None) -> tuple[Carry, jax.Array]:
        """The same layer through `lstm_recurrence`, time-major inside; the same parameters."""
        x = jnp.swapaxes(x, 0, 1)
        if self.vocab_size is not None:
            gates_x = _Table(self.vocab_size, 4 * self.hidden, name="x")(x)
            bias = self.param("bias", nn.initializers.zeros, (4 * self.hidden,))
        else:
            kernel, bias = _Affine(4 * self.hidden, name="x")(x.shape[-1])
            gates_x = matmul(x, kernel, self.dtype)
        w_h = _RecurrentWeights(self.hidden, name="recurrence")()
        # Under shard_map the inputs vary over devices and the parameters do not, but a
        # custom backward must return a gradient typed like its input: W_h and the bias
        # are cast to vary as the inputs do (autodiff then sums their gradients over
        # devices, as for every other replicated parameter). A type cast, no copy; the
        # bias before it is broadcast over the batch, so that its [4H] gradient is
        # what crosses devices, not a [B, 4H] one.
        w_h, bias = _varying_like(gates_x, w_h), _varying_like(gates_x, bias)
        extra = jnp.broadcast_to(bias, (gates_x.shape[1], 4 * self.hidden))
        if extra_gates is not None:
            extra = extra + extra_gates
        args = (gates_x, w_h, *carry, extra)
        # One step at a time (sampling) stays in the row layout: the column layout
        # transposes W_h once per call, which a whole sequence repays and a step does not.
        if self.column and gates_x.shape[0] > 1:
            hs, c, h = lax.platform_dependent(
                *args,
                cpu=partial(lstm_recurrence, column=True, dtype=self.dtype),
                default=partial(lstm_recurrence, column=False, dtype=self.dtype),
            )
        else:
            hs, c, h = lstm_recurrence(*args, False, self.dtype)
        return (c, h), jnp.swapaxes(hs, 0, 1)


class Seq2Seq(nn.Module):
    """The LSTM encoder-decoder.

    Attributes:
      vocab_size: ids of the codec (specials, genres, pseudo-notes).
      num_genres: genres the model can be asked for (`genre` inputs index them).
      num_layers: LSTM layers in the encoder and in the decoder.
      hidden: units per layer.
      dropout: rate between encoder layers (the seed) when training.
      decoder_dropout: rate between decoder layers (0 in the seed).
      fused: the fast recurrence with a hand-written backward (`lstm_recurrence`);
        False: nn.scan of a cell (the plain form; same function and parameters).
      embed_dim: 0 (the seed): the one-hot input goes straight into the first
        layer's gates (a [V, 4H] gather); > 0: an embedding of this size first, then
        the usual input projection (the Embedding + LSTM of most frameworks).
      dtype: the input type of matrix products (the policy in the module docstring).
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

    def setup(self):
        h4 = 4 * self.hidden
        self.encoder_genre = nn.Embed(max(self.num_genres, 1), h4, dtype=jnp.float32)
        self.decoder_genre = nn.Embed(max(self.num_genres, 1), h4, dtype=jnp.float32)
        gathered = self.vocab_size if not self.embed_dim else None
        column = self.hidden >= COLUMN_LAYOUT_FROM_HIDDEN
        self.encoder_layers = [
            LSTMLayer(self.hidden, gathered if k == 0 else None, self.dtype, self.fused, column)
            for k in range(self.num_layers)
        ]
        self.decoder_layers = [
            LSTMLayer(self.hidden, gathered if k == 0 else None, self.dtype, self.fused, column)
            for k in range(self.num_layers)
        ]
        if self.embed_dim:
            self.encoder_embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)
            self.decoder_embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)
        self.encoder_dropout = nn.Dropout(self.dropout)
        self.decoder_dropout_layer = nn.Dropout(self.decoder_dropout)
        self.head = _Affine(self.vocab_size)  # nn.Dense's parameters; applied by `matmul`

    def encode(self, tokens: jax.Array, genre: jax.Array, *, train: bool = False) -> list[Carry]:
        """Reads the encoder tokens.

        Args:
          tokens: int32[B, Te].
          genre: int32[B] genre indices (into codec.genres).
          train: apply dropout (needs a 'dropout' rng).

        Returns:
          The final (c, h) of each layer, each float32[B, H].
        """
        x: jax.Array = self.encoder_embed(tokens) if self.embed_dim else tokens
        carries = []
        for k, layer in enumerate(self.encoder_layers):
            if k > 0:
                x = self.encoder_dropout(x, deterministic=not train)
            carry, x = layer(self.zero_carry(tokens), x, self.encoder_genre(genre) if k == 0 else None)
            carries.append(carry)
        return carries

    def decode(
        self, carries: list[Carry], tokens: jax.Array, genre: jax.Array, *, train: bool = False
    ) -> tuple[list[Carry], jax.Array]:
        """Runs the decoder from the given states.

        Args:
          carries: each layer's (c, h) to start from.
          tokens: int32[B, T] decoder inputs.
          genre: int32[B] genre indices.
          train: apply dropout.

        Returns:
          (each layer's final (c, h), logits float32[B, T, vocab_size]).
        """
        x: jax.Array = self.decoder_embed(tokens) if self.embed_dim else tokens
        out = []
        for k, (layer, carry) in enumerate(zip(self.decoder_layers, carries, strict=True)):
            if k > 0:
                x = self.decoder_dropout_layer(x, deterministic=not train)
            carry, x = layer(carry, x, self.decoder_genre(genre) if k == 0 else None)
            out.append(carry)
        kernel, bias = self.head(x.shape[-1])
        return out, matmul(x, kernel, self.dtype) + bias

    def decode_step(
        self, carries: list[Carry], token: jax.Array, genre: jax.Array
    ) -> tuple[list[Carry], jax.Array]:
        """Advances the decoder by one note (sampling).

        Args:
          carries: each layer's (c, h).
          token: int32[B] the previous note.
          genre: int32[B] genre indices.

        Returns:
          (the new carries, logits float32[B, vocab_size]), equal to the
          teacher-forced decoder's logits at that step.
        """
        carries, logits = self.decode(carries, token[:, None], genre)
        return carries, logits[:, 0]

    def __call__(
        self,
        encoder_tokens: jax.Array,
        decoder_inputs: jax.Array,
        genre: jax.Array,
        *,
        train: bool = False,
    ) -> jax.Array:
        """Teacher-forced logits.

        Args:
          encoder_tokens: int32[B, Te].
          decoder_inputs: int32[B, Td].
          genre: int32[B] genre indices.
          train: apply dropout.

        Returns:
          float32[B, Td, vocab_size] logits.
        """
        carries = self.encode(encoder_tokens, genre, train=train)
        return self.decode(carries, decoder_inputs, genre, train=train)[1]

    def zero_carry(self, tokens: jax.Array) -> Carry:
        """Zero (c, h), float32[B, H], for a batch of tokens int32[B, T].

        Built from `tokens` rather than from a shape so that under shard_map it
        varies over devices as the batch does (scan needs equal carry types).
        """
        zeros = jnp.zeros_like(tokens[:, :1], dtype=jnp.float32) * jnp.zeros((self.hidden,), jnp.float32)
        return zeros, zeros
