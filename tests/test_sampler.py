"""sampler + sample CLI + render: exact stub sequences, filters, EOS, files, bad input."""

import json
import wave

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmusic import codec as codec_lib
from jaxmusic import codec_fit, inference, midi_io, render, sample, sampler
from jaxmusic.conditioning import Condition

V, FIRST = 40, 6  # ids 0..5: PAD, BOS, EOS, UNK and two genres


def _stub(logit_fn):
    """A model whose next-token logits depend only on the previous token."""
    encode = lambda params, tokens, genre: jnp.zeros(tokens.shape[0])  # noqa: E731
    step = lambda params, carry, token, genre: (carry, logit_fn(token))  # noqa: E731
    return encode, step


def _run(logit_fn, window, *, phrase_len=3, num_phrases=4, key=0, **settings):
    fn = sampler.make_sampler(*_stub(logit_fn), vocab_size=V, first_note_id=FIRST,
                              phrase_len=phrase_len, num_phrases=num_phrases)  # fmt: skip
    window = jnp.asarray(window, jnp.int32)
    cond = Condition(jnp.zeros(window.shape[0], jnp.int32))
    return np.asarray(fn(None, window, cond, jax.random.key(key), sampler.Settings(**settings)))


def plus_one(token):
    return jax.nn.one_hot((token + 1) % V, V) * 10.0


def test_greedy_follows_previous_plus_one_across_phrases():
    out = _run(plus_one, [[0, 1, 7], [1, 9, 10]], greedy=True)
    np.testing.assert_array_equal(out[0], np.arange(8, 20))
    np.testing.assert_array_equal(out[1], np.arange(11, 23))


def _counting_model():
    """A stub whose state counts: the encoder gives the primer's note count, each decoder
    step adds one and asks for the note id its count names (so re-encoding and carrying
    the state write different notes)."""
    span = V - FIRST

    def encode(params, tokens, genre):
        return (tokens >= FIRST).sum(-1)

    def step(params, count, token, genre):
        count = count + 1
        return count, jax.nn.one_hot(FIRST + count % span, V) * 10.0

    return encode, step


def test_carried_state_equals_a_step_by_step_reference():
    encode, step = _counting_model()
    window = jnp.asarray([[0, 1, 7, 8], [1, 9, 10, 11]], jnp.int32)
    genre = Condition(jnp.zeros(2, jnp.int32))
    count, token, want = encode(None, window, genre), window[:, -1], []
    for _ in range(12):  # the reference: encode once, then one decoder step a note
        count, logits = step(None, count, token, genre)
        token = jnp.argmax(logits, -1)
        want.append(np.asarray(token))
    want = np.stack(want, 1)
    for phrase_len, num_phrases in ((3, 4), (12, 1), (1, 12)):
        fn = sampler.make_sampler(encode, step, vocab_size=V, first_note_id=FIRST, phrase_len=phrase_len,
                                  num_phrases=num_phrases)  # fmt: skip
        got = fn(None, window, genre, jax.random.key(0), sampler.Settings(greedy=True, carry_state=True))
        np.testing.assert_array_equal(np.asarray(got), want)
    # Re-encoding every phrase restarts the count from the window: other notes after phrase 1.
    fn = sampler.make_sampler(encode, step, vocab_size=V, first_note_id=FIRST, phrase_len=3, num_phrases=4)
    again = np.asarray(fn(None, window, genre, jax.random.key(0), sampler.Settings(greedy=True)))
    np.testing.assert_array_equal(again[:, :3], want[:, :3])
    assert (again[:, 3:] != want[:, 3:]).any()


def test_carried_encoder_equals_a_phrase_by_phrase_reference():
    """A sampler of carried windows: the encoder reads the primer, then each phrase
    written, from where it stopped; each phrase's decoder starts from the encoder."""
    encode, step = _counting_model()

    def encode_from(params, count, tokens, genre):  # weighs notes read twice: tells the paths apart
        return count + 2 * (tokens >= FIRST).sum(-1)

    window = jnp.asarray([[0, 1, 7, 8], [1, 9, 10, 11]], jnp.int32)
    genre = Condition(jnp.zeros(2, jnp.int32))
    state, token, want = encode(None, window, genre), window[:, -1], []
    for _ in range(4):  # phrases of 3
        count, phrase = state, []
        for _ in range(3):
            count, logits = step(None, count, token, genre)
            token = jnp.argmax(logits, -1)
            phrase.append(np.asarray(token))
        state = encode_from(None, state, jnp.asarray(np.stack(phrase, 1)), genre)
        want += phrase
    fn = sampler.make_sampler(encode, step, vocab_size=V, first_note_id=FIRST, phrase_len=3, num_phrases=4,
                              encode_from=encode_from)  # fmt: skip
    got = fn(None, window, genre, jax.random.key(0), sampler.Settings(greedy=True))
    np.testing.assert_array_equal(np.asarray(got), np.stack(want, 1))
    plain = sampler.make_sampler(encode, step, vocab_size=V, first_note_id=FIRST, phrase_len=3, num_phrases=4)
    assert (np.asarray(plain(None, window, genre, jax.random.key(0), sampler.Settings(greedy=True)))
            != np.stack(want, 1)).any()  # fmt: skip


def random_logits(token):
    return jax.vmap(lambda t: jax.random.normal(jax.random.fold_in(jax.random.key(42), t), (V,)))(token) * 3


def test_top_k_one_equals_greedy():
    window = [[0, 1, 7], [1, 8, 12], [1, 9, 30]]
    greedy = _run(random_logits, window, greedy=True)
    for key in range(3):
        np.testing.assert_array_equal(_run(random_logits, window, top_k=1, key=key), greedy)


def test_top_p_keeps_exactly_the_nucleus():
    probs = np.array([[0.5, 0.2, 0.15, 0.1, 0.05]])
    logits = jnp.log(jnp.asarray(probs))
    # The smallest set whose mass reaches p (values off the exact sums 0.5, 0.7, 0.85, 0.95).
    for p, kept in [(0.01, 1), (0.49, 1), (0.51, 2), (0.69, 2), (0.71, 3), (0.94, 4), (0.96, 5), (1.0, 5)]:
        out = np.asarray(sampler.filter_logits(logits, 0, p))
        assert (out > sampler.NEG_INF / 2).sum() == kept, p
        assert np.all(out[0, :kept] > sampler.NEG_INF / 2)  # the most probable ones


def test_nucleus_by_bisection_equals_the_sorted_nucleus():
    """The bisection threshold keeps exactly the ids a sort-and-cumsum nucleus keeps."""
    rng = np.random.default_rng(5)
    logits = jnp.asarray(rng.normal(0, rng.uniform(0.3, 4.0, (64, 1)), (64, 300)), jnp.float32)
    logits = logits.at[:8, :5].set(logits[:8, :1])  # ties at the top of some rows
    probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    for p in (0.05, 0.5, 0.9, 0.95, 0.999):
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]
        sorted_probs = jax.nn.softmax(ordered, axis=-1)
        n_keep = ((jnp.cumsum(sorted_probs, axis=-1) - sorted_probs) < p).sum(-1, keepdims=True)
        want = np.asarray(logits >= jnp.take_along_axis(ordered, n_keep - 1, axis=-1))
        got = np.asarray(sampler.filter_logits(logits, 0, p) > sampler.NEG_INF / 2)
        # Equal but where the mass above an id is p to float32 rounding (the two sum in
        # different orders).
        above = np.array([[r[r > x].sum() for x in r] for r in probs])
        differ = got != want
        assert np.all(np.abs(above[differ] - p) < 1e-5), (p, above[differ])
        assert differ.sum() <= 2 and got.sum() > 0


def test_top_k_keeps_the_k_largest():
    logits = jnp.asarray([[1.0, 5.0, 3.0, 4.0, 2.0]])
    out = np.asarray(sampler.filter_logits(logits, 2, 1.0))
    assert np.flatnonzero(out[0] > sampler.NEG_INF / 2).tolist() == [1, 3]


def test_special_ids_are_never_drawn():
    def favour_specials(token):
        return jnp.broadcast_to(jnp.where(jnp.arange(V) < FIRST, 10.0, 0.0), (token.shape[0], V))

    out = _run(favour_specials, [[0, 1, 7]] * 8, num_phrases=8, temperature=5.0)
    drawn = set(out.ravel().tolist())
    assert codec_lib.EOS in drawn  # EOS may end a piece...
    assert not drawn & {codec_lib.BOS, codec_lib.UNK, 4, 5}  # ...the other specials never appear


def test_eos_ends_a_sample():
    def eos_after_ten(token):
        return jnp.where((token == 10)[:, None], jax.nn.one_hot(codec_lib.EOS, V) * 10, plus_one(token))

    out = _run(eos_after_ten, [[0, 1, 7], [0, 1, 20]], greedy=True)
    np.testing.assert_array_equal(out[0], [8, 9, 10, codec_lib.EOS] + [codec_lib.PAD] * 8)
    np.testing.assert_array_equal(out[1], np.arange(21, 33))
    # fixed_length: EOS is never drawn; after 10 every other note ties, and the first (6) comes.
    fixed = _run(eos_after_ten, [[0, 1, 7], [0, 1, 20]], greedy=True, fixed_length=True)
    np.testing.assert_array_equal(fixed[0], [8, 9, 10, 6, 7, 8, 9, 10, 6, 7, 8, 9])
    np.testing.assert_array_equal(fixed[1], np.arange(21, 33))


def test_min_notes_holds_eos_back():
    def always_eos(token):
        return jnp.where(True, jax.nn.one_hot(codec_lib.EOS, V) * 10, plus_one(token))

    # One sample, EOS as soon as the sampler lets it: at once, or after min_notes notes.
    assert _run(always_eos, [[0, 1, 7]], greedy=True, min_notes=0)[0, 0] == codec_lib.EOS
    out = _run(always_eos, [[0, 1, 7]], greedy=True, min_notes=4)[0]  # 4 notes span two phrases of 3
    assert (out[:4] >= FIRST).all() and out[4] == codec_lib.EOS and (out[5:] == codec_lib.PAD).all()
    assert _run(always_eos, [[0, 1, 7]], greedy=True)[0, 1] == codec_lib.EOS  # the default: one note


def test_compiles_once_per_shape():
    traces = []

    def counted(token):
        traces.append(1)
        return plus_one(token)

    fn = sampler.make_sampler(*_stub(counted), vocab_size=V, first_note_id=FIRST, phrase_len=2, num_phrases=3)
    window = jnp.asarray([[0, 1, 7]], jnp.int32)
    for t, p in [(1.0, 0.95), (0.5, 0.9), (2.0, 0.3)]:  # one mode: new values do not recompile
        fn(None, window, Condition(jnp.zeros(1, jnp.int32)), jax.random.key(0),
           sampler.Settings(temperature=t, top_p=p))  # fmt: skip
    assert len(traces) == 1
    for t, p in [(1.0, 1.0), (0.7, 1.0)]:  # no nucleus: a second program, once
        fn(None, window, Condition(jnp.zeros(1, jnp.int32)), jax.random.key(0),
           sampler.Settings(temperature=t, top_p=p))  # fmt: skip
    assert len(traces) == 2


@pytest.mark.parametrize(
    "settings",
    [dict(greedy=True), dict(top_k=0, top_p=1.0), dict(top_k=5, top_p=1.0), dict(top_k=0, top_p=0.9),
     dict(top_k=0, top_p=0.9, untempered_rhythm=True)],
)  # fmt: skip
def test_each_mode_compiles_without_a_per_note_branch(settings):
    s = dict(top_k=0, top_p=1.0, greedy=False) | settings
    groups = np.eye(4, dtype=np.float32)[np.arange(V) % 4]
    fn = sampler.make_sampler(
        *_stub(plus_one), vocab_size=V, first_note_id=FIRST, phrase_len=2, num_phrases=3, groups=groups
    )
    window = jnp.asarray([[0, 1, 7]], jnp.int32)
    jitted = fn.jitted(sampler.Mode.of(sampler.Settings(**s)))
    cond = Condition(jnp.zeros(1, jnp.int32))
    text = jitted.trace(None, window, cond, jax.random.key(0), 1.0, 0.9).lower().as_text()
    assert "stablehlo.case" not in text and "stablehlo.if" not in text
    assert "stablehlo.sort" not in text  # the nucleus by bisection, top-k by TopK: no sort of the vocabulary
    assert ("TopK" in text or "top_k" in text) == (s["top_k"] > 0 and not s["greedy"])


def test_top_k_then_nucleus_filters_within_the_top_k():
    probs = np.array([[0.05, 0.5, 0.1, 0.2, 0.15]])
    logits = jnp.log(jnp.asarray(probs))
    out = np.asarray(sampler.filter_logits(logits, 3, 0.7))  # top 3: 0.5, 0.2, 0.15 -> 0.59, 0.24, 0.18
    assert np.flatnonzero(out[0] > sampler.NEG_INF / 2).tolist() == [1, 3]


def test_primer_window_pads_and_truncates():
    assert sampler.primer_window([], 3) == [0, 0, 1]
    assert sampler.primer_window([9, 10], 4) == [0, 1, 9, 10]
    assert sampler.primer_window([9, 10, 11, 12], 3) == [10, 11, 12]


# --- the CLI, on a tiny model trained once (conftest.trained) --------------


def _sample(workdir, out_dir, *extra):
    return sample.main(["--workdir", str(workdir), "--out_dir", str(out_dir), "--num_outputs", "2",
                        "--num_notes", "20", *extra])  # fmt: skip


def test_cli_writes_playable_midi_and_describes_it(trained, tmp_path, capsys):
    assert _sample(trained, tmp_path, "--seed", "3", "--genre", "jazz", "--top_p", "0.9") == 0
    records = json.loads((tmp_path / "samples.json").read_text())
    assert [r["file"] for r in records] == ["sample_000.mid", "sample_001.mid"]
    for r in records:
        assert r["seed"] == 3 and r["genre"] == "jazz" and r["settings"]["top_p"] == 0.9
        notes = midi_io.read(tmp_path / r["file"]).notes
        assert notes.shape[0] == r["notes"] > 0
        assert (
            np.all(notes["end"] > notes["start"]) and 0 <= notes["pitch"].min() <= notes["pitch"].max() <= 127
        )
    assert "sample_000.mid" in capsys.readouterr().out


def test_cli_renders_wav_with_sound_and_png(trained, tmp_path):
    assert _sample(trained, tmp_path, "--wav", "--png") == 0
    records = json.loads((tmp_path / "samples.json").read_text())
    assert len(records) == 2
    for r in records:
        with wave.open(str(tmp_path / r["wav"])) as w:
            frames = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64)
        assert np.sqrt(np.mean(frames**2)) > 10  # sound, not silence
        assert (tmp_path / r["png"]).read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_bytes(trained, tmp_path):
    for d in ("a", "b"):
        assert _sample(trained, tmp_path / d, "--seed", "5") == 0
    for name in ("sample_000.mid", "sample_001.mid", "samples.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert _sample(trained, tmp_path / "c", "--seed", "6") == 0
    assert (tmp_path / "c" / "sample_000.mid").read_bytes() != (
        tmp_path / "a" / "sample_000.mid"
    ).read_bytes()


def test_cli_samples_in_bfloat16(trained, tmp_path):
    """--dtype bfloat16 samples a float32-trained model with bfloat16 products, and says so."""
    assert _sample(trained, tmp_path, "--dtype", "bfloat16", "--greedy") == 0
    records = json.loads((tmp_path / "samples.json").read_text())
    assert [r["dtype"] for r in records] == ["bfloat16"] * 2
    assert all(midi_io.read(tmp_path / r["file"]).notes.shape[0] == r["notes"] > 0 for r in records)
    assert _sample(trained, tmp_path / "f32", "--greedy") == 0
    assert json.loads((tmp_path / "f32" / "samples.json").read_text())[0]["dtype"] == "float32"


def test_primers_midi_and_split(trained, tmp_path, collection):
    primer = collection[0] / "jazz" / "piece1.mid"
    assert _sample(trained, tmp_path / "m", "--primer_midi", str(primer), "--greedy") == 0
    r = json.loads((tmp_path / "m" / "samples.json").read_text())[0]
    assert r["primer"]["kind"] == "midi" and r["primer"]["notes"] == midi_io.read(primer).notes.shape[0]
    assert _sample(trained, tmp_path / "s", "--primer_split", "validation") == 0
    r = json.loads((tmp_path / "s" / "samples.json").read_text())[0]
    assert r["primer"]["kind"] == "split" and r["primer"]["split"] == "validation"


def test_seconds_gives_that_length(trained, tmp_path):
    assert sample.main(["--workdir", str(trained), "--out_dir", str(tmp_path), "--num_outputs", "1",
                        "--seconds", "3"]) == 0  # fmt: skip
    notes = midi_io.read(tmp_path / "sample_000.mid").notes
    assert notes["end"].max() <= 3.0 + 1e-3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--temperature", "0"], "--temperature must be > 0"),
        (["--top_p", "1.5"], "--top_p must be in (0, 1]"),
        (["--top_p", "0"], "--top_p must be in (0, 1]"),
        (
            ["--genre", "polka"],
            "--genre 'polka' is unknown; this model knows: classical, jazz, pop, rock, unknown",
        ),
    ],
)
def test_cli_bad_settings(trained, tmp_path, capsys, extra, message):
    assert _sample(trained, tmp_path, *extra) == 2
    assert message in capsys.readouterr().err


def test_cli_bad_paths(trained, tmp_path, capsys):
    assert _sample(tmp_path / "empty", tmp_path / "o") == 2
    assert "no checkpoint in it" in capsys.readouterr().err
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"<html></html>")
    assert _sample(trained, tmp_path / "o", "--primer_midi", str(bad)) == 2
    assert "looks like HTML" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _sample(trained, blocker / "out") == 2
    assert "cannot write there" in capsys.readouterr().err


def test_render_wav_and_png(tmp_path):
    start = np.arange(4) * 0.5
    midi_io.write(midi_io.make_notes(start, start + 0.4, [60, 64, 67, 72], 90), tmp_path / "a.mid")
    wav = render.to_wav(tmp_path / "a.mid", tmp_path / "a.wav")
    with wave.open(str(wav)) as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        seconds = w.getnframes() / w.getframerate()
    assert seconds == pytest.approx(1.9 + render.TAIL_SECONDS, abs=0.01)
    assert np.abs(frames).max() > 1000  # sound, not silence
    png = render.piano_roll(tmp_path / "a.mid", tmp_path / "a.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_draws_follow_the_distribution():
    probs = np.array([0.0, 0.0, 0.1, 0.0, 0.2, 0.7])  # zero-probability ids among them
    logits = jnp.log(jnp.asarray(np.tile(probs, (20_000, 1))))
    banned = jnp.zeros(6, bool)
    u = sampler.uniforms(jax.random.key(0), (20_000, 1))
    drawn = np.asarray(sampler.next_token(logits, u, temperature=1.0, top_k=0, top_p=1.0,
                                          greedy=False, banned=banned))  # fmt: skip
    freq = np.bincount(drawn, minlength=6) / drawn.size
    assert freq[[0, 1, 3]].sum() == 0
    np.testing.assert_allclose(freq, probs, atol=0.01)


@pytest.mark.parametrize("vocab", [6, 64, 200])  # under a block, one block, blocks and a remainder
def test_inverse_cdf_by_blocks_equals_one_prefix_sum(vocab):
    """The draw by blocks is the first id whose cumulative weight exceeds u x total, as a
    prefix sum over the whole vocabulary gives, and never an id of weight 0, even at
    u next to 1."""
    rng = np.random.default_rng(vocab)
    weights = rng.random((300, vocab)).astype(np.float32) * (rng.random((300, vocab)) < 0.3)
    weights[:50, vocab // 2 + 1 :] = 0  # whole blocks of weight 0 after the last id drawable
    weights[np.arange(300), rng.integers(vocab // 2 + 1, size=300)] += 0.5  # an id of weight > 0 in every row
    u = rng.random((300, 1)).astype(np.float32)
    u[:5] = np.float32(1 - 2**-24)  # the largest uniform below 1
    got = np.asarray(sampler.inverse_cdf(jnp.asarray(weights), jnp.asarray(u), block=64))
    cdf = np.cumsum(weights.astype(np.float64), -1)
    want = (cdf < u * cdf[:, -1:]).sum(-1)
    assert (weights[np.arange(300), got] > 0).all()
    # Equal, but for u within float32 rounding of a boundary between two ids.
    near = np.abs(cdf[np.arange(300), np.minimum(want, vocab - 1)] - u[:, 0] * cdf[:, -1]) < 1e-5 * cdf[:, -1]
    assert ((got == want) | near).all() and (got == want).mean() > 0.95


def test_inverse_cdf_stays_in_the_last_block_when_its_sums_round_apart():
    """Weights over nine decades: a block's total and its own prefix sum round apart
    (the unguarded index went one past the vocabulary in 4% of these rows); at the
    largest uniform below 1 the draw is still an id of weight > 0, at the top end of
    the mass."""
    rng = np.random.default_rng(0)
    weights = (10.0 ** rng.uniform(-9, 0, (2000, 64))).astype(np.float32)
    weights[:1000, 40:] = 0  # and rows whose last ids weigh nothing
    u = np.full((2000, 1), 1 - 2**-24, np.float32)
    got = np.asarray(sampler.inverse_cdf(jnp.asarray(weights), jnp.asarray(u), block=64))
    assert (got < 64).all() and (weights[np.arange(2000), got] > 0).all()
    after = np.where(np.arange(64) > got[:, None], weights, 0).sum(-1)
    assert (after <= 1e-5 * weights.sum(-1)).all()  # the draw is at the top end of the mass


def test_untempered_rhythm_draws_the_group_from_the_model_then_the_id_within_it():
    """Id 0 alone in its group holds half the mass (a chord's likely note); ids 1..10
    share the other half in another group, id 1 the most of them (a next onset). A
    nucleus of 0.5 drawing every id at once keeps id 0 alone; drawing the group first
    keeps the model's half and half, then the nucleus and temperature act within the group."""
    within = np.array([0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    probs = np.concatenate([[0.5], 0.5 * within])
    groups = (sampler.GroupTable.of(np.eye(2, dtype=np.float32)[[0] + [1] * 10]),)
    logits = jnp.log(jnp.asarray(np.tile(probs, (20_000, 1)), jnp.float32))
    kw = dict(top_k=0, greedy=False, banned=jnp.zeros(11, bool))
    plain = np.asarray(sampler.next_token(logits, sampler.uniforms(jax.random.key(0), (20_000, 1)),
                                          temperature=1.0, top_p=0.5, **kw))  # fmt: skip
    assert (plain == 0).all()
    u = sampler.uniforms(jax.random.key(1), (20_000, 2))
    drawn = np.asarray(sampler.next_token(logits, u, temperature=1.0, top_p=0.5, groups=groups, **kw))
    freq = np.bincount(drawn, minlength=11) / drawn.size
    assert freq[0] == pytest.approx(0.5, abs=0.015)
    # Within the other group the nucleus of 0.5 keeps 0.3 and the five ids of 0.1 (ties
    # kept): id 1 is 0.3 / 0.8 of it.
    np.testing.assert_allclose(freq[1:7], 0.5 * np.array([3, 1, 1, 1, 1, 1]) / 8, atol=0.015)
    assert freq[7:].sum() == 0
    cold = np.asarray(sampler.next_token(logits, u, temperature=0.05, top_p=1.0, groups=groups, **kw))
    assert set(np.unique(cold).tolist()) == {0, 1}  # the group as the model has it, then its best id
    assert (cold == 0).mean() == pytest.approx(0.5, abs=0.015)


def test_rhythm_groups_are_the_onset_gap_bins():
    start = np.array([0.0, 0.0, 0.5, 1.5, 1.5, 3.0])
    notes = midi_io.make_notes(start, start + 0.4, np.array([60, 64, 62, 60, 67, 65]), np.full(6, 80))
    codec = codec_fit.fit([notes], min_count=1)
    groups = sampler.rhythm_groups(codec)
    rows = np.asarray(codec.vocabulary)
    assert groups.shape[0] == codec.vocab_size and (groups.sum(1) == 1).all()
    group = groups.argmax(1)
    eos = group[codec_lib.EOS]
    assert (group == eos).sum() == 1  # EOS alone
    ids = codec.first_note_id + np.arange(rows.shape[0])
    for a in ids:
        for b in ids:
            assert (group[a] == group[b]) == (
                rows[a - codec.first_note_id, 3] == rows[b - codec.first_note_id, 3]
            )


def test_groups_in_turn_draw_the_rhythm_then_the_instrument_from_the_model():
    """Ids 0..3 at gap 0 and ids 4..11 at gap 1; ids 0 and 4 are the drums (one likely
    sound each), the others a pitched instrument spread over many notes. Drawn gap, then
    instrument, from the model's own odds, every (gap, instrument) keeps its mass; the
    nucleus then acts within it. Drawing only the gap first leaves the drums their
    nucleus' advantage."""
    gap = np.array([0] * 4 + [1] * 8)
    inst = np.array([0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1])
    probs = np.array([0.3, 0.1, 0.1, 0.1, 0.2, *[0.2 / 7] * 7])
    tables = (sampler.GroupTable.of(np.eye(2)[gap]), sampler.GroupTable.of(np.eye(2)[inst]))
    logits = jnp.log(jnp.asarray(np.tile(probs, (20_000, 1)), jnp.float32))
    kw = dict(top_k=0, greedy=False, banned=jnp.zeros(12, bool), temperature=1.0, top_p=0.5)
    both = np.asarray(sampler.next_token(logits, sampler.uniforms(jax.random.key(2), (20_000, 3)),
                                         groups=tables, **kw))  # fmt: skip
    joint = np.zeros((2, 2))
    np.add.at(joint, (gap[both], inst[both]), 1 / both.size)
    want = np.zeros((2, 2))
    np.add.at(want, (gap, inst), probs)
    np.testing.assert_allclose(joint, want, atol=0.015)
    rhythm = np.asarray(sampler.next_token(logits, sampler.uniforms(jax.random.key(2), (20_000, 2)),
                                           groups=tables[:1], **kw))  # fmt: skip
    assert (inst[rhythm] == 0).mean() > want[:, 0].sum() + 0.2  # the drums win the nucleus of each gap


def test_instrument_groups_give_each_instrument_and_the_special_ids_a_group():
    table = np.array([-1, -1, -1, 0, 2, 1, 2, 0], np.int32)
    groups = sampler.instrument_groups(table)
    np.testing.assert_array_equal(groups.argmax(1), [3, 3, 3, 0, 2, 1, 2, 0])
    assert (groups.sum(1) == 1).all() and groups.dtype == np.float32
    assert sampler.instrument_groups(np.array([-1, -1, 0, 0], np.int32)) is None  # merged: nothing to draw


def test_untempered_instruments_in_the_sampler():
    """Under a model that gives id FIRST (instrument 0) half the mass and spreads the rest
    over instrument 1's ids, a cold draw writes only FIRST, an untempered instrument half
    and half; with one instrument the setting draws exactly as without it."""
    table = np.where(np.arange(V) >= FIRST, (np.arange(V) > FIRST).astype(np.int32), -1).astype(np.int32)
    logits = np.full(V, np.log(0.5 / (V - FIRST - 1)), np.float32)
    logits[FIRST] = np.log(0.5)
    logits[:FIRST] = -1e9
    model = _stub(lambda token: jnp.broadcast_to(jnp.asarray(logits), (token.shape[0], V)))
    window = jnp.zeros((64, 3), jnp.int32).at[:, -1].set(codec_lib.BOS)
    cond = Condition(jnp.zeros(64, jnp.int32))

    def draw(instruments, **settings):
        fn = sampler.make_sampler(*model, vocab_size=V, first_note_id=FIRST, phrase_len=8, num_phrases=4,
                                  instruments=instruments)  # fmt: skip
        s = sampler.Settings(temperature=0.05, fixed_length=True, **settings)
        return np.asarray(fn(None, window, cond, jax.random.key(0), s))

    assert (draw(table) == FIRST).all()
    share = (draw(table, untempered_instruments=True) == FIRST).mean()
    assert share == pytest.approx(0.5, abs=0.05)
    merged = np.where(table >= 0, 0, -1).astype(np.int32)
    np.testing.assert_array_equal(draw(merged, untempered_instruments=True), draw(merged))
    with pytest.raises(sampler.UsageError, match="untempered_instruments"):
        draw(None, untempered_instruments=True)


def test_untempered_rhythm_needs_a_sampler_with_groups():
    fn = sampler.make_sampler(
        *_stub(plus_one), vocab_size=V, first_note_id=FIRST, phrase_len=2, num_phrases=1
    )
    with pytest.raises(sampler.UsageError, match="untempered_rhythm"):
        fn(None, jnp.zeros((1, 3), jnp.int32), Condition(jnp.zeros(1, jnp.int32)), jax.random.key(0),
           sampler.Settings(untempered_rhythm=True))  # fmt: skip


class _KeyWriter:
    """A stand-in for a compiled sampler that writes, for each row, ids drawn from the
    key it was given, and records the window and condition it received."""

    notes_per_call = 4

    def __init__(self):
        self.calls = []

    def __call__(self, params, window, cond, rng, settings, history=None, line_up=None):
        self.calls.append((np.asarray(window), np.asarray(cond.genre)))
        ids = jax.random.randint(rng, (window.shape[0], self.notes_per_call), FIRST, V)
        return np.asarray(ids, np.int32)


def test_generate_draws_each_call_from_the_key_folded_with_its_rows_and_continuation():
    """The call for the rows from index s, continuation c, draws with fold_in(key(seed), s *
    max_calls + c): the same seed, primers and settings give the same notes, batch by
    batch and call by call."""
    from configs import tiny

    seed, max_calls = 7, 2
    fn = _KeyWriter()
    config = tiny.get_config()
    config.encoder_len, config.model.key_input, config.model.density_input = 3, False, False
    generator = inference.Generator(config, None, vocab_size=V, num_genres=FIRST - codec_lib.NUM_SPECIAL)
    generator.sampler = lambda num_notes, phrase_len=None: fn
    primers, genres = [[FIRST], [FIRST + 1], [FIRST + 2]], np.array([0, 1, 0], np.int32)
    written = generator.generate(primers, genres, num_notes=4, settings=sampler.Settings(), seed=seed,
                                 batch=2, max_calls=max_calls, done=lambda rows: False)  # fmt: skip
    assert written.shape == (3, 8) and len(fn.calls) == 4  # two batches (the second padded), two calls each
    for start in (0, 2):
        for call in range(max_calls):
            k = jax.random.fold_in(jax.random.key(seed), start * max_calls + call)
            expected = np.asarray(jax.random.randint(k, (2, 4), FIRST, V))[: 3 - start]
            np.testing.assert_array_equal(written[start : start + 2, 4 * call : 4 * call + 4], expected)
    window, genre = fn.calls[2]  # the second batch's first call: row 2 and its padding copy
    np.testing.assert_array_equal(window, [[codec_lib.PAD, codec_lib.BOS, FIRST + 2]] * 2)
    assert window.dtype == np.int32 and genre.tolist() == [0, 0]


def test_a_drums_only_render_is_not_silent(tmp_path):
    start = np.arange(8) * 0.25
    kit = midi_io.make_notes(start, start + 0.1, [36, 38, 42, 38] * 2, 100, is_drum=True)
    midi_io.write(kit, tmp_path / "kit.mid")
    audio = render.synthesize(midi_io.read(tmp_path / "kit.mid", include_drums=True).notes)
    assert np.abs(audio).max() > 0.05  # General MIDI's kit on channel 10, not silence


def test_a_loud_band_is_scaled_to_full_scale_not_clipped():
    """40 notes at velocity 127 at once, on eight programs and the kit, pass full scale
    about threefold: the whole mix is scaled down (one peak at 1), not clipped (a run of
    samples flat at 1, heard as crackle)."""
    n = 40
    notes = midi_io.make_notes(np.zeros(n), np.ones(n), 36 + np.arange(n) % 24, 127, (np.arange(n) % 8) * 8,
                               np.arange(n) % 5 == 0)  # fmt: skip
    audio = render.synthesize(notes)
    assert np.abs(audio).max() == pytest.approx(1.0, abs=1e-6)
    assert int((np.abs(audio) > 0.999).sum()) < 4
    quiet = render.synthesize(notes[:1])  # one note: as the soundfont plays it, not raised
    assert 0.01 < np.abs(quiet).max() < 0.9


def test_a_band_sample_has_a_track_per_instrument_with_its_program_and_drums_on_channel_10(
    trained_band, collection, tmp_path
):
    import mido
    import pretty_midi

    _, workdir = trained_band
    generator = inference.Generator.load(workdir)
    codec = generator.codec
    assert codec.instruments.mode == "family" and codec.has_drums
    # The writer on a known band: the fixture's rock piece (organ, program 16) with drums.
    primer = collection[0] / "rock" / "piece1.mid"
    notes = codec.decode(codec.encode(midi_io.read(primer, include_drums=True).notes))
    midi_io.write(notes, tmp_path / "band.mid")
    on = [m for m in mido.MidiFile(tmp_path / "band.mid") if m.type == "note_on" and m.velocity]
    drum_hits = [m for m in on if m.channel == 9]
    assert len(drum_hits) == 8 and all(m.note in (36, 38) for m in drum_hits)  # helpers.DRUMS
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "band.mid"))
    tracks = sorted((i.program, i.is_drum, len(i.notes)) for i in pm.instruments)
    assert tracks == [(0, True, 8), (16, False, 24)]
    # The CLI: whatever it writes, each track plays its instrument's written program, drums on 10.
    assert _sample(workdir, tmp_path / "cli", "--primer_midi", str(primer), "--num_notes", "120") == 0
    records = json.loads((tmp_path / "cli" / "samples.json").read_text())
    assert records[0]["primer"]["notes_of_instruments_not_in_the_codec"] == 0
    for r in records:
        pm = pretty_midi.PrettyMIDI(str(tmp_path / "cli" / r["file"]))
        counts = {}
        for inst in pm.instruments:
            name = "drums" if inst.is_drum else midi_io.INSTRUMENT_NAMES[inst.program // 8]
            assert inst.is_drum or inst.program in codec.instruments.programs
            counts[name] = counts.get(name, 0) + len(inst.notes)
        assert counts == r["instruments"] and sum(counts.values()) == r["notes"]
        channels = {m.channel for m in mido.MidiFile(tmp_path / "cli" / r["file"]) if m.type == "note_on"}
        assert (9 in channels) == ("drums" in counts)


def test_the_band_named_is_the_band_that_plays(trained_band, trained, collection, tmp_path, capsys):
    """--instruments: every note of every sample on the instruments named, whatever the
    primer plays; an instrument the codec does not name, or a merged codec: one line, exit
    2, nothing written."""
    _, workdir = trained_band
    primer = str(collection[0] / "rock" / "piece1.mid")  # organ and drums
    assert _sample(workdir, tmp_path / "b", "--primer_midi", primer, "--instruments", "guitar,drums",
                   "--num_notes", "60", "--fixed_length") == 0  # fmt: skip
    records = json.loads((tmp_path / "b" / "samples.json").read_text())
    for r in records:
        assert r["line_up"] == ["guitar", "drums"] and r["notes"] == 60
        assert set(r["instruments"]) <= {"guitar", "drums"}  # not the primer's organ
    capsys.readouterr()
    bad = (
        (workdir, "kazoo,drums", "kazoo: not one of piano"),
        (trained, "drums", "merged"),
        (workdir, "drums,sound effects", "sound effects: no note of the training data"),
    )
    for run, flag, reason in bad:
        assert _sample(run, tmp_path / "bad", "--instruments", flag) == 2
        err = capsys.readouterr().err
        assert "--instruments" in err and reason in err and err.count("\n") == 1
        assert not (tmp_path / "bad" / "samples.json").exists()


def test_primer_instruments_keeps_each_rows_line_up():
    """Ids of three instruments (id % 3) under a flat model: a row whose primer plays
    instrument 0 writes only its notes, a row of instruments 1 and 2 only theirs, and a
    primer without notes bans none."""
    table = np.where(np.arange(V) >= FIRST, np.arange(V) % 3, -1).astype(np.int32)
    of = {k: [i for i in range(FIRST, V) if i % 3 == k] for k in range(3)}
    window = [[of[0][0], of[0][1], of[0][2]], [of[1][0], of[2][0], of[1][1]], [0, 0, codec_lib.BOS]]
    flat = _stub(lambda token: jnp.zeros((token.shape[0], V)))
    fn = sampler.make_sampler(*flat, vocab_size=V, first_note_id=FIRST, phrase_len=4, num_phrases=8,
                              instruments=table)  # fmt: skip
    cond = Condition(jnp.zeros(3, jnp.int32))
    settings = sampler.Settings(fixed_length=True, primer_instruments=True)
    out = np.asarray(fn(None, jnp.asarray(window, jnp.int32), cond, jax.random.key(0), settings))
    assert set(table[out[0]]) == {0} and set(table[out[1]]) == {1, 2} and set(table[out[2]]) == {0, 1, 2}
    plain = np.asarray(fn(None, jnp.asarray(window, jnp.int32), cond, jax.random.key(0),
                          sampler.Settings(fixed_length=True)))  # fmt: skip
    assert set(table[plain[0]]) == {0, 1, 2}  # off: every instrument
    with pytest.raises(sampler.UsageError, match="primer_instruments"):
        without = sampler.make_sampler(*flat, vocab_size=V, first_note_id=FIRST, phrase_len=2, num_phrases=1)
        without(None, jnp.asarray(window, jnp.int32), cond, jax.random.key(0), settings)
    # A line-up named per row wins over the primer's, with primer_instruments or without.
    line_up = jnp.asarray([[False, True, False], [True, False, True], [False, False, True]])
    for named in (settings, sampler.Settings(fixed_length=True)):
        out = np.asarray(fn(None, jnp.asarray(window, jnp.int32), cond, jax.random.key(0), named, None,
                            line_up))  # fmt: skip
        assert set(table[out[0]]) == {1} and set(table[out[1]]) == {0, 2} and set(table[out[2]]) == {2}
    with pytest.raises(sampler.UsageError, match="line-up"):
        without(None, jnp.asarray(window, jnp.int32), cond, jax.random.key(0), sampler.Settings(), None,
                line_up)  # fmt: skip
