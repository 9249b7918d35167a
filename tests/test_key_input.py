"""key_input: the Krumhansl-Schmuckler key of token windows, and a model that takes it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmusic import codec as codec_lib
from jaxmusic import key_input, midi_io, models, music_stats, sampler

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


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
    return codec_lib.fit(notes, min_count=1), notes


def test_estimate_equals_music_stats_on_decoded_notes():
    codec, pieces = _codec_and_pieces()
    weights = key_input.pitch_class_weights(codec)
    width = max(len(p) for p in pieces)
    ids = np.zeros((len(pieces), width), np.int32)  # PAD-padded rows
    for i, p in enumerate(pieces):
        ids[i, : len(p)] = codec.encode(p)
    got = np.asarray(key_input.estimate(jnp.asarray(ids), weights))
    want = [music_stats.estimate_key(codec.decode(row[row != codec_lib.PAD])) for row in ids]
    assert got.tolist() == [key_input.NO_KEY if w < 0 else w for w in want]
    assert len(set(got.tolist())) > 2  # the fixture has several keys


def test_scales_and_silence_have_the_keys_they_should():
    start = np.arange(8) * 0.5
    scale = midi_io.make_notes(start, start + 0.5, np.array(C_MAJOR), np.full(8, 80))
    a_minor = midi_io.make_notes(
        start, start + 0.5, np.array([57, 59, 60, 62, 64, 65, 68, 69]), np.full(8, 80)
    )
    codec = codec_lib.fit([scale, a_minor], min_count=1)
    tokens = jnp.asarray(np.stack([codec.encode(scale), codec.encode(a_minor), np.zeros(8, np.int32)]))
    got = key_input.estimate(tokens, key_input.pitch_class_weights(codec)).tolist()
    assert got == [music_stats.KEY_NAMES.index("C major"), music_stats.KEY_NAMES.index("A minor"),
                   key_input.NO_KEY]  # fmt: skip


def test_a_model_with_a_key_input_hears_it():
    model = models.Seq2Seq(vocab_size=23, num_genres=2, num_layers=2, hidden=8, num_keys=key_input.NUM_KEYS)
    enc = jax.random.randint(jax.random.key(0), (3, 5), 0, 23)
    dec = jax.random.randint(jax.random.key(1), (3, 4), 0, 23)
    genre, key = jnp.zeros(3, jnp.int32), jnp.asarray([0, 9, 24], jnp.int32)
    params = model.init(jax.random.key(2), enc, dec, genre, key=key)["params"]
    assert params["encoder_key"]["embedding"].shape == (key_input.NUM_KEYS, 32)
    params = jax.tree.map(lambda p: p + 0.1, params)  # embeddings away from their init
    a = model.apply({"params": params}, enc, dec, genre, key=key)
    b = model.apply({"params": params}, enc, dec, genre, key=(key + 1) % key_input.NUM_KEYS)
    assert float(jnp.abs(a - b).max()) > 1e-4
    with pytest.raises(ValueError, match="pass key="):
        model.apply({"params": params}, enc, dec, genre)


def _key_writer(codec, weights, **shape):
    """A sampler over a stub model that writes, at every note, the key it was given
    (as the id first_note_id + key), with a condition that finds it as the model's does."""

    def encode(params, tokens, cond):
        return cond[1]

    def step(params, key, token, cond):
        return key, jax.nn.one_hot(codec.first_note_id + cond[1], codec.vocab_size) * 10.0

    def condition(window, genre, known_key=None):
        return genre, key_input.estimate(window, weights) if known_key is None else known_key

    return sampler.make_sampler(encode, step, condition, vocab_size=codec.vocab_size,
                                first_note_id=codec.first_note_id, **shape)  # fmt: skip


def test_sampling_holds_the_primers_key():
    """The sampler gives the model the first window's key at every note, with or
    without re-encoding: a stub that writes its key shows which key it was given."""
    codec, _ = _codec_and_pieces()
    weights = key_input.pitch_class_weights(codec)
    window = jnp.asarray([[0, 1, 7, 8, 9], [1, 9, 10, 11, 12]], jnp.int32) % codec.vocab_size
    want = np.asarray(key_input.estimate(window, weights))

    fn = _key_writer(codec, weights, phrase_len=2, num_phrases=3)
    for carry in (False, True):
        out = np.asarray(fn(None, window, jnp.zeros(2, jnp.int32), jax.random.key(0),
                            sampler.Settings(greedy=True, carry_state=carry)))  # fmt: skip
        np.testing.assert_array_equal(out, np.repeat((codec.first_note_id + want)[:, None], 6, 1))


def test_prefix_keys_are_the_key_of_each_piece_so_far():
    """At every position, the key of its piece's notes through it (music_stats'), the
    count starting again at each piece."""
    codec, pieces = _codec_and_pieces()
    weights = key_input.pitch_class_weights(codec)
    parts = [np.concatenate([[codec_lib.PAD] * 3, [codec_lib.BOS], codec.encode(p), [codec_lib.EOS]])
             for p in pieces]  # fmt: skip
    starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
    flat = np.concatenate(parts).astype(np.int32)
    got = key_input.prefix_keys(flat, starts, weights)
    assert got.dtype == np.uint8 and got.shape == flat.shape
    for part, start in zip(parts, starts, strict=True):
        for i in range(len(part)):
            want = music_stats.estimate_key(codec.decode(part[: i + 1]))
            assert got[start + i] == (key_input.NO_KEY if want < 0 else want)
    assert got[starts[1] + 3] == key_input.NO_KEY  # a new piece's BOS: nothing heard yet
    assert len(set(got[starts[1:] - 1].tolist())) > 2  # the pieces end in several keys


def test_transposed_keys_move_their_tonic_and_keep_their_mode():
    names = music_stats.KEY_NAMES
    keys = np.array([names.index(k) for k in ("C major", "A minor", "B major")] + [key_input.NO_KEY])
    np.testing.assert_array_equal(
        key_input.transposed(keys, np.array([2, 3, 1, 5])),
        [names.index("D major"), names.index("C minor"), names.index("C major"), key_input.NO_KEY],
    )
    np.testing.assert_array_equal(key_input.transposed(keys, -12), keys)


def _key_of(ids, weights):
    """The key of one row of note ids, as the model's key input reads it."""
    return int(key_input.estimate(jnp.asarray(np.asarray(ids, np.int32)[None]), weights)[0])


def test_sampling_a_piece_key_model_gives_the_key_of_all_it_has_read():
    """With piece_key_weights, each call is given the key of its row's whole primer and
    of what the row wrote in the calls before, not the key of the encoder's window: a
    stub that writes its key shows which key it was given."""
    codec, pieces = _codec_and_pieces()
    weights = key_input.pitch_class_weights(codec)

    fn = _key_writer(codec, weights, phrase_len=2, num_phrases=2)
    primers = [codec.encode(p) for p in pieces if len(p) > 12][:3]
    windows = jnp.asarray([sampler.primer_window(p, 5) for p in primers])
    by_window = np.asarray(key_input.estimate(windows, weights))
    by_piece = [_key_of(p, weights) for p in primers]
    assert list(by_window) != by_piece  # the fixture tells the two apart
    run = dict(encoder_len=5, num_notes=4, settings=sampler.Settings(greedy=True), key=jax.random.key(0),
               max_calls=2, done=lambda rows: False)  # fmt: skip
    written = sampler.generate(fn, None, primers, np.zeros(3, np.int32), piece_key_weights=weights, **run)
    first, second = written[:, :4] - codec.first_note_id, written[:, 4:] - codec.first_note_id
    np.testing.assert_array_equal(first, np.repeat(np.asarray(by_piece)[:, None], 4, 1))
    read = [np.concatenate([p, w[:4]]) for p, w in zip(primers, written, strict=True)]
    after = [_key_of(ids, weights) for ids in read]
    np.testing.assert_array_equal(second, np.repeat(np.asarray(after)[:, None], 4, 1))
    plain = sampler.generate(fn, None, primers, np.zeros(3, np.int32), **run)  # the window's key
    np.testing.assert_array_equal(plain[:, :4] - codec.first_note_id, np.repeat(by_window[:, None], 4, 1))


def test_common_shift_takes_every_key_to_c_major_or_a_minor():
    names = music_stats.KEY_NAMES
    keys = np.arange(key_input.NUM_KEYS * 3)  # every key, with three density bins
    shift = key_input.common_shift(keys)
    moved = key_input.transposed(keys, shift)
    told = keys % key_input.NUM_KEYS != key_input.NO_KEY
    assert set((moved[told] % key_input.NUM_KEYS).tolist()) == {
        names.index("C major"),
        names.index("A minor"),
    }
    np.testing.assert_array_equal(moved // key_input.NUM_KEYS, keys // key_input.NUM_KEYS)  # density kept
    assert shift[~told].tolist() == [0, 0, 0] and shift.min() == -6 and shift.max() == 5
    assert key_input.common_shift(np.array([names.index("G major"), names.index("E minor")])).tolist() == [
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
    codec = codec_lib.fit([scale, *one], min_count=1)
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
    tables = np.stack([codec.transpose_table(s) for s in range(-12, 13)])
    weights = key_input.pitch_class_weights(codec)
    windows = np.stack([codec.encode(p) for p in pieces])
    keys = np.asarray(key_input.estimate(jnp.asarray(windows), weights))
    edge = codec.encode(midi_io.make_notes(np.zeros(1), np.full(1, 0.5), np.array([95]), np.full(1, 80)))[0]
    stuck = np.flatnonzero(key_input.common_shift(keys) > 0)[0]  # moves up: 95 cannot
    windows[stuck, 0] = edge
    moved, moved_keys, shift = key_input.to_common_key(windows, keys, tables)
    assert shift[stuck] == 0 and (moved[stuck] == windows[stuck]).all()
    assert (np.delete(shift, stuck) != 0).sum() >= 5
    common = {music_stats.KEY_NAMES.index("C major"), music_stats.KEY_NAMES.index("A minor")}
    assert set(np.delete(moved_keys, stuck).tolist()) <= common
    np.testing.assert_array_equal(key_input.from_common_key(moved, shift, tables), windows)
    np.testing.assert_array_equal(moved_keys, key_input.transposed(keys, shift))


def test_common_key_config_needs_what_it_stands_on():
    from configs import multitrack, tiny
    from jaxmusic.cli import UsageError

    codec, _ = _codec_and_pieces()
    c = tiny.get_config()
    assert key_input.common_key_tables(c, codec) is None  # off by default
    on = key_input.common_key_tables(multitrack.get_config(), codec)  # on for real collections
    assert on.shape == (25, codec.vocab_size)
    c.common_key, c.transpose, c.model.key_input, c.model.key_context = True, 0, True, "piece"
    assert key_input.common_key_tables(c, codec).shape == (25, codec.vocab_size)
    for field, value, message in (("transpose", 2, "set transpose=0"), ("carried_windows", True, "carried"),
                                  ("model.key_context", "window", "key_context")):  # fmt: skip
        bad = c.copy_and_resolve_references()
        target, name = (bad.model, field[6:]) if field.startswith("model.") else (bad, field)
        setattr(target, name, value)
        with pytest.raises(UsageError, match=message):
            key_input.common_key_tables(bad, codec)


def test_sampling_in_a_common_key_moves_the_window_there_and_the_notes_back():
    """A stub that writes the key it was given, as an id: it is given the common key of
    its primer's, and what it writes comes back moved by the primer's shift."""
    codec, pieces = _movable_codec_and_pieces()
    weights = key_input.pitch_class_weights(codec)
    tables = np.stack([codec.transpose_table(s) for s in range(-12, 13)])
    fn = _key_writer(codec, weights, phrase_len=2, num_phrases=2)
    primers = [codec.encode(p) for p in pieces][:3]
    run = dict(encoder_len=5, num_notes=4, settings=sampler.Settings(greedy=True), key=jax.random.key(0))
    written = sampler.generate(fn, None, primers, np.zeros(3, np.int32), piece_key_weights=weights,
                               common_key=tables, **run)  # fmt: skip
    windows = np.stack([sampler.primer_window(p, 5) for p in primers])
    known = np.asarray([_key_of(p, weights) for p in primers])
    _, moved_keys, shift = key_input.to_common_key(windows, known, tables)
    given = np.repeat((codec.first_note_id + moved_keys)[:, None], 4, 1)
    np.testing.assert_array_equal(written, key_input.from_common_key(given, shift, tables))
    assert (shift != 0).all()
    with pytest.raises(ValueError, match="needs piece_key_weights"):
        sampler.generate(fn, None, primers, np.zeros(3, np.int32), common_key=tables, **run)


def test_density_rides_on_the_key_index():
    """With density_weights, the index is key + NUM_KEYS x the density bin of the same
    notes (notes a second over their onset gaps), in the model's estimate and in the
    pipeline's prefix keys alike; transposition moves the key and keeps the density."""
    names = music_stats.KEY_NAMES
    fast_start, slow_start = np.arange(8) * 0.25, np.arange(8) * 0.5
    fast = midi_io.make_notes(fast_start, fast_start + 0.25, np.array(C_MAJOR), np.full(8, 80))
    a_major = np.array(C_MAJOR) - 3
    slow = midi_io.make_notes(slow_start, slow_start + 0.5, a_major, np.full(8, 80))
    codec = codec_lib.fit([fast, slow], min_count=1)
    weights = key_input.density_weights(codec)
    assert weights.shape == (codec.vocab_size, 14)
    tokens = np.stack([codec.encode(fast), codec.encode(slow), np.zeros(8, np.int32)])
    got = np.asarray(key_input.estimate(jnp.asarray(tokens), weights))
    # 8 notes over 7 gaps of 0.25 s (4.6 a second: the bin from 3.5 to 5) and of 0.5 s (2.3: 1.5 to 2.5).
    key, density = key_input.split(got)
    assert key.tolist() == [names.index("C major"), names.index("A major"), key_input.NO_KEY]
    assert density.tolist() == [3, 1, key_input.NO_DENSITY]
    keys_only = key_input.estimate(jnp.asarray(tokens), key_input.pitch_class_weights(codec))
    np.testing.assert_array_equal(key, keys_only)

    flat = np.concatenate([[codec_lib.BOS], tokens[0], [codec_lib.EOS, codec_lib.BOS], tokens[1]])
    flat = flat.astype(np.int32)
    prefix = key_input.prefix_keys(flat, np.array([0, 10]), weights)
    assert prefix.dtype == np.uint8
    for start, end in ((0, 10), (10, 19)):
        for i in range(start, end):
            want = key_input.estimate(jnp.asarray(flat[None, start : i + 1]), weights)
            assert prefix[i] == int(want[0]), i
    assert key_input.split(prefix[8])[1] == 3 and key_input.split(prefix[18])[1] == 1

    moved = key_input.transposed(got.astype(np.int64), 2)
    assert key_input.split(moved)[1].tolist() == [3, 1, key_input.NO_DENSITY]
    want = [names.index("D major"), names.index("B major"), key_input.NO_KEY]
    assert key_input.split(moved)[0].tolist() == want


def test_a_model_with_a_density_input_hears_it():
    model = models.Seq2Seq(vocab_size=23, num_genres=2, num_layers=2, hidden=8, num_keys=key_input.NUM_KEYS,
                           num_densities=key_input.NUM_DENSITIES)  # fmt: skip
    enc = jax.random.randint(jax.random.key(0), (3, 5), 0, 23)
    dec = jax.random.randint(jax.random.key(1), (3, 4), 0, 23)
    genre, key = jnp.zeros(3, jnp.int32), jnp.asarray([0, 9, 24], jnp.int32)
    params = model.init(jax.random.key(2), enc, dec, genre, key=key)["params"]
    assert params["encoder_density"]["embedding"].shape == (key_input.NUM_DENSITIES, 32)
    assert not np.any(params["decoder_density"]["embedding"])  # the key-only model at the start
    rows = jax.random.normal(jax.random.key(3), (2, key_input.NUM_DENSITIES, 32))
    params = dict(params, encoder_density={"embedding": rows[0]}, decoder_density={"embedding": rows[1]})
    a = model.apply({"params": params}, enc, dec, genre, key=key)
    b = model.apply({"params": params}, enc, dec, genre, key=key + key_input.NUM_KEYS * 4)  # another density
    assert float(jnp.abs(a - b).max()) > 1e-3
    plain = models.Seq2Seq(vocab_size=23, num_genres=2, num_layers=2, hidden=8, num_keys=key_input.NUM_KEYS)
    zeroed = dict(params, encoder_density={"embedding": jnp.zeros((key_input.NUM_DENSITIES, 32))},
                  decoder_density={"embedding": jnp.zeros((key_input.NUM_DENSITIES, 32))})  # fmt: skip
    without = {k: v for k, v in params.items() if not k.endswith("_density")}
    np.testing.assert_allclose(model.apply({"params": zeroed}, enc, dec, genre, key=key + 50),
                               plain.apply({"params": without}, enc, dec, genre, key=key),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


def test_density_input_needs_the_key_input():
    from configs import default

    c = default.get_config()
    c.model.key_input, c.model.density_input = False, True
    with pytest.raises(models.UsageError, match=r"density_input needs config\.model\.key_input"):
        models.from_config(c, 23, 2)
    c.model.key_input = True
    assert models.from_config(c, 23, 2).num_densities == key_input.NUM_DENSITIES
