"""The LSTM recurrence and its hand-written backward pass, in plain JAX (no Flax).

`recurrence` runs one LSTM layer over precomputed input gates; `wavefront` runs a
stack of layers as one scan (layer k at time t - k: T + L - 1 sequential steps instead
of L x T); `stack` picks one of the two orders per platform. `models` holds the
parameters and calls `stack`. What makes it fast, without changing the
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
    if column and w.dtype != jnp.float32:
        # XLA:CPU runs a bfloat16 product only in its plain form (contracting the lhs's
        # last axis and the rhs's first); in the column layout this one contracts
        # [T, ., B] axes of both, which its generic dot cannot do in bfloat16
        # ("Unsupported element type for DotThunk"). Taken in rows, it is plain; float32
        # keeps the column form, which XLA:CPU runs faster (about 12% for this product
        # at hidden 1024), hence a branch rather than rows for both.
        h_rows, d_rows = jnp.swapaxes(h_prev, 1, 2), jnp.swapaxes(dgates, 1, 2).astype(w.dtype)
        rows = jnp.einsum("tbh,tbg->hg", h_rows, d_rows, preferred_element_type=jnp.float32)
        return dgates, rows.T, dc0, dh0, d_bias
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


# ------------------------------------------------------------------ wavefront ----
#
# A stack of L layers in one scan: at step s, layer k advances to time t = s - k,
# reading layer k - 1's output of the step before. Every layer's products of a step
# depend only on the carry, so they are independent of each other, and the stack
# takes T + L - 1 sequential steps instead of L x T, forward and backward. A layer
# outside its time range (the first and last L - 1 steps) keeps its state.


def _skew(x: jax.Array, before: int, after: int) -> jax.Array:
    """x float[T, ...] padded with zeros on the time axis: [before + T + after, ...]."""
    return jnp.pad(x, [(before, after)] + [(0, 0)] * (x.ndim - 1))


def _active(num_layers: int, steps: int) -> jax.Array:
    """bool[T + L - 1, L]: whether layer k is within its time range at step s."""
    s, k = jnp.arange(steps + num_layers - 1)[:, None], jnp.arange(num_layers)[None, :]
    return (s >= k) & (s - k < steps)


def _wave_forward(gates_x, w_h, w_xh, b_x, c0, h0, gate_bias, keeps):
    """Weights (w_h, w_xh) are already in the compute dtype; everything else float32.
    w_xh: [W_x; W_h] of each upper layer; keeps: the dropout multipliers, skewed."""
    num_layers, steps = len(w_h), gates_x.shape[0]
    gx = _skew(gates_x, 0, num_layers - 1)

    def step(carry, xs):
        cs, hs = carry
        gx_s, keep_s, active = xs
        out_c, out_h, saved = [], [], []
        for k in range(num_layers):
            if k == 0:
                gates = matmul(hs[0], w_h[0], w_h[0].dtype) + gx_s + gate_bias
            else:
                x = hs[k - 1] * keep_s[k - 1] if keep_s else hs[k - 1]
                xh = jnp.concatenate([x, hs[k]], -1)
                gates = matmul(xh, w_xh[k - 1], w_xh[k - 1].dtype) + b_x[k - 1]
            s = cell(gates, cs[k])
            out_c.append(jnp.where(active[k], s.c, cs[k]))
            out_h.append(jnp.where(active[k], s.h, hs[k]))
            saved.append((out_h[k], out_c[k], s.tanh_c, jnp.concatenate([s.i, s.f, s.g, s.o], -1)))
        return (tuple(out_c), tuple(out_h)), tuple(saved)

    (c, h), saved = lax.scan(step, (tuple(c0), tuple(h0)), (gx, keeps, _active(num_layers, steps)))
    top = saved[-1][0][num_layers - 1 :]
    return (top, c, h), saved


def _wave_backward(w_h, w_xh, c0, h0, keeps, saved, d_top, d_c, d_h):
    """Gradients of the stack's inputs, float32; the weights (in the compute dtype, as
    `_wave_forward` takes them) enter products only."""
    num_layers, steps, dtype = len(w_h), d_top.shape[0], w_h[0].dtype
    w0_t, w_xh_t = w_h[0].T, tuple(w.T for w in w_xh)  # transposed once, outside the loop
    hs, cs, tanh_cs, acts = (tuple(layer[j] for layer in saved) for j in range(4))
    c_prev = tuple(jnp.concatenate([c0[k][None], cs[k][:-1]], 0) for k in range(num_layers))

    def step(carry, xs):
        dh_next, dc_next, dx = carry  # dx[k]: the gradient layer k + 1 sent to layer k's output
        d_top_s, act, cp, tc, keep_s, active = xs
        out_dh, out_dc, out_dx, dgates_all = [], [], [], []
        for k in range(num_layers):
            i, f, g, o = jnp.split(act[k], 4, axis=-1)
            dh = dh_next[k] + (d_top_s if k == num_layers - 1 else dx[k])
            dc = dc_next[k] + dh * o * (1 - tc[k] * tc[k])
            dgates = jnp.concatenate(
                [
                    dc * g * i * (1 - i),
                    dc * cp[k] * f * (1 - f),
                    dc * i * (1 - g * g),
                    dh * tc[k] * o * (1 - o),
                ],
                -1,
            )
            dgates = jnp.where(active[k], dgates, 0.0)
            if k == 0:
                back = matmul(dgates, w0_t, dtype)
            else:
                down, back = jnp.split(matmul(dgates, w_xh_t[k - 1], dtype), 2, -1)
                out_dx.append(down * keep_s[k - 1] if keep_s else down)
            out_dh.append(jnp.where(active[k], back, dh_next[k]))
            out_dc.append(jnp.where(active[k], dc * f, dc_next[k]))
            dgates_all.append(dgates)
        return (tuple(out_dh), tuple(out_dc), tuple(out_dx)), tuple(dgates_all)

    active = _active(num_layers, steps)
    xs = (_skew(d_top, num_layers - 1, 0), acts, c_prev, tanh_cs, keeps, active)
    dx0 = tuple(jnp.zeros_like(h) for h in h0[1:])
    (dh0, dc0, _), dgates = lax.scan(step, (tuple(d_h), tuple(d_c), dx0), xs, reverse=True)

    # Weight gradients: one product over every step per weight, accumulated in float32.
    # Layer k's steps are k .. k + T - 1 of the skewed arrays.
    def dw(inputs, dg):
        return jnp.einsum(
            "tbh,tbg->hg", inputs.astype(dtype), dg.astype(dtype), preferred_element_type=jnp.float32
        )

    d_gates = tuple(dgates[k][k : k + steps] for k in range(num_layers))
    h_prev = tuple(jnp.concatenate([h0[k][None], hs[k][k : k + steps - 1]], 0) for k in range(num_layers))
    d_w_h = tuple(dw(h_prev[k], d_gates[k]) for k in range(num_layers))
    inputs = [hs[k][k : k + steps] for k in range(num_layers - 1)]  # layer k's outputs
    if keeps:  # layer k + 1's multipliers, at its steps k + 1 .. k + T
        inputs = [x * m[k + 1 : k + 1 + steps] for k, (x, m) in enumerate(zip(inputs, keeps, strict=True))]
    d_w_x = tuple(dw(inputs[k - 1], d_gates[k]) for k in range(1, num_layers))
    # Bias gradients as reductions over [T, B, 4H] after the loop, not in its carry as
    # `recurrence` does for XLA:CPU: the wavefront is the TPU and GPU order, where such
    # a reduction is one fast kernel.
    d_b_x = tuple(d_gates[k].sum((0, 1)) for k in range(1, num_layers))
    return d_gates[0], d_w_h, d_w_x, d_b_x, dc0, dh0, d_gates[0].sum(0)


@partial(jax.custom_vjp, nondiff_argnums=(8,))
def wavefront(
    gates_x: jax.Array,
    w_h: tuple[jax.Array, ...],
    w_x: tuple[jax.Array, ...],
    b_x: tuple[jax.Array, ...],
    c0: tuple[jax.Array, ...],
    h0: tuple[jax.Array, ...],
    gate_bias: jax.Array,
    keep: tuple[jax.Array, ...],
    dtype: Any = jnp.float32,
) -> tuple[jax.Array, tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    """A stack of L LSTM layers as one wavefront scan, with a hand-written backward.

    The same function as L calls of `recurrence`, layer k + 1 reading layer k's
    outputs (times `keep`, the dropout between layers) through W_x and b_x.

    Args:
      gates_x: float32[T, B, 4H] the first layer's input projections (time-major).
      w_h: L float32[H, 4H] recurrent weights.
      w_x: L - 1 float32[H, 4H] input weights of layers 1 .. L-1.
      b_x: L - 1 float32[4H] biases of layers 1 .. L-1.
      c0, h0: L float32[B, H] initial states.
      gate_bias: float32[B, 4H] added to the first layer's gates at every step.
      keep: () or L - 1 float32[T, B, H] multipliers of the inputs of layers
        1 .. L-1 (dropout: 0 or 1 / keep probability); not differentiated.
      dtype: the input type of every product (the module's policy).

    Returns:
      (the last layer's outputs float32[T, B, H], L final c, L final h).
    """
    return _wavefront_fwd(gates_x, w_h, w_x, b_x, c0, h0, gate_bias, keep, dtype)[0]


def _wavefront_fwd(gates_x, w_h, w_x, b_x, c0, h0, gate_bias, keep, dtype):
    num_layers = len(w_h)
    # Layer k > 0 reads [x, h] through [W_x; W_h]: one product per step instead of two
    # (fewer launches); concatenated and cast once, for both passes.
    w_xh = tuple(jnp.concatenate([w_x[k - 1], w_h[k]], 0).astype(dtype) for k in range(1, num_layers))
    w_h = tuple(w.astype(dtype) for w in w_h)
    # Layer k reads its multipliers at steps k .. k + T - 1.
    keeps = tuple(_skew(m, k + 1, num_layers - 2 - k) for k, m in enumerate(keep))
    out, saved = _wave_forward(gates_x, w_h, w_xh, b_x, c0, h0, gate_bias, keeps)
    return out, (w_h, w_xh, c0, h0, keeps, saved)


def _wavefront_bwd(dtype, residuals, cotangents):
    w_h, w_xh, c0, h0, keeps, saved = residuals
    d_top, d_c, d_h = cotangents
    d_gx, d_w_h, d_w_x, d_b_x, d_c0, d_h0, d_bias = _wave_backward(
        w_h, w_xh, c0, h0, keeps, saved, d_top, d_c, d_h
    )
    # keep is not differentiated: zeros of its shape, varying over a mesh as it does.
    d_keep = tuple(jnp.zeros_like(m[: d_top.shape[0]]) for m in keeps)
    return d_gx, d_w_h, d_w_x, d_b_x, d_c0, d_h0, d_bias, d_keep


wavefront.defvjp(_wavefront_fwd, _wavefront_bwd)


def _layers(gates_x, w_h, w_x, b_x, c0, h0, gate_bias, keep, *, dtype, column):
    """`wavefront`'s function, one layer after another (L x T sequential steps); the
    layers above the first get their input projection as one product over all steps."""
    hs, c, h = recurrence(gates_x, w_h[0], c0[0], h0[0], gate_bias, column, dtype)
    cs, hh = [c], [h]
    for k in range(1, len(w_h)):
        x = hs * keep[k - 1] if keep else hs
        bias = jnp.broadcast_to(b_x[k - 1], gate_bias.shape)
        hs, c, h = recurrence(matmul(x, w_x[k - 1], dtype), w_h[k], c0[k], h0[k], bias, column, dtype)
        cs.append(c)
        hh.append(h)
    return hs, tuple(cs), tuple(hh)


ORDERS = ("auto", "wavefront", "layers")


def stack(
    gates_x: jax.Array,
    w_h: tuple[jax.Array, ...],
    w_x: tuple[jax.Array, ...],
    b_x: tuple[jax.Array, ...],
    c0: tuple[jax.Array, ...],
    h0: tuple[jax.Array, ...],
    gate_bias: jax.Array,
    keep: tuple[jax.Array, ...] = (),
    *,
    dtype: Any = jnp.float32,
    order: str = "auto",
    column: bool = False,
) -> tuple[jax.Array, tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    """A stack of LSTM layers: `wavefront`'s arguments and result, in the order asked.

    order: "wavefront" (T + L - 1 sequential steps), "layers" (L x T, each layer's
      input projection one product over all steps), or "auto": per platform, from
      measurements (docs/performance.md). On a TPU or GPU a step's cost is mostly
      its launch and the matrix unit's fill, so halving the sequential steps wins; on
      XLA:CPU the small per-step products are the cost, and the layers' hoisted input
      projections run them faster (at hidden 256 about equal, at 1024 1.6x).
    column: the layers' [4H, B] layout, on a CPU only (`recurrence`).

    A single step (sampling) always goes layer by layer in the row layout: the wavefront
    would take L steps for it, and the column layout's transpose of W_h is not repaid.
    """
    if order not in ORDERS:
        raise ValueError(f"order {order!r} is not one of {ORDERS}")
    args = (gates_x, tuple(w_h), tuple(w_x), tuple(b_x), tuple(c0), tuple(h0), gate_bias, tuple(keep))
    rows = partial(_layers, dtype=dtype, column=False)
    if gates_x.shape[0] == 1 or (len(w_h) == 1 and not column):
        return rows(*args)
    layers = partial(_layers, dtype=dtype, column=column)
    waves = partial(wavefront, dtype=dtype)
    if order == "wavefront":
        return waves(*args)
    # The column layout only on a CPU: on a TPU or GPU [4H, B] puts the small per-device
    # batch on the minor (lane) axis. The choice is made when the program is lowered,
    # for the platform it is lowered for.
    default = rows if order == "layers" or len(w_h) == 1 else waves
    return lax.platform_dependent(*args, cpu=layers, default=default)
