"""windows: framing, evaluation coverage, transposition and the condition of each window,
batches a pure function of (seed, step, shard) for any host count."""

import itertools

import numpy as np
import pytest

from jaxmusic import batching, codec_fit, conditioning, windows
from jaxmusic import codec as codec_lib
from jaxmusic.conditioning import NO_DENSITY, NO_KEY, Conditioner
from jaxmusic.errors import UsageError
from jaxmusic.windows import Pieces, WindowError

TE, TD = 6, 4


def _pieces(lengths, genres=None):
    rng = np.random.default_rng(0)
    seqs = [np.concatenate([[codec_lib.BOS], rng.integers(10, 50, n), [codec_lib.EOS]]).astype(np.int32)
            for n in lengths]  # fmt: skip
    return Pieces(seqs, np.asarray(genres or [0] * len(lengths), np.int32))


def _batches(shards, *, batch_size, start_step=0, shard_ids=None, **kw):
    """The training batches of steps start_step, start_step + 1, ... (`windows.TrainWindows`)."""
    shards = [shards] if isinstance(shards, Pieces) else list(shards)
    shard_ids = list(range(len(shards))) if shard_ids is None else shard_ids
    source = windows.TrainWindows(shards, shard_ids=shard_ids, batch_size=batch_size, **kw)
    return (source(step) for step in itertools.count(start_step))


def _keyed(codec, *, density=False, common=None):
    """The conditioning of a model reading the key (and density) of the piece so far."""
    return Conditioner(key=True, density=density, context="piece", weights=conditioning.id_weights(codec),
                       common_key=common)  # fmt: skip


def _padded(seq):
    return np.concatenate([np.zeros(TE + TD - 2, np.int32), seq])


def _is_slice_of(row, padded):
    """row appears in padded (extended with PADs on the right) at some offset."""
    ext = np.concatenate([padded, np.zeros(row.shape[0], np.int32)])
    return any(np.array_equal(ext[i : i + row.shape[0]], row) for i in range(padded.shape[0]))


def test_train_windows_are_framed_exactly():
    pieces = _pieces([3, 20, 40], genres=[0, 1, 2])
    batch = next(_batches(pieces, batch_size=64, encoder_len=TE, decoder_len=TD, seed=1))
    enc, dec, tgt = batch["encoder_tokens"], batch["decoder_inputs"], batch["targets"]
    assert enc.shape == (64, TE) and dec.shape == tgt.shape == (64, TD)
    np.testing.assert_array_equal(dec[:, 0], enc[:, -1])  # the encoder's last note first
    np.testing.assert_array_equal(dec[:, 1:], tgt[:, :-1])  # then the targets, shifted by one
    np.testing.assert_array_equal(batch["weights"], ((tgt != codec_lib.PAD) & (tgt != codec_lib.BOS)))
    for row, genre in zip(np.concatenate([enc, tgt], 1), batch["genre"], strict=True):
        piece = int(genre)
        assert _is_slice_of(row, _padded(pieces.sequences[piece]))


def test_every_target_of_a_piece_is_in_as_many_training_windows():
    """EOS and a piece's first and last notes are each a target in as many training
    windows as a mid-piece note (Td), and no window is all padding."""
    pieces = _pieces([9])  # BOS, 9 notes, EOS
    seq = pieces.sequences[0]
    flat, first, count = windows.drawn_framing(pieces, TE, TD)
    times = np.zeros(seq.shape[0], int)
    for w in range(int(count[0])):
        window = flat[first[0] + w : first[0] + w + TE + TD]
        start = w + TE - (TE + TD - 2)  # the sequence index of the window's first target
        targets = [j for j in range(start, start + TD) if 0 <= j < seq.shape[0]]
        np.testing.assert_array_equal(window[TE:][[j - start for j in targets]], seq[targets])
        assert targets and all(window[TE:][k] == codec_lib.PAD for k in range(TD) if start + k not in targets)
        weights = batching.from_windows(window[None], np.zeros(1, np.int32), TE)["weights"][0]
        times[[j for j in targets if weights[j - start]]] += 1
    assert times[0] == 0  # BOS is never a weighted target
    np.testing.assert_array_equal(times[1:], TD)  # first note, middle, last note, EOS: Td each


def test_train_batches_are_a_function_of_the_step():
    pieces = _pieces([30, 50])
    kw = dict(batch_size=8, encoder_len=TE, decoder_len=TD, seed=3)
    first = list(itertools.islice(_batches(pieces, **kw), 8))
    resumed = next(_batches(pieces, start_step=5, **kw))
    for k in resumed:
        np.testing.assert_array_equal(resumed[k], first[5][k])
    other_seed = next(_batches(pieces, **{**kw, "seed": 4}))
    assert not np.array_equal(other_seed["encoder_tokens"], first[0]["encoder_tokens"])
    other_shard = next(_batches(pieces, shard_ids=[1], **kw))
    assert not np.array_equal(other_shard["encoder_tokens"], first[0]["encoder_tokens"])


def test_global_batch_does_not_depend_on_the_host_count():
    shards = [_pieces([30, 50]), _pieces([20, 44, 61]), _pieces([25]), _pieces([70])]
    kw = dict(encoder_len=TE, decoder_len=TD, seed=7, start_step=3)
    one_host = next(_batches(shards, batch_size=8, **kw))
    halves = [
        next(_batches(shards[2 * h : 2 * h + 2], batch_size=4, shard_ids=[2 * h, 2 * h + 1], **kw))
        for h in range(2)
    ]
    for k in one_host:
        np.testing.assert_array_equal(one_host[k], np.concatenate([h[k] for h in halves]))


def test_eval_windows_cover_every_note_once():
    pieces = _pieces([1, 3, 4, 9, 25])
    batches = windows.eval_batches(pieces, batch_size=4, encoder_len=TE, decoder_len=TD)
    targets = np.concatenate([b["targets"][b["weights"] > 0] for b in batches])
    want = np.concatenate([s[1:] for s in pieces.sequences])  # every note and EOS, in order
    np.testing.assert_array_equal(targets, want)
    for b in batches:
        np.testing.assert_array_equal(b["decoder_inputs"][:, 0], b["encoder_tokens"][:, -1])


def test_eval_batches_are_dealt_evenly_to_hosts():
    pieces = _pieces([5, 17, 30])
    whole = windows.eval_windows(pieces, TE, TD)["windows"]
    shares = [windows.eval_batches(pieces, batch_size=2, encoder_len=TE, decoder_len=TD,
                              process_index=i, process_count=3) for i in range(3)]  # fmt: skip
    assert len({len(s) for s in shares}) == 1  # every host runs the same number of batches
    got = sum(int(b["weights"].sum()) for s in shares for b in s)
    assert got == sum(s.shape[0] - 1 for s in pieces.sequences)
    rows = [
        tuple(r)
        for s in shares
        for b in s
        for r, w in zip(np.concatenate([b["encoder_tokens"], b["targets"]], 1), b["weights"], strict=True)
        if w.any()
    ]
    assert sorted(rows) == sorted(tuple(r) for r in whole)  # each window on exactly one host


def _lanes(batches):
    """Each row's carried windows split at its resets: [(targets read, encoder reads)] per
    piece segment, checking on the way that a window's encoder reads the row's last
    window's targets."""
    segments = []
    for r in range(batches[0]["genre"].shape[0]):
        prev = None
        for b in batches:
            if b["reset"][r]:
                segments.append([])
            elif prev is not None:
                np.testing.assert_array_equal(b["encoder_tokens"][r], prev)
            segments[-1].append(b["targets"][r][b["weights"][r] > 0])
            prev = b["targets"][r]
    return [np.concatenate(seg) for seg in segments]


def test_carried_windows_read_each_piece_in_order_once_an_epoch():
    pieces = _pieces([3, 9, 17, 30])
    td = 4
    epoch = sum(-(-(s.shape[0] - 1) // td) for s in pieces.sequences)  # windows a row reads an epoch
    kw = dict(batch_size=4, encoder_len=td, decoder_len=td, seed=5)
    batches = list(itertools.islice(_batches(pieces, carried=True, **kw), epoch))
    segments = _lanes(batches)
    # Every row read every piece whole, first note to EOS, one after another.
    want = sorted(tuple(s[1:]) for s in pieces.sequences)
    assert len(segments) == 4 * len(pieces)
    for r in range(4):
        assert sorted(tuple(s) for s in segments[r * len(pieces) : (r + 1) * len(pieces)]) == want
    assert any(len(set(b["reset"])) > 1 for b in batches)  # rows read in their own orders
    resumed = next(_batches(pieces, start_step=7, carried=True, **kw))
    for k in resumed:
        np.testing.assert_array_equal(resumed[k], batches[7][k])
    with pytest.raises(WindowError, match="encoder_len == decoder_len"):
        next(_batches(pieces, carried=True, **{**kw, "encoder_len": 6}))


def test_carried_windows_keep_one_transposition_a_piece():
    pieces = _pieces([9, 17, 30])
    vocab = 60
    ids = np.arange(vocab)
    tables = np.stack([np.where(ids >= 10, ids + s, ids) for s in (-1, 0, 1)]).astype(np.int32)
    pieces.sequences[0][1] = 55  # a note of the first piece only, which cannot move up
    tables[2, 55] = -1
    kw = dict(batch_size=4, encoder_len=4, decoder_len=4, seed=2, transpose=tables, carried=True)
    batches = list(itertools.islice(_batches(pieces, **kw), 2 * (3 + 5 + 8)))  # 2 epochs
    shifts = {0: set(), 1: set(), 2: set()}
    for seg in _lanes(batches):
        i = next(i for i, s in enumerate(pieces.sequences) if s.shape[0] - 1 == seg.shape[0])
        original = pieces.sequences[i][1:]
        notes = original >= 10
        shift = set((seg[notes] - original[notes]).tolist())
        assert len(shift) == 1  # the whole piece moved by one shift
        shifts[i] |= shift
    assert 1 not in shifts[0] and shifts[1] | shifts[2] == {-1, 0, 1}


def test_carried_eval_batches_cover_every_note_once_from_its_piece_start():
    pieces = _pieces([1, 3, 4, 9, 25, 12])
    kw = dict(encoder_len=4, decoder_len=4, carried=True)
    whole = windows.eval_batches(pieces, batch_size=4, **kw)
    assert sorted(tuple(s) for s in _lanes(whole) if s.size) == sorted(tuple(s[1:]) for s in pieces.sequences)
    # Two hosts of 2 rows feed the same lanes, in the same number of batches.
    shares = [windows.eval_batches(pieces, batch_size=2, process_index=i, process_count=2, **kw)
              for i in range(2)]  # fmt: skip
    assert len(shares[0]) == len(shares[1]) == len(whole)
    for t, b in enumerate(whole):
        for k in b:
            np.testing.assert_array_equal(b[k], np.concatenate([shares[0][t][k], shares[1][t][k]]))


def test_transposition_moves_pitch_and_nothing_else():
    start = np.arange(40) * 0.25
    pitch = 60 + (np.arange(40) % 12)
    notes = np.concatenate([
        ip_notes(start, pitch + k) for k in range(-2, 3)
    ])  # fmt: skip
    codec = codec_fit.fit([ip_notes(start, pitch + k) for k in range(-2, 3)], min_count=1)
    seqs = [np.concatenate([[codec_lib.BOS], codec.encode(ip_notes(start, pitch)), [codec_lib.EOS]])]
    pieces = Pieces([s.astype(np.int32) for s in seqs], np.array([0], np.int32))
    tables = codec.transpose_tables(2)
    kw = dict(batch_size=32, encoder_len=TE, decoder_len=TD, seed=0)
    plain = next(_batches(pieces, **kw))
    moved = next(_batches(pieces, transpose=tables, **kw))
    shifts = set()
    for a, b in zip(np.concatenate([plain["encoder_tokens"], plain["targets"]], 1),
                    np.concatenate([moved["encoder_tokens"], moved["targets"]], 1), strict=True):  # fmt: skip
        is_note = codec.is_note(a)
        np.testing.assert_array_equal(a[~is_note], b[~is_note])  # specials and PAD untouched
        va = codec.vocabulary[a[is_note] - codec.first_note_id]
        vb = codec.vocabulary[b[is_note] - codec.first_note_id]
        np.testing.assert_array_equal(va[:, 1:], vb[:, 1:])  # velocity, duration, onset kept
        delta = set((vb[:, 0].astype(int) - va[:, 0]).tolist())
        assert len(delta) == 1  # one shift for the whole window
        shifts |= delta
    assert shifts <= set(range(-2, 3)) and len(shifts) > 1
    assert len(notes) == 200


def ip_notes(start, pitch):
    from jaxmusic import midi_io

    return midi_io.make_notes(start, start + 0.2, pitch, 80)


def test_transpose_table_marks_unseen_results():
    start = np.array([1.0, 2.0, 3.0])  # every gap 1 s: one onset bin for all three
    codec = codec_fit.fit([ip_notes(start, np.array([60, 62, 64]))], min_count=1)
    up2 = codec_lib.transpose_table(codec, 2)
    ids = codec.encode(ip_notes(start, np.array([60, 62, 64])))
    assert up2[ids].tolist() == [ids[1], ids[2], -1]  # 66 was never seen
    assert up2[: codec.first_note_id].tolist() == list(range(codec.first_note_id))


def test_bad_settings_are_clear_errors():
    with pytest.raises(UsageError, match="batch_size 10 does not divide among 4 devices"):
        batching.layout(10, devices=4, processes=4)
    with pytest.raises(UsageError, match="batch_size 12 does not divide among data_shards 8"):
        batching.layout(12, devices=4, processes=4, data_shards=8)
    split = batching.layout(16, devices=8, processes=4, data_shards=8)
    assert (split.host_size, split.device_size, split.shards_per_host, split.shard_rows) == (4, 2, 2, 2)
    with pytest.raises(WindowError, match="longer than every piece"):
        next(_batches(_pieces([3, 4]), batch_size=2, encoder_len=8, decoder_len=8, seed=0))


def _keyed_codec_and_pieces(n_pieces=6):
    """A codec in which every note moves by +-3 semitones (one velocity and length, and
    each gap, a piece's first included, at every pitch of 40..95), and pieces in major
    keys of several tonics."""
    from jaxmusic import midi_io

    def notes(pitches):
        start = np.arange(len(pitches)) * 0.5
        return midi_io.make_notes(start, start + 0.5, np.asarray(pitches), np.full(len(pitches), 80))

    codec = codec_fit.fit([notes(np.arange(40, 96))] + [notes([p]) for p in range(40, 96)], min_count=1)
    rng = np.random.default_rng(3)
    scale = np.array([60, 62, 64, 65, 67, 69, 71, 72])
    seqs = []
    for tonic, n in zip(rng.integers(-5, 6, n_pieces), rng.integers(8, 30, n_pieces), strict=True):
        ids = codec.encode(notes(rng.choice(scale + tonic, int(n))))
        seqs.append(np.concatenate([[codec_lib.BOS], ids, [codec_lib.EOS]]).astype(np.int32))
    return codec, Pieces(seqs, np.zeros(n_pieces, np.int32))


def test_eval_windows_give_the_key_of_their_piece_so_far():
    from jaxmusic import music_stats

    codec, pieces = _keyed_codec_and_pieces()
    tiled = windows.eval_windows(pieces, TE, TD, _keyed(codec))
    tokens, keys = tiled["windows"], tiled["key"]
    assert "key" not in windows.eval_windows(pieces, TE, TD)
    i = 0
    for seq in pieces.sequences:
        for k in range(-(-(seq.shape[0] - 1) // TD)):
            # window k's encoder ends at sequence index k * Td: the piece so far is seq[: k * Td + 1]
            assert tokens[i, TE - 1] == seq[k * TD]
            assert keys[i] == music_stats.estimate_key(codec.decode(seq[: k * TD + 1]))
            i += 1
    assert i == keys.shape[0] and len(set(keys.tolist())) > 3
    batches = windows.eval_batches(
        pieces, batch_size=4, encoder_len=TE, decoder_len=TD, conditioner=_keyed(codec)
    )
    np.testing.assert_array_equal(np.concatenate([b["key"] for b in batches])[: keys.shape[0]], keys)


@pytest.mark.parametrize("density", [False, True])
@pytest.mark.parametrize("carried", [False, True])
def test_training_keys_follow_the_window_and_its_transposition(carried, density):
    """Where a window's encoder reads its piece from the start (drawn windows: its BOS
    in the encoder; carried windows: the window after a reset), the piece so far is the
    encoder's notes: the batch's key is then the key of the (transposed) encoder tokens
    (and its density the density of those notes)."""
    import jax.numpy as jnp

    codec, pieces = _keyed_codec_and_pieces()
    cond = _keyed(codec, density=density)
    te, td = (TD, TD) if carried else (TE, TD)
    kw = dict(batch_size=48, encoder_len=te, decoder_len=td, seed=2, carried=carried,
              transpose=codec.transpose_tables(3), conditioner=cond)  # fmt: skip
    originals = [np.concatenate([np.zeros(te + td, np.int32), s]) for s in pieces.sequences]
    checked, moved, after_reset, densities = 0, 0, np.zeros(48, bool), set()
    for batch in itertools.islice(_batches(pieces, **kw), 8):
        enc = batch["encoder_tokens"]
        told = cond.of_window_jax(jnp.asarray(enc), jnp.asarray(batch["genre"]))
        if carried:  # the second window of a piece reads its first te notes
            whole, after_reset = after_reset & (batch["reset"] == 0), batch["reset"] > 0
        else:
            whole = (enc == codec_lib.BOS).any(1)
        np.testing.assert_array_equal(batch["key"][whole], np.asarray(told.key)[whole])
        if density:
            np.testing.assert_array_equal(batch["density"][whole], np.asarray(told.density)[whole])
        checked += int(whole.sum())
        moved += sum(not any(_is_slice_of(r, o) for o in originals) for r in enc[whole])
        densities.update(batch["density"][whole].tolist())
    assert checked > 10 and moved > 3  # rows checked, some of them transposed
    # n >= 2 notes over n - 1 gaps of 0.5 s: 2 to 4 a second, the bins from 1.5 to 5
    told = densities - {NO_DENSITY}
    assert told and told <= {1, 2, 3}


def test_common_key_moves_each_window_to_c_major_or_a_minor():
    """common_key: where a drawn window's encoder reads its piece from the start, its key
    is the key of its moved encoder tokens, and every key told is C major or A minor; the
    evaluation's windows are the plain ones moved by their key, the same targets read."""
    import jax.numpy as jnp

    codec, pieces = _keyed_codec_and_pieces()
    tables = codec.transpose_tables(12)
    plain_cond, common_cond = _keyed(codec), _keyed(codec, common=tables)
    common = {conditioning.KEY_NAMES.index("C major"), conditioning.KEY_NAMES.index("A minor")}
    kw = dict(batch_size=48, encoder_len=TE, decoder_len=TD, seed=2)
    checked = 0
    for batch in itertools.islice(_batches(pieces, conditioner=common_cond, **kw), 4):
        enc = batch["encoder_tokens"]
        whole = (enc == codec_lib.BOS).any(1)
        told_keys = plain_cond.of_window_jax(jnp.asarray(enc), jnp.asarray(batch["genre"])).key
        np.testing.assert_array_equal(batch["key"][whole], np.asarray(told_keys)[whole])
        told = batch["key"] != NO_KEY
        assert set(batch["key"][told].tolist()) <= common
        checked += int((whole & told).sum())
    assert checked > 10

    ev = dict(batch_size=4, encoder_len=TE, decoder_len=TD)
    moved = windows.eval_batches(pieces, conditioner=common_cond, **ev)
    plain = windows.eval_batches(pieces, conditioner=plain_cond, **ev)
    shifts = set()
    for m, p in zip(moved, plain, strict=True):
        np.testing.assert_array_equal(m["weights"], p["weights"])
        shift = conditioning.common_shift(p["key"])
        np.testing.assert_array_equal(m["key"], conditioning.transposed(p["key"], shift))
        np.testing.assert_array_equal(m["targets"], tables[12 + shift[:, None], p["targets"]])
        shifts.update(shift.tolist())
    assert len(shifts) > 3  # the pieces' tonics differ
    with pytest.raises(WindowError, match="carried windows"):
        next(_batches(pieces, conditioner=common_cond, carried=True, **(kw | {"encoder_len": TD})))
    with pytest.raises(WindowError, match="not with a random transposition"):
        next(_batches(pieces, conditioner=common_cond, transpose=codec.transpose_tables(3), **kw))
    with pytest.raises(ValueError, match="at least 6 semitones"):
        _keyed(codec, common=tables[9:16])


def test_keys_of_ids_outside_the_codec_are_a_window_error():
    codec, pieces = _keyed_codec_and_pieces()
    small = Conditioner(key=True, context="piece", weights=conditioning.id_weights(codec)[:20])  # 20 ids
    with pytest.raises(WindowError, match="outside the codec's vocabulary of 20"):
        windows.eval_windows(pieces, TE, TD, small)
