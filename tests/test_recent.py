"""recent: each group's count over the last notes read, in a teacher-forced window and in
the sampler's carry alike; the model that reads it; the sampler that gives it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmusic import codec as codec_lib
from jaxmusic import models, recent, sampler
from jaxmusic.conditioning import Condition

FIRST = 6  # ids 0..5: PAD, BOS, EOS, UNK and two genres
V = 23
GROUPS = np.where(np.arange(V) >= FIRST, (np.arange(V) - FIRST) % 5, 5).astype(np.int32)  # 5 groups
INSTRUMENTS = np.where(np.arange(V) >= FIRST, (np.arange(V) - FIRST) // 9, 2).astype(
    np.int32
)  # two, and the rest


def _loop_ahead(read: np.ndarray) -> np.ndarray:
    """bool[T]: by definition, whether the notes up to t end 3d - 1 notes equal to the notes
    d before (d <= 8): the next note could make a figure's fourth playing."""
    out = np.zeros(read.shape[0], bool)
    for t in range(read.shape[0]):
        for d in range(1, 9):
            ks = range(3 * d - 1)
            if all(t - k - d >= 0 and read[t - k] >= FIRST and read[t - k] == read[t - k - d] for k in ks):
                out[t] = True
    return out


def _reference(read: np.ndarray, notes: int) -> np.ndarray:
    """float64[T, G]: by definition, each group's count among the last `notes` of read[..t]
    (none where the next note could complete a loop)."""
    out = np.zeros((read.shape[0], 5))
    for t in range(read.shape[0]):
        for token in read[max(0, t - notes + 1) : t + 1]:
            if token >= FIRST:
                out[t, GROUPS[token]] += 1
    return np.where(_loop_ahead(read)[:, None], 0.0, out)


def test_loop_ahead_is_the_lookbacks_loop_rule():
    rng = np.random.default_rng(1)
    read = rng.integers(0, 9, (4, 40))  # few ids: runs of equal notes
    read[1, :5] = codec_lib.PAD
    read[1, 5:30] = np.tile([7, 9, 11], 9)[:25]  # a figure of three, played on and on
    read[2, :] = codec_lib.PAD  # PADs never loop
    read[3, 9:14] = [0, 8, 8, 8, 0]  # one note three times: a fourth would loop
    got = np.asarray(recent.loop_ahead(jnp.asarray(read), recent.Spec(4, GROUPS)))
    np.testing.assert_array_equal(got, np.stack([_loop_ahead(r) for r in read]))
    assert got[1, 15] and not got[1, 14]  # 11 notes of the figure: its fourth playing is next
    assert not got[2].any() and got[3, 12] and not got[3, 11]


def test_window_counts_and_the_counter_equal_the_definition():
    rng = np.random.default_rng(0)
    te, td, notes = 7, 6, 5
    windows = rng.integers(0, V, (3, te + td))
    windows[0, :4] = codec_lib.PAD  # a piece's start: PADs and its BOS count nothing
    windows[0, 4] = codec_lib.BOS
    windows[1, 2:] = np.tile([8, 9], 6)[:11]  # a loop: no counts once it could complete one
    spec = recent.Spec(notes, GROUPS)
    enc, dec = windows[:, :te], windows[:, te - 1 : -1]
    got = np.asarray(recent.counts(jnp.asarray(enc), jnp.asarray(dec), spec))
    for b in range(3):
        want = _reference(windows[b, :-1], notes)[te - 1 :]
        np.testing.assert_array_equal(got[b], want)
    assert got.max() >= 2  # some group sounded twice in five notes: the test sees counts
    assert (got[1] == 0).all(-1).any() and (got[0] != 0).any()  # the loop's steps read none
    # The sampler's carry: read the encoder's tokens, then each decoder input after the first.
    counter = recent.Counter.of(jnp.asarray(enc), spec)
    steps = [np.asarray(counter.counts)]
    for t in range(1, td):
        counter = counter.read(jnp.asarray(dec[:, t]), spec)
        steps.append(np.asarray(counter.counts))
    np.testing.assert_array_equal(np.stack(steps, 1), got)


def _batch(rng, b=3, te=5, td=6):
    k = jax.random.split(rng, 3)
    enc = jax.random.randint(k[0], (b, te), 0, V)
    dec = jax.random.randint(k[1], (b, td), 0, V).at[:, 0].set(enc[:, -1])
    return {
        "encoder_tokens": enc,
        "decoder_inputs": dec,
        "cond": Condition(jax.random.randint(k[2], (b,), 0, 2)),
    }


def _model(**kw):
    return models.Seq2Seq(vocab_size=V, num_genres=2, num_layers=2, hidden=8, recent_notes=4,
                          recent_groups=models.Factors(np.stack([GROUPS, INSTRUMENTS], 1)), **kw)  # fmt: skip


def test_the_model_starts_as_the_plain_one_and_moves_notes_within_their_instrument():
    """Zero, the model is the plain one; trained, it raises the ids of groups that sounded
    against the other ids of their instrument, and each instrument's probability stays
    the plain model's."""
    batch = _batch(jax.random.key(0))
    kw = dict(vocab_size=V, num_genres=2, num_layers=2, hidden=8)
    plain, counting = models.Seq2Seq(**kw), _model()
    params = counting.init(jax.random.key(1), **batch)["params"]
    base = {k: v for k, v in params.items() if not k.startswith("recent")}
    np.testing.assert_allclose(counting.apply({"params": params}, **batch),
                               plain.apply({"params": base}, **batch), rtol=1e-6, atol=1e-6)  # fmt: skip
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(2), p.shape), params)
    base = {k: v for k, v in params.items() if not k.startswith("recent")}
    got, want = counting.apply({"params": params}, **batch), plain.apply({"params": base}, **batch)
    p, q = np.asarray(jax.nn.softmax(got)), np.asarray(jax.nn.softmax(want))
    for i in range(3):
        np.testing.assert_allclose(
            p[..., i == INSTRUMENTS].sum(-1), q[..., i == INSTRUMENTS].sum(-1), atol=1e-6
        )
    counts = np.asarray(
        recent.counts(batch["encoder_tokens"], batch["decoder_inputs"], models.recent_spec(counting))
    )
    sounded = np.concatenate([counts, np.zeros((*counts.shape[:2], 1))], -1)[..., GROUPS] > 0  # [B, T, V]
    diff = np.asarray(got - want)
    for i in range(3):  # ids whose group did not sound all move by their instrument's one amount
        quiet = np.where(~sounded & (i == INSTRUMENTS), diff, np.nan)
        spread = np.nanmax(quiet, -1) - np.nanmin(quiet, -1)
        assert np.nanmax(spread) < 1e-5
    lift = diff - np.nanmax(np.where(~sounded, diff, np.nan), -1, keepdims=True)
    assert sounded.any() and np.abs(lift[sounded]).min() > 1e-4  # a sounded group moves against the rest
    assert (~sounded[..., INSTRUMENTS == 2]).all() and np.abs(diff[..., INSTRUMENTS == 2]).max() < 1e-6


@pytest.mark.parametrize("order", ["layers", "wavefront"])
def test_fused_and_reference_models_agree_and_decode_step_equals_teacher_forcing(order):
    batch = _batch(jax.random.key(3))
    fused, ref = _model(stack_order=order), _model(fused=False)
    params = fused.init(jax.random.key(4), **batch)["params"]
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(5), p.shape), params)
    a, b = (m.apply({"params": params}, **batch) for m in (fused, ref))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

    def loss(m):
        return lambda p: (m.apply({"params": p}, **batch) * jnp.arange(V) / V).sum()

    ga, gb = (jax.grad(loss(m))(params) for m in (fused, ref))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), ga, gb)
    assert float(jnp.abs(ga["recent"]["kernel"]).sum()) > 0
    assert float(jnp.abs(ga["recent_count"]["embedding"]).sum()) > 0
    carries = fused.apply(
        {"params": params}, batch["encoder_tokens"], batch["cond"], method=models.Seq2Seq.encode
    )
    counter, spec, steps = (
        recent.Counter.of(batch["encoder_tokens"], models.recent_spec(fused)),
        models.recent_spec(fused),
        [],
    )
    for t in range(batch["decoder_inputs"].shape[1]):
        token = batch["decoder_inputs"][:, t]
        if t:
            counter = counter.read(token, spec)
        carries, logits = fused.apply({"params": params}, carries, token, batch["cond"], None, counter.counts,
                                      method=models.Seq2Seq.decode_step)  # fmt: skip
        steps.append(logits)
    np.testing.assert_allclose(np.stack(steps, 1), a, rtol=1e-5, atol=1e-5)


def test_the_sampler_gives_each_step_the_counts_a_step_by_step_reference_does():
    """A stub that writes the next id of the group that sounded most in the last notes
    (ties: the lowest group): the compiled sampler, across phrases, writes what a Python
    loop over `Counter` writes."""
    spec = recent.Spec(4, GROUPS)

    def encode(params, tokens, cond):
        return jnp.zeros(tokens.shape[0])

    def rule(token, counts):
        return FIRST + (jnp.argmax(counts, -1) + 5 * (token % 3)) % (V - FIRST)

    def step(params, carry, token, cond, recent_counts=None):
        return carry, jax.nn.one_hot(rule(token, recent_counts), V) * 10.0

    fn = sampler.make_sampler(encode, step, vocab_size=V, first_note_id=FIRST, phrase_len=3, num_phrases=4,
                              recent_spec=spec)  # fmt: skip
    window = np.array([[0, 1, 7, 12], [9, 10, 14, 19]], np.int32)
    got = np.asarray(fn(None, jnp.asarray(window), Condition(jnp.zeros(2, jnp.int32)), jax.random.key(0),
                        sampler.Settings(greedy=True)))  # fmt: skip
    counter, prev, want = recent.Counter.of(jnp.asarray(window), spec), jnp.asarray(window[:, -1]), []
    for _ in range(12):
        token = rule(prev, counter.counts)
        want.append(np.asarray(token))
        counter, prev = counter.read(token, spec), token
    np.testing.assert_array_equal(got, np.stack(want, 1))
    assert len(np.unique(got)) > 3  # the rule moves between groups: the counts are followed, not constant


def test_recent_notes_reach_no_further_back_than_a_window_and_old_configs_have_none():
    from configs import default
    from jaxmusic import run_config
    from jaxmusic.errors import UsageError

    c = run_config.complete(default.get_config())
    c.model.recent_notes = c.encoder_len + 1
    with pytest.raises(UsageError, match=r"recent_notes must be from 0 \(off\) to encoder_len"):
        run_config.validate(c)
    c.model.recent_notes = c.encoder_len
    run_config.validate(c)
    assert models.recent_spec(models.from_config(c, 30, 2)).notes == c.encoder_len
    old = c.to_dict()
    del old["model"]["recent_notes"]
    assert models.recent_spec(models.from_config(run_config.complete(old), 30, 2)) is None
