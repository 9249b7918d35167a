"""The LSTM recurrence and its hand-written backward pass, in plain JAX (no Flax).

`recurrence` runs one LSTM layer over precomputed input gates; `models.LSTMLayer`
holds the parameters and calls it. What makes it fast, without changing the
mathematics:
- one recurrent product per step forward (h @ W_h) and one backward
  (dgates @ W_h^T); the recurrent weight gradient as one product over all steps
  after the reverse scan;
- the gradient of the per-step gate bias (the bias, and the genre's row in a first
  layer) added up in the reverse scan's carry, not reduced over [T, B, 4H] after it;
- all four gate activations as one tanh (`cell`);
- two layouts of the same function: rows (gates [B, 4H]) and columns (gates
  [4H, B]), chosen per platform and size by the caller.

Mixed precision, one policy for every form of the model (this recurrence and its
backward, the nn.scan reference in `models`, the head, evaluation and sampling), as
cuDNN's LSTM, PyTorch autocast and the Flax/T5X convention keep it:
- parameters are float32, and so is every gradient until the optimizer;
- a matrix product takes `dtype` inputs (bfloat16 on TPUs and GPUs) and accumulates
  and returns float32 (`matmul`);
- gate pre-activations, the gate nonlinearities, the cell state c and the hidden
  state h are float32; h is cast to `dtype` only as the input of a product;
- row gathers (the one-hot input, the genre rows) read the float32 table exactly;
- logits come out of the head's product in float32, and the log-softmax and loss
  stay float32.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


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
    return _matmul(a.astype(jnp.float32), varying_like(a, b).astype(jnp.float32), dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _matmul_fwd(a, b, dtype):
    a, b = a.astype(dtype), b.astype(dtype)
    return jnp.matmul(a, b, preferred_element_type=jnp.float32), (a, b)


def _matmul_bwd(dtype, saved, g):
    a, b = saved
    g = g.astype(dtype)
    da = jnp.matmul(g, b.T, preferred_element_type=jnp.float32)
    db = jnp.tensordot(a, g, axes=(tuple(range(a.ndim - 1)), tuple(range(g.ndim - 1))),
                       preferred_element_type=jnp.float32)  # fmt: skip
    return da, db


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _varying_axes(x: jax.Array) -> frozenset:
    """The shard_map mesh axes over which x varies (empty outside shard_map)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "mat", None)
    return frozenset(getattr(aval, "vma", None) or (mat.varying if mat is not None else ()))


def varying_like(like: jax.Array, x: jax.Array) -> jax.Array:
    """x typed to vary over every shard_map axis `like` varies over (`lax.pcast`)."""
    axes = tuple(sorted(_varying_axes(like) - _varying_axes(x)))
    return lax.pcast(x, axes, to="varying") if axes else x


class Cell(NamedTuple):
    """One step's gate activations and new state, in the layout of the gates."""

    i: jax.Array
    f: jax.Array
    g: jax.Array
    o: jax.Array
    c: jax.Array
    tanh_c: jax.Array
    h: jax.Array


def cell(gates: jax.Array, c: jax.Array, axis: int = -1) -> Cell:
    """LSTM gate activations and new state from pre-activations.

    Args:
      gates: float[B, 4H] (axis -1) or float[4H, B] (axis 0), gates i, f, g, o.
      c: the cell state, float[B, H] or float[H, B].

    The three sigmoids and the tanh are one tanh over all gates, sigmoid(x) =
    (1 + tanh(x / 2)) / 2: one vectorized pass instead of four (the same function to
    float rounding; the tests compare it with the plain cell).
    """
    hidden = gates.shape[axis] // 4
    half = jnp.asarray(0.5, gates.dtype)
    scale = jnp.concatenate([jnp.full((2 * hidden,), half), jnp.ones((hidden,), gates.dtype),
                             jnp.full((hidden,), half)])  # fmt: skip
    i, f, g, o = jnp.split(jnp.tanh(gates * (scale[:, None] if axis == 0 else scale)), 4, axis=axis)
    i, f, o = half * i + half, half * f + half, half * o + half
    c = f * c + i * g
    tanh_c = jnp.tanh(c)
    return Cell(i, f, g, o, c, tanh_c, o * tanh_c)


# The recurrence in one of two layouts. Row: per-step gates [B, 4H], states [B, H],
# w = W_h [H, 4H], the product h @ W_h. Column: gates [4H, B], states [H, B],
# w = W_h^T [4H, H], the product W_h^T @ h (faster on XLA:CPU at large H).


def _forward(gates_x, w, c0, h0, gate_bias, column: bool):
    """w is already in the compute dtype; everything else is float32."""
    axis = 0 if column else -1

    def step(carry, gx):
        c, h = carry
        product = matmul(w, h, w.dtype) if column else matmul(h, w, w.dtype)
        s = cell(gx + gate_bias + product, c, axis)
        return (s.c, s.h), (s.h, s.c, s.tanh_c, jnp.concatenate([s.i, s.f, s.g, s.o], axis))

    (c, h), (hs, cs, tanh_cs, acts) = lax.scan(step, (c0, h0), gates_x)
    return (hs, c, h), (hs, cs, tanh_cs, acts)


def _backward(w, c0, h0, gate_bias, saved, d_hs, d_c, d_h, column: bool):
    """Gradients of (gates_x, w, c0, h0, gate_bias) in the layout of `_forward`, all
    float32; w (the compute dtype) enters products only."""
    hs, cs, tanh_cs, acts = saved
    axis = 0 if column else -1
    c_prev = jnp.concatenate([c0[None], cs[:-1]], 0)
    w_t = w.T  # transposed once, outside the loop

    def step(carry, xs):
        dh_next, dc_next, d_bias = carry
        dh_out, act, cp, tc = xs
        i, f, g, o = jnp.split(act, 4, axis=axis)
        dh = dh_out + dh_next
        dc = dc_next + dh * o * (1 - tc * tc)
        dgates = jnp.concatenate(
            [dc * g * i * (1 - i), dc * cp * f * (1 - f), dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis
        )
        back = matmul(w_t, dgates, w.dtype) if column else matmul(dgates, w_t, w.dtype)
        return (back, dc * f, d_bias + dgates), dgates

    zero = varying_like(gate_bias, jnp.zeros(gate_bias.shape, jnp.float32))  # a carry typed as the bias
    (dh0, dc0, d_bias), dgates = lax.scan(step, (d_h, d_c, zero), (d_hs, acts, c_prev, tanh_cs), reverse=True)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], 0).astype(w.dtype)
    # The weight gradient as one product over every step, accumulated in float32.
    spec = "thb,tgb->gh" if column else "tbh,tbg->hg"
    dw = jnp.einsum(spec, h_prev, dgates.astype(w.dtype), preferred_element_type=jnp.float32)
    return dgates, dw, dc0, dh0, d_bias


def _to_columns(x: jax.Array) -> jax.Array:
    """[..., B, F] -> [..., F, B] (and back)."""
    return jnp.swapaxes(x, -1, -2)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def recurrence(
    gates_x: jax.Array,
    w_h: jax.Array,
    c0: jax.Array,
    h0: jax.Array,
    gate_bias: jax.Array,
    column: bool = False,
    dtype: Any = jnp.float32,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The LSTM recurrence over precomputed input gates, with a hand-written backward.

    Args:
      gates_x: float32[T, B, 4H] input projections (time-major), gates i, f, g, o.
      w_h: float32[H, 4H] recurrent weights.
      c0, h0: float32[B, H] initial state.
      gate_bias: float32[B, 4H] added to the gates at every step (the bias, and the
        genre's row in a first layer).
      column: run the steps in the [4H, B] layout; the same function.
      dtype: the input type of the recurrent products (h @ W_h and, backward,
        dgates @ W_h^T and the dW_h product); they accumulate in float32, and the
        state, gates and every gradient stay float32 (the module's policy).

    Returns:
      (hs float32[T, B, H], c_T float32[B, H], h_T float32[B, H]).
    """
    return _recurrence_fwd(gates_x, w_h, c0, h0, gate_bias, column, dtype)[0]


def _recurrence_fwd(gates_x, w_h, c0, h0, gate_bias, column, dtype):
    w = w_h.astype(dtype)  # once, outside the loop
    if not column:
        out, saved = _forward(gates_x, w, c0, h0, gate_bias, False)
        return out, (w, c0, h0, gate_bias, saved)
    t = _to_columns
    (hs, c, h), saved = _forward(t(gates_x), w.T, c0.T, h0.T, gate_bias.T, True)
    return (t(hs), c.T, h.T), (w.T, c0.T, h0.T, gate_bias.T, saved)


def _recurrence_bwd(column, dtype, residuals, cotangents):
    w, c0, h0, gate_bias, saved = residuals
    d_hs, d_c, d_h = cotangents
    if not column:
        return _backward(w, c0, h0, gate_bias, saved, d_hs, d_c, d_h, False)
    t = _to_columns
    d_gates, d_w, d_c0, d_h0, d_bias = _backward(w, c0, h0, gate_bias, saved, t(d_hs), d_c.T, d_h.T, True)
    return t(d_gates), d_w.T, d_c0.T, d_h0.T, d_bias.T


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
