"""conditioning: the key and density estimator (numpy and its JAX twin), the condition of
batches and sampling calls, the common key, and a model that hears its condition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmusic import codec as codec_lib
from jaxmusic import codec_fit, conditioning, inference, midi_io, models, music_stats, sampler
from jaxmusic.conditioning import NO_DENSITY, NO_KEY, Condition, Conditioner

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]
NAMES = conditioning.KEY_NAMES


def _codec_and_pieces(seed=0, pieces=12):
    rng = np.random.default_rng(seed)
    notes = []
    for _ in range(pieces):
        n = int(rng.integers(2, 40))
        start = np.cumsum(rng.choice([0.0, 0.25, 0.5], n))
        pitch = rng.integers(48, 84, n)
        if rng.random() < 0.5:  # half the pieces in a key, so that keys vary
            pitch = rng.choice(np.array(C_MAJOR) + int(rng.integers(0, 12)), n)
        notes.append(midi_io.sort_notes(midi_io.make_notes(start, start + rng.choice([0.2, 0.5, 1.0], n),
                                                           pitch, rng.integers(40, 110, n))))  # fmt: skip
    return codec_fit.fit(notes, min_count=1), notes


def _conditioner(codec, *, density=False, context="piece", common=None):
    return Conditioner(key=True, density=density, context=context, weights=conditioning.id_weights(codec),
                       common_key=common)  # fmt: skip


def _padded(codec, pieces):
    width = max(len(p) for p in pieces)
    ids = np.zeros((len(pieces), width), np.int32)  # PAD-padded rows
    for i, p in enumerate(pieces):
        ids[i, : len(p)] = codec.encode(p)
    return ids


def test_the_estimator_and_its_twin_equal_music_stats_on_decoded_notes():
    """The key of ids (numpy, and the JAX twin of compiled code) is the key of their
    decoded notes (`music_stats.estimate_key`)."""
    codec, pieces = _codec_and_pieces()
    ids = _padded(codec, pieces)
    c = _conditioner(codec)
    numpy_keys = c.of_tokens(list(ids))[0]
    jax_keys = np.asarray(c.of_window_jax(jnp.asarray(ids), jnp.zeros(len(ids), jnp.int32)).key)
    want = [music_stats.estimate_key(codec.decode(row[row != codec_lib.PAD])) for row in ids]
    assert numpy_keys.tolist() == jax_keys.tolist() == want
    assert len(set(want)) > 2  # the fixture has several keys
    hist = np.random.default_rng(1).random((200, 12)) * (np.random.default_rng(2).random((200, 12)) < 0.6)
    twin = conditioning.key_of_jax(jnp.asarray(hist, jnp.float32))
    np.testing.assert_array_equal(conditioning.key_of(hist), np.asarray(twin))


def test_scales_and_silence_have_the_keys_they_should():
    start = np.arange(8) * 0.5
    scale = midi_io.make_notes(start, start + 0.5, np.array(C_MAJOR), np.full(8, 80))
    a_minor = midi_io.make_notes(
        start, start + 0.5, np.array([57, 59, 60, 62, 64, 65, 68, 69]), np.full(8, 80)
    )
    codec = codec_fit.fit([scale, a_minor], min_count=1)
    tokens = np.stack([codec.encode(scale), codec.encode(a_minor), np.zeros(8, np.int32)])
    got = _conditioner(codec).of_window_jax(jnp.asarray(tokens), jnp.zeros(3, jnp.int32)).key.tolist()
    assert got == [NAMES.index("C major"), NAMES.index("A minor"), NO_KEY]
    assert music_stats.estimate_key(midi_io.empty_notes()) == NO_KEY


def test_a_model_with_a_key_input_hears_it():
    model = models.Seq2Seq(
        vocab_size=23, num_genres=2, num_layers=2, hidden=8, num_keys=conditioning.NUM_KEYS
    )
    enc = jax.random.randint(jax.random.key(0), (3, 5), 0, 23)
    dec = jax.random.randint(jax.random.key(1), (3, 4), 0, 23)
    genre, key = jnp.zeros(3, jnp.int32), jnp.asarray([0, 9, 24], jnp.int32)
    params = model.init(jax.random.key(2), enc, dec, Condition(genre, key))["params"]
    assert params["encoder_key"]["embedding"].shape == (conditioning.NUM_KEYS, 32)
    params = jax.tree.map(lambda p: p + 0.1, params)  # embeddings away from their init
    a = model.apply({"params": params}, enc, dec, Condition(genre, key))
    b = model.apply({"params": params}, enc, dec, Condition(genre, (key + 1) % conditioning.NUM_KEYS))
    assert float(jnp.abs(a - b).max()) > 1e-4


def _key_writer(codec, conditioner, **shape):
    """A sampler over a stub model that writes, at every note, the key it was given (as
    the id first_note_id + key), completed from the window as the model's is."""

    def encode(params, tokens, cond):
        return cond.key

    def step(params, key, token, cond):
        return key, jax.nn.one_hot(codec.first_note_id + cond.key, codec.vocab_size) * 10.0

    def complete(window, cond):
        return conditioner.of_window_jax(window, cond.genre) if cond.key is None else cond

    return sampler.make_sampler(encode, step, complete, vocab_size=codec.vocab_size,
                                first_note_id=codec.first_note_id, **shape)  # fmt: skip


def _stub_generator(codec, conditioner, fn):
    """An `inference.Generator` of the tiny config whose compiled sampler is `fn`."""
    from configs import tiny

    config = tiny.get_config()
    config.encoder_len = 5
    config.model.lookback = False  # the stub reads no history
    gen = inference.Generator(config, None, codec=codec)
    gen.conditioner = conditioner
    gen.sampler = lambda num_notes, phrase_len=None: fn
    return gen


def test_sampling_holds_the_primers_key():
    """The sampler gives the model the first window's key at every note, with or without
    re-encoding: a stub that writes its key shows which key it was given."""
    codec, _ = _codec_and_pieces()
    c = _conditioner(codec, context="window")
    window = jnp.asarray([[0, 1, 7, 8, 9], [1, 9, 10, 11, 12]], jnp.int32) % codec.vocab_size
    want = np.asarray(c.of_window_jax(window, jnp.zeros(2, jnp.int32)).key)
    fn = _key_writer(codec, c, phrase_len=2, num_phrases=3)
    for carry in (False, True):
        out = np.asarray(fn(None, window, Condition(jnp.zeros(2, jnp.int32)), jax.random.key(0),
                            sampler.Settings(greedy=True, carry_state=carry)))  # fmt: skip
        np.testing.assert_array_equal(out, np.repeat((codec.first_note_id + want)[:, None], 6, 1))


def test_prefix_keys_are_the_key_of_each_piece_so_far():
    """At every position, the key of its piece's notes through it (music_stats'), the
    count starting again at each piece."""
    codec, pieces = _codec_and_pieces()
    parts = [np.concatenate([[codec_lib.PAD] * 3, [codec_lib.BOS], codec.encode(p), [codec_lib.EOS]])
             for p in pieces]  # fmt: skip
    starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
    flat = np.concatenate(parts).astype(np.int32)
    got, _ = _conditioner(codec).prefix(flat, starts)
    assert got.dtype == np.uint8 and got.shape == flat.shape
    for part, start in zip(parts, starts, strict=True):
        for i in range(len(part)):
            assert got[start + i] == music_stats.estimate_key(codec.decode(part[: i + 1]))
    assert got[starts[1] + 3] == NO_KEY  # a new piece's BOS: nothing heard yet
    assert len(set(got[starts[1:] - 1].tolist())) > 2  # the pieces end in several keys
    with pytest.raises(ValueError, match="outside the codec's vocabulary"):
        _conditioner(codec).prefix(np.array([codec.vocab_size], np.int32), np.array([0]))


def test_transposed_keys_move_their_tonic_and_keep_their_mode():
    keys = np.array([NAMES.index(k) for k in ("C major", "A minor", "B major")] + [NO_KEY])
    np.testing.assert_array_equal(
        conditioning.transposed(keys, np.array([2, 3, 1, 5])),
        [NAMES.index("D major"), NAMES.index("C minor"), NAMES.index("C major"), NO_KEY],
    )
    np.testing.assert_array_equal(conditioning.transposed(keys, -12), keys)


def _key_of(ids, conditioner):
    """The key of one row of note ids, as the model's key input reads it."""
    return int(conditioner.of_tokens([np.asarray(ids, np.int32)])[0][0])


def test_sampling_a_piece_key_model_gives_the_key_of_all_it_has_read():
    """Each call is given the key of its row's whole primer and of what the row wrote in
    the calls before, not the key of the encoder's window: a stub that writes its key
    shows which key it was given."""
    codec, pieces = _codec_and_pieces()
    piece = _conditioner(codec)
    fn = _key_writer(codec, piece, phrase_len=2, num_phrases=2)
    primers = [codec.encode(p) for p in pieces if len(p) > 12][:3]
    windows = jnp.asarray([sampler.primer_window(p, 5) for p in primers])
    by_window = np.asarray(piece.of_window_jax(windows, jnp.zeros(3, jnp.int32)).key)
    by_piece = [_key_of(p, piece) for p in primers]
    assert list(by_window) != by_piece  # the fixture tells the two apart
    run = dict(
        num_notes=4, settings=sampler.Settings(greedy=True), seed=0, max_calls=2, done=lambda rows: False
    )
    written = _stub_generator(codec, piece, fn).generate(primers, np.zeros(3, np.int32), **run)
    first, second = written[:, :4] - codec.first_note_id, written[:, 4:] - codec.first_note_id
    np.testing.assert_array_equal(first, np.repeat(np.asarray(by_piece)[:, None], 4, 1))
    read = [np.concatenate([p, w[:4]]) for p, w in zip(primers, written, strict=True)]
    after = [_key_of(ids, piece) for ids in read]
    np.testing.assert_array_equal(second, np.repeat(np.asarray(after)[:, None], 4, 1))
    window_model = _stub_generator(codec, _conditioner(codec, context="window"), fn)
    plain = window_model.generate(primers, np.zeros(3, np.int32), **run)  # the window's key
    np.testing.assert_array_equal(plain[:, :4] - codec.first_note_id, np.repeat(by_window[:, None], 4, 1))


def test_common_shift_takes_every_key_to_c_major_or_a_minor():
    keys = np.arange(conditioning.NUM_KEYS)
    shift = conditioning.common_shift(keys)
    moved = conditioning.transposed(keys, shift)
    told = keys != NO_KEY
    assert set(moved[told].tolist()) == {NAMES.index("C major"), NAMES.index("A minor")}
    assert shift[~told].tolist() == [0] and shift.min() == -6 and shift.max() == 5
    assert conditioning.common_shift(np.array([NAMES.index("G major"), NAMES.index("E minor")])).tolist() == [
        5,
        5,
    ]


def _movable_codec_and_pieces(n=8):
    """A codec in which every pitch of 40..95 is a pseudo-note with each onset gap (a
    piece's first included; one velocity and length), so notes move by semitones
    freely, and pieces of 16 notes in major keys of several tonics."""
    start = np.arange(56) * 0.5
    one = [
        midi_io.make_notes(np.zeros(1), np.full(1, 0.5), np.array([p]), np.full(1, 80)) for p in range(40, 96)
    ]
    scale = midi_io.make_notes(start, start + 0.5, np.arange(40, 96), np.full(56, 80))
    codec = codec_fit.fit([scale, *one], min_count=1)
    rng = np.random.default_rng(5)
    pieces = []
    for tonic in rng.permutation(12)[:n]:
        pitch = rng.choice(np.array(C_MAJOR) + int(tonic) - 6, 16)
        pieces.append(midi_io.make_notes(start[:16], start[:16] + 0.5, pitch, np.full(16, 80)))
    return codec, pieces


def test_common_key_round_trip_and_unmovable_windows():
    """Windows moved to the common key and their ids moved back are the originals; a
    window with an id that cannot move stays, shift 0."""
    codec, pieces = _movable_codec_and_pieces()
    tables = codec.transpose_tables(12)
    windows = np.stack([codec.encode(p) for p in pieces])
    keys = _conditioner(codec).of_tokens(list(windows))[0]
    edge = codec.encode(midi_io.make_notes(np.zeros(1), np.full(1, 0.5), np.array([95]), np.full(1, 80)))[0]
    stuck = np.flatnonzero(conditioning.common_shift(keys) > 0)[0]  # moves up: 95 cannot
    windows[stuck, 0] = edge
    moved, moved_keys, shift = conditioning.to_common_key(windows, keys, tables)
    assert shift[stuck] == 0 and (moved[stuck] == windows[stuck]).all()
    assert (np.delete(shift, stuck) != 0).sum() >= 5
    common = {NAMES.index("C major"), NAMES.index("A minor")}
    assert set(np.delete(moved_keys, stuck).tolist()) <= common
    np.testing.assert_array_equal(conditioning.from_common_key(moved, shift, tables), windows)
    np.testing.assert_array_equal(moved_keys, conditioning.transposed(keys, shift))


def test_common_key_config_needs_what_it_stands_on():
    from configs import multitrack, tiny
    from jaxmusic import run_config
    from jaxmusic.errors import UsageError

    codec, _ = _codec_and_pieces()
    c = run_config.complete(tiny.get_config())
    assert Conditioner.from_config(c, codec).common_key is None  # off by default
    on = Conditioner.from_config(run_config.complete(multitrack.get_config()), codec).common_key
    assert on.shape == (25, codec.vocab_size)  # on for real collections
    c.common_key, c.transpose, c.model.key_input, c.model.key_context = True, 0, True, "piece"
    run_config.validate(c)
    assert Conditioner.from_config(c, codec).common_key.shape == (25, codec.vocab_size)
    for field, value, message in (("transpose", 2, "set transpose=0"), ("carried_windows", True, "carried"),
                                  ("model.key_context", "window", "key_context")):  # fmt: skip
        bad = c.copy_and_resolve_references()
        target, name = (bad.model, field[6:]) if field.startswith("model.") else (bad, field)
        setattr(target, name, value)
        with pytest.raises(UsageError, match=message):
            run_config.validate(bad)


def test_sampling_in_a_common_key_moves_the_window_there_and_the_notes_back():
    """A stub that writes the key it was given, as an id: it is given the common key of
    its primer's, and what it writes comes back moved by the primer's shift."""
    codec, pieces = _movable_codec_and_pieces()
    tables = codec.transpose_tables(12)
    common = _conditioner(codec, common=tables)
    fn = _key_writer(codec, common, phrase_len=2, num_phrases=2)
    primers = [codec.encode(p) for p in pieces][:3]
    written = _stub_generator(codec, common, fn).generate(
        primers, np.zeros(3, np.int32), num_notes=4, settings=sampler.Settings(greedy=True), seed=0
    )
    windows = np.stack([sampler.primer_window(p, 5) for p in primers])
    known = np.asarray([_key_of(p, common) for p in primers])
    _, moved_keys, shift = conditioning.to_common_key(windows, known, tables)
    given = np.repeat((codec.first_note_id + moved_keys)[:, None], 4, 1)
    np.testing.assert_array_equal(written, conditioning.from_common_key(given, shift, tables))
    assert (shift != 0).all()


def test_density_is_the_pace_of_the_same_notes():
    """The density bin of the notes read (notes a second over their onset gaps), in the
    JAX twin and the pipeline's prefix alike; a transposition moves the key alone."""
    fast_start, slow_start = np.arange(8) * 0.25, np.arange(8) * 0.5
    fast = midi_io.make_notes(fast_start, fast_start + 0.25, np.array(C_MAJOR), np.full(8, 80))
    a_major = np.array(C_MAJOR) - 3
    slow = midi_io.make_notes(slow_start, slow_start + 0.5, a_major, np.full(8, 80))
    codec = codec_fit.fit([fast, slow], min_count=1)
    c = _conditioner(codec, density=True)
    assert c.weights.shape == (codec.vocab_size, 14)
    tokens = np.stack([codec.encode(fast), codec.encode(slow), np.zeros(8, np.int32)])
    got = c.of_window_jax(jnp.asarray(tokens), jnp.zeros(3, jnp.int32))
    # 8 notes over 7 gaps of 0.25 s (4.6 a second: the bin from 3.5 to 5) and of 0.5 s (2.3: 1.5 to 2.5).
    assert got.key.tolist() == [NAMES.index("C major"), NAMES.index("A major"), NO_KEY]
    assert got.density.tolist() == [3, 1, NO_DENSITY]
    assert [x.tolist() for x in c.of_tokens(list(tokens))] == [got.key.tolist(), got.density.tolist()]

    flat = np.concatenate([[codec_lib.BOS], tokens[0], [codec_lib.EOS, codec_lib.BOS], tokens[1]])
    flat = flat.astype(np.int32)
    keys, densities = c.prefix(flat, np.array([0, 10]))
    assert densities.dtype == np.uint8
    for start, end in ((0, 10), (10, 19)):
        for i in range(start, end):
            want = c.of_window_jax(jnp.asarray(flat[None, start : i + 1]), jnp.zeros(1, jnp.int32))
            assert (keys[i], densities[i]) == (int(want.key[0]), int(want.density[0])), i
    assert densities[8] == 3 and densities[18] == 1
    moved = conditioning.transposed(np.asarray(got.key, np.int64), 2)
    assert moved.tolist() == [NAMES.index("D major"), NAMES.index("B major"), NO_KEY]


def test_a_model_with_a_density_input_hears_it():
    keys, densities = conditioning.NUM_KEYS, conditioning.NUM_DENSITIES
    model = models.Seq2Seq(
        vocab_size=23, num_genres=2, num_layers=2, hidden=8, num_keys=keys, num_densities=densities
    )
    enc = jax.random.randint(jax.random.key(0), (3, 5), 0, 23)
    dec = jax.random.randint(jax.random.key(1), (3, 4), 0, 23)
    genre, key = jnp.zeros(3, jnp.int32), jnp.asarray([0, 9, 24], jnp.int32)
    density = jnp.asarray([0, 3, 8], jnp.int32)
    params = model.init(jax.random.key(2), enc, dec, Condition(genre, key, density))["params"]
    assert params["encoder_density"]["embedding"].shape == (conditioning.NUM_DENSITIES, 32)
    assert not np.any(params["decoder_density"]["embedding"])  # the key-only model at the start
    rows = jax.random.normal(jax.random.key(3), (2, conditioning.NUM_DENSITIES, 32))
    params = dict(params, encoder_density={"embedding": rows[0]}, decoder_density={"embedding": rows[1]})
    a = model.apply({"params": params}, enc, dec, Condition(genre, key, density))
    b = model.apply({"params": params}, enc, dec, Condition(genre, key, (density + 4) % 9))  # another density
    assert float(jnp.abs(a - b).max()) > 1e-3
    plain = models.Seq2Seq(
        vocab_size=23, num_genres=2, num_layers=2, hidden=8, num_keys=conditioning.NUM_KEYS
    )
    zeroed = dict(params, encoder_density={"embedding": jnp.zeros((conditioning.NUM_DENSITIES, 32))},
                  decoder_density={"embedding": jnp.zeros((conditioning.NUM_DENSITIES, 32))})  # fmt: skip
    without = {k: v for k, v in params.items() if not k.endswith("_density")}
    np.testing.assert_allclose(model.apply({"params": zeroed}, enc, dec, Condition(genre, key, density)),
                               plain.apply({"params": without}, enc, dec, Condition(genre, key)),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


def test_density_input_needs_the_key_input():
    from configs import default
    from jaxmusic import run_config
    from jaxmusic.errors import UsageError

    c = run_config.complete(default.get_config())
    c.model.key_input, c.model.density_input = False, True
    with pytest.raises(UsageError, match=r"density_input needs config\.model\.key_input"):
        run_config.validate(c)
    c.model.key_input = True
    run_config.validate(c)
    assert models.from_config(c, 23, 2).num_densities == conditioning.NUM_DENSITIES
