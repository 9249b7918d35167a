"""lookback: the continuation of the longest earlier match, in numpy and in the sampler's
carry alike; the model that reads it; windows and the sampler that give it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmusic import codec as codec_lib
from jaxmusic import lookback, models, sampler, windows
from jaxmusic.conditioning import Condition
from jaxmusic.lookback import Tracker

FIRST = 6  # ids 0..5: PAD, BOS, EOS, UNK and two genres


def _reference(x, window):
    """The definition, by brute force: for each t, the longest run ending at t equal to a
    run ending at t - d (1 <= d <= window; notes only, at most MAX_MATCH), the smallest d
    among equals; its continuation x[t - d + 1] if a note and the next note cannot complete
    a loop (the last LOOP_REPEATS periods of some d <= LOOP_PERIOD notes but one alike)."""
    out_tokens, out_buckets = [], []
    for t in range(len(x)):
        best, best_d, loop = 0, 0, False
        for d in range(1, min(window, t) + 1):
            run = 0
            while (
                run < lookback.MAX_MATCH
                and t - run - d >= 0
                and x[t - run] >= FIRST
                and x[t - run] == x[t - run - d]
            ):
                run += 1
            if run > best:
                best, best_d = run, d
            loop |= d <= lookback.LOOP_PERIOD and run >= (lookback.LOOP_REPEATS - 1) * d - 1
        nxt = x[t - best_d + 1] if best else 0
        found = best > 0 and nxt >= FIRST and not loop
        out_tokens.append(nxt if found else 0)
        out_buckets.append(int(lookback.bucket(best if found else 0)))
    return np.array(out_tokens), np.array(out_buckets)


def test_prefix_and_the_tracker_equal_the_definition():
    rng = np.random.default_rng(0)
    for window in (3, 16):
        spec = lookback.Spec(window, FIRST)
        for _ in range(5):
            notes = rng.integers(FIRST, FIRST + 4, 60)
            x = np.concatenate([[codec_lib.BOS], notes, [codec_lib.EOS]]).astype(np.int32)
            want = _reference(list(x), window)
            got = lookback.prefix(x, np.array([0]), window, FIRST)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            # The tracker, note by note, from an empty history.
            tracker = Tracker.of(jnp.zeros((1, 1), jnp.int32), spec)
            for t, token in enumerate(x):
                tracker = tracker.read(jnp.asarray([token]), spec)
                note, bucket = tracker.lookback(spec)
                assert (int(note[0]), int(bucket[0])) == (want[0][t], want[1][t]), (window, t)


def test_a_phrase_played_twice_looks_back_at_its_first_playing():
    phrase = FIRST + np.arange(10)
    x = np.concatenate([[codec_lib.BOS], phrase, phrase]).astype(np.int32)
    notes, buckets = lookback.prefix(x, np.array([0]), 64, FIRST)
    # In the second playing, after its k-th note the first playing says what came next.
    second = np.arange(11, 20)
    np.testing.assert_array_equal(notes[second], phrase[1:])
    assert (np.diff(buckets[second]) >= 0).all() and buckets[19] == lookback.bucket(9)
    assert (notes[:11] == codec_lib.PAD).all() and (buckets[:11] == 0).all()  # the first playing: nothing
    # Pieces laid end to end match within their own piece only.
    two = np.concatenate([x, x])
    notes2, _ = lookback.prefix(two, np.array([0, len(x)]), 64, FIRST)
    np.testing.assert_array_equal(notes2[: len(x)], notes)
    np.testing.assert_array_equal(notes2[len(x) :], notes)


def _batch(rng, b=3, te=5, td=6, v=23):
    k = jax.random.split(rng, 4)
    return {
        "encoder_tokens": jax.random.randint(k[0], (b, te), 0, v),
        "decoder_inputs": jax.random.randint(k[1], (b, td), 0, v),
        "cond": Condition(jax.random.randint(k[2], (b,), 0, 2)),
        "lookback": (
            jax.random.randint(k[3], (b, td), 0, v),
            jnp.arange(b * td).reshape(b, td) % lookback.NUM_BUCKETS,
        ),
    }


def test_a_lookback_model_starts_as_the_plain_one_and_hears_its_lookback():
    batch = _batch(jax.random.key(0))
    kw = dict(vocab_size=23, num_genres=2, num_layers=2, hidden=8)
    plain, looking = models.Seq2Seq(**kw), models.Seq2Seq(**kw, lookback=True)
    params = looking.init(jax.random.key(1), **batch)["params"]
    base = {k: v for k, v in params.items() if not k.startswith(("lookback_", "copy"))}
    without = {k: v for k, v in batch.items() if k != "lookback"}
    np.testing.assert_allclose(looking.apply({"params": params}, **batch),
                               plain.apply({"params": base}, **without), rtol=1e-6, atol=1e-6)  # fmt: skip
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)
    other = dict(batch, lookback=((batch["lookback"][0] + 1) % 23, batch["lookback"][1]))
    assert (
        float(
            jnp.abs(
                looking.apply({"params": params}, **batch) - looking.apply({"params": params}, **other)
            ).max()
        )
        > 1e-3
    )
    # The copy: the lookback note's logit moves by the learned amount, others not.
    logits = looking.apply({"params": params}, **batch)
    no_copy = dict(params, copy={"kernel": jnp.zeros_like(params["copy"]["kernel"])},
                   copy_length={"embedding": jnp.zeros_like(params["copy_length"]["embedding"])})  # fmt: skip
    diff = np.asarray(logits - looking.apply({"params": no_copy}, **batch))
    notes, buckets = (np.asarray(a) for a in batch["lookback"])
    hit = (np.arange(23)[None, None] == notes[..., None]) & (buckets[..., None] > 0)
    assert np.abs(diff[~hit]).max() < 1e-6 and np.abs(diff[hit]).min() > 0


def test_a_copy_group_raises_every_id_of_the_lookback_notes_group():
    """With `copy_groups`, a second learned amount moves the logits of exactly the ids in
    the lookback note's group (where there is a match); zero, the model is the plain copy."""
    batch = _batch(jax.random.key(6))
    groups = models.Factors((np.arange(23) // 3)[:, None].astype(np.int32))
    kw = dict(vocab_size=23, num_genres=2, num_layers=2, hidden=8, lookback=True)
    plain, grouped = models.Seq2Seq(**kw), models.Seq2Seq(**kw, copy_groups=groups)
    params = grouped.init(jax.random.key(7), **batch)["params"]
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(8), p.shape), params)
    base = {k: v for k, v in params.items() if not k.startswith("copy_group")}
    no_group = {k: jax.tree.map(jnp.zeros_like, p) if k.startswith("copy_group") else p
                for k, p in params.items()}  # fmt: skip
    np.testing.assert_allclose(grouped.apply({"params": no_group}, **batch),
                               plain.apply({"params": base}, **batch), rtol=1e-6, atol=1e-6)  # fmt: skip
    diff = np.asarray(grouped.apply({"params": params}, **batch) - plain.apply({"params": base}, **batch))
    notes, buckets = (np.asarray(a) for a in batch["lookback"])
    hit = (np.arange(23)[None, None] // 3 == notes[..., None] // 3) & (buckets[..., None] > 0)
    assert np.abs(diff[~hit]).max() < 1e-6 and np.abs(diff[hit]).min() > 0
    assert hit.sum(-1).max() == 3  # the note and the two others of its group


@pytest.mark.parametrize("order", ["layers", "wavefront"])
def test_fused_and_reference_lookback_models_agree_and_decode_step_equals_teacher_forcing(order):
    batch = _batch(jax.random.key(3))
    groups = models.Factors((np.arange(23) % 4)[:, None].astype(np.int32))
    kw = dict(vocab_size=23, num_genres=2, num_layers=2, hidden=8, lookback=True, copy_groups=groups)
    fused, ref = models.Seq2Seq(**kw, stack_order=order), models.Seq2Seq(**kw, fused=False)
    params = fused.init(jax.random.key(4), **batch)["params"]
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(5), p.shape), params)
    a, b = (m.apply({"params": params}, **batch) for m in (fused, ref))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

    def loss(m):
        return lambda p: (m.apply({"params": p}, **batch) * jnp.arange(23) / 23).sum()

    ga, gb = (jax.grad(loss(m))(params) for m in (fused, ref))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), ga, gb)
    assert (
        float(jnp.abs(ga["lookback_note"]["embedding"]).sum()) > 0
        and float(jnp.abs(ga["copy"]["kernel"]).sum()) > 0
        and float(jnp.abs(ga["copy_group"]["kernel"]).sum()) > 0
    )
    carries = fused.apply(
        {"params": params}, batch["encoder_tokens"], batch["cond"], method=models.Seq2Seq.encode
    )
    steps = []
    for t in range(6):
        step_lb = (batch["lookback"][0][:, t], batch["lookback"][1][:, t])
        token = batch["decoder_inputs"][:, t]
        carries, logits = fused.apply({"params": params}, carries, token, batch["cond"], step_lb,
                                      method=models.Seq2Seq.decode_step)  # fmt: skip
        steps.append(logits)
    np.testing.assert_allclose(np.stack(steps, 1), a, rtol=1e-5, atol=1e-5)


def test_the_sampler_follows_the_lookback_as_a_step_by_step_reference_does():
    """A stub that writes the note its lookback gives (or the previous + 1 where none):
    the compiled sampler, across phrases and from a history longer than its window,
    writes what a Python loop over `Tracker` writes."""
    v = 40

    def encode(params, tokens, cond):
        return jnp.zeros(tokens.shape[0])

    def step(params, carry, token, cond, lb=None):
        note, bucket = lb
        nxt = jnp.where(bucket > 0, note, FIRST + (token + 1 - FIRST) % (v - FIRST))
        return carry, jax.nn.one_hot(nxt, v) * 10.0

    spec = lookback.Spec(window=8, first_note_id=FIRST)
    fn = sampler.make_sampler(encode, step, vocab_size=v, first_note_id=FIRST, phrase_len=3, num_phrases=4,
                              lookback_spec=spec)  # fmt: skip
    history = np.array([[0, 0, 1, 7, 8, 9, 7, 8, 9], [1, 20, 21, 22, 23, 24, 25, 26, 20]], np.int32)[:, -9:]
    history = np.pad(history, ((0, 0), (0, 0)))[:, :9]
    window = history[:, -4:]
    got = np.asarray(fn(None, jnp.asarray(window), Condition(jnp.zeros(2, jnp.int32)), jax.random.key(0),
                        sampler.Settings(greedy=True), jnp.asarray(history[:, -spec.window:])))  # fmt: skip
    # The reference: the tracker over the history, then note by note in Python.
    tracker = Tracker.of(jnp.asarray(history[:, -spec.window :]), spec)
    prev, want = jnp.asarray(window[:, -1]), []
    for _ in range(12):
        note, bucket = tracker.lookback(spec)
        token = jnp.where(bucket > 0, note, FIRST + (prev + 1 - FIRST) % (v - FIRST))
        want.append(np.asarray(token))
        tracker, prev = tracker.read(token, spec), token
    np.testing.assert_array_equal(got, np.stack(want, 1))
    assert (got[0, :3] == [7, 8, 9]).all()  # the first row goes on with its riff
    with pytest.raises(ValueError, match="takes the history"):
        fn(
            None,
            jnp.asarray(window),
            Condition(jnp.zeros(2, jnp.int32)),
            jax.random.key(0),
            sampler.Settings(),
        )


def test_windows_give_each_decoder_step_its_lookback_moved_with_the_window():
    phrase = FIRST + np.arange(0, 20, 2)
    seq = np.concatenate([[codec_lib.BOS], phrase, phrase, phrase, [codec_lib.EOS]]).astype(np.int32)
    pieces = windows.Pieces([seq], np.zeros(1, np.int32))
    spec = lookback.Spec(window=64, first_note_id=FIRST)
    notes, buckets = lookback.prefix(np.concatenate([np.zeros(3, np.int32), seq]), np.array([0]), 64, FIRST)
    tiled = windows.eval_windows(pieces, 4, 4, lookback_spec=spec)
    for w in range(tiled["windows"].shape[0]):
        # window w's decoder steps read sequence positions w * 4 .. w * 4 + 3 (after Te - 1 = 3 PADs)
        at = 3 + w * 4 + np.arange(4)
        np.testing.assert_array_equal(tiled["lookback"][w], notes[at])
        np.testing.assert_array_equal(tiled["lookback_bucket"][w], buckets[at])
    ids = np.arange(60)
    tables = np.stack([np.where(ids >= FIRST, ids + s, ids) for s in (-1, 0, 1)]).astype(np.int32)
    source = windows.TrainWindows([pieces], shard_ids=[0], batch_size=64, encoder_len=4, decoder_len=4,
                                  seed=0, transpose=tables, lookback_spec=spec)  # fmt: skip
    batch = source(0)
    assert batch["lookback"].shape == (64, 4) and (batch["lookback_bucket"] > 0).any()
    # The piece is one phrase three times: where a step has a lookback, it is the step's own
    # target (what the phrase played next), moved with the window by the same shift.
    repeat = (batch["lookback_bucket"] > 0) & (batch["targets"] >= FIRST)
    assert repeat.sum() > 50 and (batch["lookback"][repeat] == batch["targets"][repeat]).mean() > 0.9


def test_no_lookback_completes_a_loop():
    """A figure of 3 notes played over and over: once it has come 4 times in a row but its
    last note, the next note could complete a loop and nothing is offered to copy, nor
    after (in numpy and the carry)."""
    riff = FIRST + np.array([0, 4, 7])
    x = np.concatenate([[codec_lib.BOS], FIRST + np.arange(10, 20), np.tile(riff, 6)]).astype(np.int32)
    _, buckets = lookback.prefix(x, np.array([0]), 64, FIRST)
    start = 11  # the riff's first note
    assert (buckets[start + 3 : start + 3 * 3 + 1] > 0).all()  # its 2nd to 4th playing: a repeat
    assert (buckets[start + 3 * 3 + 1 :] == 0).all()  # 4 periods less a note: no lookback
    spec = lookback.Spec(64, FIRST)
    assert int(Tracker.of(jnp.asarray(x[None]), spec).lookback(spec)[1][0]) == 0


def test_an_untempered_copy_takes_the_lookback_note_with_its_own_odds_and_draws_the_rest_tempered():
    """The lookback note 7 has probability 0.3: the copy takes it for a first uniform below
    0.3, and above that a tempered draw among the others from the second uniform."""
    probs = np.array([0, 0, 0, 0, 0, 0, 0.2, 0.3, 0.1, 0.4])
    logits = jnp.log(jnp.asarray(np.maximum(probs, 1e-12)))[None].repeat(3, 0)
    u = jnp.asarray([[0.1, 0.0], [0.29, 0.99], [0.7, 0.99]])
    banned = sampler.banned_ids(10, 6)
    kw = dict(temperature=0.5, top_k=0, top_p=None, greedy=False, banned=banned)
    got = sampler.next_token(logits, u, copy=jnp.asarray([7, 7, 7]), **kw)
    assert got.tolist()[:2] == [7, 7] and int(got[2]) in (6, 8, 9)
    # The rest: the same draw as without the lookback note, from the second uniform.
    rest = sampler.next_token(logits.at[:, 7].set(sampler.NEG_INF), u[:, 1:], **kw)
    assert int(got[2]) == int(rest[2])
    none = sampler.next_token(logits[:1], u[:1], copy=jnp.asarray([-1]), **kw)
    assert int(none[0]) == int(sampler.next_token(logits[:1], u[:1, 1:], **kw)[0])  # no lookback: ordinary


def test_the_copy_group_needs_the_lookback_and_old_configs_have_none():
    from configs import default
    from jaxmusic import run_config
    from jaxmusic.errors import UsageError

    c = run_config.complete(default.get_config())
    assert models.from_config(c, 23, 2).copy_groups is not None  # on in the default
    c.model.lookback = False
    with pytest.raises(UsageError, match=r"copy_group needs config\.model\.lookback"):
        run_config.validate(c)
    old = c.to_dict()
    del old["model"]["copy_group"]
    old["model"]["lookback"] = True
    assert models.from_config(run_config.complete(old), 23, 2).copy_groups is None
