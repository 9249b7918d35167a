"""jaxmusic.lstm: the recurrence and its hand-written backward against autodiff of a plain LSTM."""

import jax
import jax.numpy as jnp
import numpy as np

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
