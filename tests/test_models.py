"""models: shapes, decode_step against teacher forcing, learning one batch."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmusic import models, parallel, steps
from jaxmusic.conditioning import Condition

V, G = 23, 3


def _batch(rng, b=4, te=5, td=7, key=None):
    """The model's inputs: tokens and the condition (a genre each; a key each, if given)."""
    k1, k2, k3 = jax.random.split(rng, 3)
    return {
        "encoder_tokens": jax.random.randint(k1, (b, te), 0, V),
        "decoder_inputs": jax.random.randint(k2, (b, td), 0, V),
        "cond": Condition(jax.random.randint(k3, (b,), 0, G), key),
    }


def test_logits_shape_and_dtype():
    model = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=8, dtype=jnp.bfloat16)
    batch = _batch(jax.random.key(0))
    params = model.init(jax.random.key(1), **batch)["params"]
    logits = model.apply({"params": params}, **batch)
    assert logits.shape == (4, 7, V) and logits.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))  # parameters stay float32
    # The first layer's input projection is a [V, 4H] table (one-hot input as a gather).
    assert params["encoder_layers_0"]["x"]["embedding"].shape == (V, 32)
    assert params["encoder_layers_1"]["x"]["kernel"].shape == (8, 32)


def test_decode_step_equals_teacher_forcing():
    model = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=3, hidden=16)
    batch = _batch(jax.random.key(2))
    params = model.init(jax.random.key(3), **batch)["params"]
    teacher = model.apply({"params": params}, **batch)
    carries = model.apply(
        {"params": params}, batch["encoder_tokens"], batch["cond"], method=models.Seq2Seq.encode
    )
    per_step = []
    for t in range(batch["decoder_inputs"].shape[1]):
        carries, logits = model.apply(
            {"params": params},
            carries,
            batch["decoder_inputs"][:, t],
            batch["cond"],
            method=models.Seq2Seq.decode_step,
        )
        per_step.append(logits)
    np.testing.assert_allclose(np.stack(per_step, 1), teacher, rtol=1e-5, atol=1e-5)


def test_genre_changes_the_output():
    model = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=1, hidden=8)
    batch = _batch(jax.random.key(4))
    params = model.init(jax.random.key(5), **batch)["params"]
    params = jax.tree.map(lambda p: p + 0.1, params)  # genre tables start at random anyway
    a = model.apply({"params": params}, **{**batch, "cond": Condition(jnp.zeros(4, jnp.int32))})
    b = model.apply({"params": params}, **{**batch, "cond": Condition(jnp.ones(4, jnp.int32))})
    assert float(jnp.abs(a - b).max()) > 1e-3


def test_condition_output_adds_the_genre_and_key_rows_to_every_step():
    """condition_output: the logits are the plain model's (same other parameters) plus
    the genre's and the key's rows of their head tables, at every decoder step and in
    decode_step; the tables start at zero, so a fresh model is the plain one."""
    batch = _batch(jax.random.key(40), key=jnp.array([0, 5, 13, 24]))
    kw = dict(vocab_size=V, num_genres=G, num_layers=2, hidden=8, num_keys=25)
    plain, conditioned = models.Seq2Seq(**kw), models.Seq2Seq(**kw, condition_output=True)
    params = conditioned.init(jax.random.key(41), **batch)["params"]
    assert params["head_genre"]["embedding"].shape == (G, V)
    assert params["head_key"]["embedding"].shape == (25, V)
    base = {k: v for k, v in params.items() if not k.startswith("head_") or k == "head"}
    jax.tree.map(np.testing.assert_array_equal, base, plain.init(jax.random.key(41), **batch)["params"])
    np.testing.assert_array_equal(conditioned.apply({"params": params}, **batch),
                                  plain.apply({"params": base}, **batch))  # fmt: skip

    rng = np.random.default_rng(0)
    params = dict(params, head_genre={"embedding": jnp.asarray(rng.normal(size=(G, V)), jnp.float32)},
                  head_key={"embedding": jnp.asarray(rng.normal(size=(25, V)), jnp.float32)})  # fmt: skip
    cond = batch["cond"]
    rows = params["head_genre"]["embedding"][cond.genre] + params["head_key"]["embedding"][cond.key]
    logits = conditioned.apply({"params": params}, **batch)
    np.testing.assert_allclose(logits - plain.apply({"params": base}, **batch), np.broadcast_to(
        rows[:, None], logits.shape), rtol=1e-5, atol=1e-5)  # fmt: skip
    carries = conditioned.apply({"params": params}, batch["encoder_tokens"], cond,
                                method=models.Seq2Seq.encode)  # fmt: skip
    _, first = conditioned.apply({"params": params}, carries, batch["decoder_inputs"][:, 0], cond,
                                 method=models.Seq2Seq.decode_step)  # fmt: skip
    np.testing.assert_allclose(first, logits[:, 0], rtol=1e-5, atol=1e-5)


def test_dropout_only_when_training():
    model = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=8, dropout=0.5)
    batch = _batch(jax.random.key(6))
    params = model.init(jax.random.key(7), **batch)["params"]
    a = model.apply({"params": params}, **batch)
    b = model.apply({"params": params}, **batch)
    c = model.apply({"params": params}, **batch, train=True, rngs={"dropout": jax.random.key(8)})
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - c).max()) > 1e-4


def test_train_step_overfits_one_batch():
    model = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=32, dropout=0.0)
    rng = np.random.default_rng(0)
    batch = {
        "encoder_tokens": rng.integers(4, V, (8, 6)).astype(np.int32),
        "targets": rng.integers(4, V, (8, 5)).astype(np.int32),
        "genre": rng.integers(0, G, 8).astype(np.int32),
    }
    batch["decoder_inputs"] = np.concatenate([batch["encoder_tokens"][:, -1:], batch["targets"][:, :-1]], 1)
    batch["weights"] = np.ones((8, 5), np.float32)
    tx = optax.adam(1e-2)
    mesh = parallel.make_mesh()
    params = model.init(jax.random.key(0), batch["encoder_tokens"], batch["decoder_inputs"],
                        Condition(batch["genre"]))["params"]  # fmt: skip
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
    step = steps.make_train_step(model, tx, mesh, jax.random.key(1))
    first = None
    for _ in range(150):
        state, metrics = step(state, parallel.global_batch(batch, mesh))
        first = first if first is not None else float(metrics["loss"])
    assert first > 2.5  # about log(23) at the start
    assert float(metrics["loss"]) < 0.05
    assert float(metrics["accuracy"]) == 1.0


def _reference_logits(params, batch, num_layers):
    """The same model written plainly: one LSTM step at a time, every product inside."""

    def layer(p, xs, carry, genre_gates, first):
        c, h = carry
        outs = []
        for t in range(xs.shape[1]):
            x = xs[:, t]
            gx = p["x"]["embedding"][x] + p["bias"] if first else x @ p["x"]["kernel"] + p["x"]["bias"]
            if genre_gates is not None:
                gx = gx + genre_gates
            i, f, g, o = jnp.split(gx + h @ p["recurrence"]["h"]["kernel"], 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            outs.append(h)
        return (c, h), jnp.stack(outs, 1)

    b = batch["encoder_tokens"].shape[0]
    hidden = params["encoder_layers_0"]["recurrence"]["h"]["kernel"].shape[0]
    zeros = jnp.zeros((b, hidden))
    x, carries = batch["encoder_tokens"], []
    for k in range(num_layers):
        genre = params["encoder_genre"]["embedding"][batch["cond"].genre] if k == 0 else None
        carry, x = layer(params[f"encoder_layers_{k}"], x, (zeros, zeros), genre, k == 0)
        carries.append(carry)
    y = batch["decoder_inputs"]
    for k in range(num_layers):
        genre = params["decoder_genre"]["embedding"][batch["cond"].genre] if k == 0 else None
        _, y = layer(params[f"decoder_layers_{k}"], y, carries[k], genre, k == 0)
    return y @ params["head"]["kernel"] + params["head"]["bias"]


@pytest.mark.parametrize("fused", [True, False])
def test_outputs_and_gradients_equal_a_plain_reference(fused):
    model = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=8, dropout=0.0, fused=fused)
    batch = _batch(jax.random.key(9), b=3, te=4, td=5)
    params = model.init(jax.random.key(10), **batch)["params"]
    targets = jax.random.randint(jax.random.key(11), (3, 5), 0, V)

    def loss(p, f):
        return optax.softmax_cross_entropy_with_integer_labels(f(p), targets).mean()

    ours = lambda p: model.apply({"params": p}, **batch)  # noqa: E731
    ref = lambda p: _reference_logits(p, batch, 2)  # noqa: E731
    np.testing.assert_allclose(ours(params), ref(params), rtol=1e-5, atol=1e-5)
    g_ours, g_ref = jax.grad(loss)(params, ours), jax.grad(loss)(params, ref)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# The row and the column layout layer by layer (a CPU's "auto"), and the wavefront.
STACKS = [(10**6, "auto"), (1, "auto"), (10**6, "wavefront")]


@pytest.mark.parametrize(("column_from", "order"), STACKS[:2])  # the wavefront: the next test
def test_fused_and_scan_models_share_parameters_and_outputs(monkeypatch, column_from, order):
    monkeypatch.setattr(models, "COLUMN_LAYOUT_FROM_HIDDEN", column_from)
    batch = _batch(jax.random.key(15))
    fused = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=8, fused=True, stack_order=order)
    plain = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=8, fused=False)
    params = fused.init(jax.random.key(16), **batch)["params"]
    # The same tree and the same initial values: checkpoints of either form load in the other.
    jax.tree.map(np.testing.assert_array_equal, params, plain.init(jax.random.key(16), **batch)["params"])
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(17), p.shape), params)
    a, b = (m.apply({"params": params}, **batch) for m in (fused, plain))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

    # Gradients too, of every parameter (biases and genre rows included: the fused
    # layer adds them inside the recurrence and sums their gradient there).
    def loss(m):
        return lambda p: (m.apply({"params": p}, **batch) * jnp.arange(V) / V).sum()

    ga, gb = (jax.grad(loss(m))(params) for m in (fused, plain))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), ga, gb)
    assert float(jnp.abs(ga["decoder_layers_1"]["x"]["bias"]).sum()) > 0
    assert float(jnp.abs(ga["encoder_genre"]["embedding"]).sum()) > 0


@pytest.mark.parametrize("num_layers", [3])  # a middle layer reads and is read
def test_wavefront_trains_as_the_layers_do(num_layers):
    """In training, with dropout between the layers of both stacks and a key input: the
    wavefront draws the same dropout masks and gives the same logits and gradients as
    the layers one after another."""
    batch = _batch(jax.random.key(30), key=jnp.array([0, 5, 13, 23]))
    kw = dict(vocab_size=V, num_genres=G, num_layers=num_layers, hidden=8, dropout=0.3, decoder_dropout=0.2,
              num_keys=24)  # fmt: skip
    wave, layers = (models.Seq2Seq(**kw, stack_order=o) for o in ("wavefront", "layers"))
    params = wave.init(jax.random.key(31), **batch)["params"]
    jax.tree.map(np.testing.assert_array_equal, params, layers.init(jax.random.key(31), **batch)["params"])

    def loss(m):
        def value(p):
            logits = m.apply({"params": p}, **batch, train=True, rngs={"dropout": jax.random.key(32)})
            return (logits * jnp.arange(V) / V).sum(), logits

        return value

    (_, a), ga = jax.value_and_grad(loss(wave), has_aux=True)(params)
    (_, b), gb = jax.value_and_grad(loss(layers), has_aux=True)(params)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), ga, gb)
    dropped = wave.apply({"params": params}, **batch, train=True, rngs={"dropout": jax.random.key(33)})
    assert float(jnp.abs(dropped - a).max()) > 1e-3  # dropout is on: another key, other logits


def test_embed_dim_adds_an_embedding_before_the_first_layer():
    model = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=8, embed_dim=6)
    batch = _batch(jax.random.key(12))
    params = model.init(jax.random.key(13), **batch)["params"]
    assert params["encoder_embed"]["embedding"].shape == (V, 6)
    assert params["encoder_layers_0"]["x"]["kernel"].shape == (6, 32)
    assert model.apply({"params": params}, **batch).shape == (4, 7, V)


_SHARDED_GRADIENTS = """
import sys
import jax
import jax.extend
jax.config.update("jax_num_cpu_devices", 2)
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxmusic import models
from jaxmusic.conditioning import Condition
models.COLUMN_LAYOUT_FROM_HIDDEN = int(sys.argv[1])
k = jax.random.split(jax.random.key(0), 3)
batch = dict(encoder_tokens=jax.random.randint(k[0], (4, 5), 0, 23),
             decoder_inputs=jax.random.randint(k[1], (4, 6), 0, 23), cond=Condition(jnp.array([0, 1, 2, 0])))
model = models.Seq2Seq(vocab_size=23, num_genres=3, num_layers=2, hidden=8, stack_order=sys.argv[2])
params = model.init(k[2], **batch)["params"]
loss = lambda p, b: (model.apply({"params": p}, **b) * jnp.arange(23) / 23).sum()
mesh = jax.make_mesh((2,), ("data",))
# Replicated parameters: shard_map's autodiff sums their gradients over the devices.
sharded = jax.jit(jax.shard_map(jax.grad(loss), mesh=mesh, in_specs=(P(), P("data")), out_specs=P()))
got = sharded(jax.device_put(params, NamedSharding(mesh, P())),
              jax.device_put(batch, NamedSharding(mesh, P("data"))))
want = jax.grad(loss)(params, batch)
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got, want)
print("equal", float(jnp.abs(got["decoder_layers_1"]["recurrence"]["h"]["kernel"]).sum()) > 0)
"""


@pytest.mark.parametrize(("column_from", "order"), STACKS)
def test_gradients_under_shard_map_equal_one_device(column_from, order):
    """The fused layer's parameters are cast to vary over the mesh inside shard_map;
    the summed per-device gradients equal the one-device gradient."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _SHARDED_GRADIENTS, str(column_from), order],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.stdout.strip().endswith("equal True"), proc.stderr[-3000:]


def _scan_carry_dtypes(fn, *args) -> set:
    """The dtypes of every scan carry in the traced program (nested jaxprs included)."""
    found = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                n_consts, n_carry = eqn.params["num_consts"], eqn.params["num_carry"]
                found.update(str(v.aval.dtype) for v in eqn.invars[n_consts : n_consts + n_carry])
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


@pytest.mark.parametrize(
    ("fused", "column_from", "order"),
    [(True, *s) for s in STACKS] + [(False, 10**6, "auto")],  # the column layout is the fused form's alone
)
def test_bfloat16_follows_the_mixed_precision_policy(monkeypatch, fused, column_from, order):
    """bfloat16 as the input of products only: logits and every gradient within
    bfloat16 tolerance of float32, and every scan carries float32 alone."""
    monkeypatch.setattr(models, "COLUMN_LAYOUT_FROM_HIDDEN", column_from)
    batch = _batch(jax.random.key(21), b=4, te=9, td=11)
    f32, bf16 = (models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=32, fused=fused, dtype=d,
                                stack_order=order) for d in (jnp.float32, jnp.bfloat16))  # fmt: skip
    params = f32.init(jax.random.key(22), **batch)["params"]
    targets = jax.random.randint(jax.random.key(23), batch["decoder_inputs"].shape, 0, V)

    def loss(m):
        return lambda p: optax.softmax_cross_entropy_with_integer_labels(
            m.apply({"params": p}, **batch), targets
        ).mean()

    a, b = (m.apply({"params": params}, **batch) for m in (f32, bf16))
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, atol=0.03)  # bfloat16 keeps 8 bits: ~0.4% per product input
    # Jitted, as the train step runs it: XLA:CPU fuses layout changes into products
    # only then (one it could not run in bfloat16 passed here when run op by op).
    ga, gb = (jax.jit(jax.grad(loss(m)))(params) for m in (f32, bf16))
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(ga), jax.tree.leaves(gb), strict=True):
        assert y.dtype == jnp.float32, path
        err = float(jnp.linalg.norm(y - x) / (jnp.linalg.norm(x) + 1e-12))
        assert err < 0.03, (jax.tree_util.keystr(path), err)
    assert _scan_carry_dtypes(jax.grad(loss(bf16)), params) == {"float32"}
    assert _scan_carry_dtypes(jax.grad(loss(f32)), params) == {"float32"}


def test_carried_windows_read_as_one_long_window():
    """The encoder started from its state after window 1 and reading window 2 ends where
    one encoder reading both ends; the carried train and eval steps start from the carry,
    or from zeros where `reset` is 1, and hand on the encoder's final state."""
    model = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=8, dropout=0.0)
    batch = _batch(jax.random.key(0), b=4, te=4, td=4)
    params = model.init(jax.random.key(1), **batch)["params"]
    tokens = jax.random.randint(jax.random.key(2), (4, 8), 0, V)
    apply = lambda *a, **k: model.apply({"params": params}, *a, method=models.Seq2Seq.encode, **k)  # noqa: E731
    whole = apply(tokens, batch["cond"])
    carried = apply(tokens[:, 4:], batch["cond"], initial=apply(tokens[:, :4], batch["cond"]))
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(carried), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)

    mesh = parallel.make_mesh()
    data = {"encoder_tokens": batch["encoder_tokens"], "decoder_inputs": batch["decoder_inputs"],
            "genre": batch["cond"].genre, "targets": batch["decoder_inputs"],
            "weights": jnp.ones((4, 4), jnp.float32), "reset": jnp.asarray([1.0, 0.0, 1.0, 0.0])}  # fmt: skip
    data = parallel.global_batch({k: np.asarray(v) for k, v in data.items()}, mesh)
    eval_step = steps.make_eval_step(model, mesh, carried=True)
    noise = jax.tree.map(lambda a: a + 1.0, steps.zero_carry(model, 4))
    sums, carry = eval_step(params, data, noise)
    rows = {}
    for r in range(4):  # each row alone, from zeros (reset) or from the noise
        row = {k: v[r : r + 1] for k, v in data.items()}
        start = [tuple(a[r : r + 1] * (1 - row["reset"][0]) for a in layer) for layer in noise]
        args = (row["encoder_tokens"], row["decoder_inputs"], Condition(row["genre"]))
        rows[r] = model.apply({"params": params}, start, *args, method=models.Seq2Seq.carried)
        for a, b in zip(jax.tree.leaves(rows[r][0]), jax.tree.leaves(carry), strict=True):
            np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b)[r], rtol=1e-5, atol=1e-6)
    xent = optax.softmax_cross_entropy_with_integer_labels
    nll = sum(float(xent(rows[r][1], data["targets"][r : r + 1]).sum()) for r in range(4))
    assert float(sums["nll"].sum()) == pytest.approx(nll, rel=1e-5)

    tx = optax.sgd(0.0)
    state = steps.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), noise)
    state, metrics = steps.make_train_step(model, tx, mesh, jax.random.key(3), carried=True)(state, data)
    assert float(metrics["loss"]) == pytest.approx(nll / 16, rel=1e-5)
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(state.carry), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_weight_decay_shrinks_the_matrices_and_leaves_the_biases():
    """With a zero gradient AdamW moves only by its decay: every matrix shrinks by
    lr x weight_decay, vectors (biases) stay; weight_decay 0 is plain Adam, the optimizer
    state of older checkpoints."""
    from configs import default

    config = default.get_config()
    config.optimizer.warmup_steps, config.optimizer.weight_decay = 0, 0.1
    params = {"kernel": jnp.full((3, 4), 2.0), "bias": jnp.full((4,), 2.0)}
    tx, schedule = steps.make_optimizer(config)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    lr = float(schedule(0))
    np.testing.assert_allclose(np.asarray(updates["kernel"]), -lr * 0.1 * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(updates["bias"]), 0.0)

    config.optimizer.weight_decay = 0.0
    plain, _ = steps.make_optimizer(config)
    adam = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    assert jax.tree.structure(plain.init(params)) == jax.tree.structure(adam.init(params))


def _factors() -> models.Factors:
    """Parts of V ids: the 4 specials and 3 genres take the last row; notes have three
    parts (4, 3 and 2 values), each part's rows after the one before."""
    ids = np.arange(V)
    rows = np.stack([ids % 4, 4 + ids % 3, 7 + (ids // 3) % 2], axis=1)
    rows[: 4 + G] = 9
    return models.Factors(rows.astype(np.int32))


@pytest.mark.parametrize("fused", [True, False])
def test_factors_equal_a_plain_model_with_their_rows_folded_in(fused):
    """A factored model is the plain model whose first-layer input rows and output
    columns are the id's own plus its parts' (so ids sharing a part learn together),
    in both forms and one decoder step at a time."""
    factors = _factors()
    model = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=8, fused=fused, factors=factors)
    plain = models.Seq2Seq(vocab_size=V, num_genres=G, num_layers=2, hidden=8, fused=fused)
    batch = _batch(jax.random.key(30))
    params = model.init(jax.random.key(31), **batch)["params"]
    assert params["head_factors"]["kernel"].shape == (8, 10)
    assert params["encoder_factors"]["embedding"].shape == (10, 32)
    base = {k: v for k, v in params.items() if "factors" not in k}
    # Zero part rows at the start: the factored model starts as the plain one.
    start, start_plain = model.apply({"params": params}, **batch), plain.apply({"params": base}, **batch)
    np.testing.assert_allclose(start, start_plain, rtol=1e-6, atol=1e-6)
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(32), p.shape), params)
    rows = jnp.asarray(factors.rows)
    folded = jax.tree.map(lambda a: a, {k: v for k, v in params.items() if "factors" not in k})
    for stack in ("encoder", "decoder"):
        table = params[f"{stack}_factors"]["embedding"]
        layer = folded[f"{stack}_layers_0"]
        own = layer["x"]["embedding"]
        folded[f"{stack}_layers_0"] = {**layer, "x": {"embedding": own + table[rows].sum(1)}}
    head = params["head_factors"]["kernel"]
    folded["head"] = {**folded["head"], "kernel": folded["head"]["kernel"] + head[:, rows].sum(-1)}
    teacher = model.apply({"params": params}, **batch)
    np.testing.assert_allclose(teacher, plain.apply({"params": folded}, **batch), rtol=1e-5, atol=1e-5)
    # What inference samples and scores with: the same plain model and rows.
    assert models.plain_of(model) == plain.clone(fused=fused)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
                 models.fold_factors(model, params), folded)  # fmt: skip
    variables, cond = {"params": params}, batch["cond"]
    carries = model.apply(variables, batch["encoder_tokens"], cond, method=models.Seq2Seq.encode)
    per_step = []
    for t in range(batch["decoder_inputs"].shape[1]):
        token = batch["decoder_inputs"][:, t]
        carries, logits = model.apply(variables, carries, token, cond, method=models.Seq2Seq.decode_step)
        per_step.append(logits)
    np.testing.assert_allclose(np.stack(per_step, 1), teacher, rtol=1e-5, atol=1e-5)


def test_factors_are_a_hashable_field_equal_by_value():
    a, b = _factors(), _factors()
    assert a == b and hash(a) == hash(b) and a != models.Factors(a.rows[::-1].copy())
    assert models.Factors.synthetic(50).rows.shape == (50, 5)
