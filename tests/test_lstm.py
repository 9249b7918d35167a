"""jaxmusic.lstm: the recurrence and its hand-written backward against autodiff of a plain LSTM."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmusic import lstm


def test_custom_backward_equals_autodiff_of_the_recurrence():
    t, b, h = 7, 3, 5
    k = jax.random.split(jax.random.key(14), 5)
    gates_x = jax.random.normal(k[0], (t, b, 4 * h))
    w_h = jax.random.normal(k[1], (h, 4 * h)) * 0.5
    c0, h0 = jax.random.normal(k[2], (b, h)), jax.random.normal(k[3], (b, h))
    extra = jax.random.normal(k[4], (b, 4 * h))
    weights = [
        jax.random.normal(kk, s)
        for kk, s in zip(jax.random.split(k[4], 3), [(t, b, h), (b, h), (b, h)], strict=True)
    ]

    def loss(f):
        def value(*args):
            hs, c, hh = f(*args)
            return (hs * weights[0]).sum() + (c * weights[1]).sum() + (hh * weights[2]).sum()

        return value

    def plain(gx, w, c, hh, e):  # autodiff of a per-step LSTM with separate sigmoids
        def step(carry, x):
            c, hh = carry
            i, f, g, o = jnp.split(x + e + hh @ w, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            hh = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (c, hh), hh

        (c, hh), hs = jax.lax.scan(step, (c, hh), gx)
        return hs, c, hh

    args = (gates_x, w_h, c0, h0, extra)
    ref_out = plain(*args)
    ref = jax.grad(loss(plain), argnums=(0, 1, 2, 3, 4))(*args)
    for column in (False, True):
        fn = lambda *a, column=column: lstm.recurrence(*a, column)  # noqa: E731
        for a, r in zip(fn(*args), ref_out, strict=True):
            np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)
        ours = jax.grad(loss(fn), argnums=(0, 1, 2, 3, 4))(*args)
        assert float(jnp.abs(ours[4]).sum()) > 0
        for a, r in zip(ours, ref, strict=True):
            np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


def _stack_args(num_layers: int, dropout: bool, t: int = 6, b: int = 3, h: int = 5):
    k = iter(jax.random.split(jax.random.key(num_layers), 40))

    def n(shape, scale=1.0):
        return jax.random.normal(next(k), shape) * scale

    keep = tuple(
        (jax.random.bernoulli(next(k), 0.7, (t, b, h)) / 0.7).astype(jnp.float32)
        for _ in range(num_layers - 1)
    )
    return (
        n((t, b, 4 * h)),
        tuple(n((h, 4 * h), 0.5) for _ in range(num_layers)),
        tuple(n((h, 4 * h), 0.5) for _ in range(num_layers - 1)),
        tuple(n((4 * h,)) for _ in range(num_layers - 1)),
        tuple(n((b, h)) for _ in range(num_layers)),
        tuple(n((b, h)) for _ in range(num_layers)),
        n((b, 4 * h)),
        keep if dropout else (),
    )


@pytest.mark.parametrize(("num_layers", "dropout"), [(1, False), (2, False), (3, True)])
def test_wavefront_equals_the_layers_one_after_another(num_layers, dropout):
    """Outputs, final states and every gradient (weights, biases, initial states, the
    first layer's gates and bias) of the wavefront equal the layer-by-layer stack."""
    args = _stack_args(num_layers, dropout)
    weights = [jax.random.normal(jax.random.key(7 + i), s)
               for i, s in enumerate([(6, 3, 5), (num_layers, 3, 5), (num_layers, 3, 5)])]  # fmt: skip

    def loss(order):
        def value(*a):
            hs, c, h = lstm.stack(*a, args[-1], order=order)
            return (
                (hs * weights[0]).sum()
                + (jnp.stack(c) * weights[1]).sum()
                + (jnp.stack(h) * weights[2]).sum()
            )

        return value

    wave = lstm.stack(*args, order="wavefront")
    jax.tree.map(lambda a, r: np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5), wave,
                 lstm.stack(*args, order="layers"))  # fmt: skip
    argnums = tuple(range(7))
    ours, ref = (jax.grad(loss(o), argnums=argnums)(*args[:-1]) for o in ("wavefront", "layers"))
    jax.tree.map(lambda a, r: np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5), ours, ref)
    if num_layers > 1:
        assert float(jnp.abs(ours[2][-1]).sum()) > 0  # the top layer's input weights learn


def test_wavefront_takes_t_plus_l_minus_1_steps():
    """One scan of T + L - 1 steps forward and one backward for any number of layers."""
    args = _stack_args(3, True)

    def lengths(fn):
        jaxpr = jax.make_jaxpr(fn)(*args[:-1])
        found = []

        def visit(j):
            for eqn in j.eqns:
                if eqn.primitive.name == "scan":
                    found.append(eqn.params["length"])
                for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                    visit(sub)

        visit(jaxpr.jaxpr)
        return found

    forward = lengths(lambda *a: lstm.stack(*a, args[-1], order="wavefront")[0])
    assert forward == [6 + 3 - 1]
    # Layer by layer: scans of T (each platform's branch is in the jaxpr).
    assert set(lengths(lambda *a: lstm.stack(*a, args[-1], order="layers")[0])) == {6}
