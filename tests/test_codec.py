"""codec: bins, the seed's encoding, round trips, save/load."""

import json

import helpers
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from helpers import CHORDS_AND_RESTS, DRUMS, Track, write_midi
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmusic import codec, codec_fit, midi_io, models, music_stats, recent


def _notes(start, dur, pitch, vel):
    start = np.asarray(start, np.float64)
    return midi_io.sort_notes(midi_io.make_notes(start, start + np.asarray(dur), pitch, vel))


def test_duration_and_velocity_bins_at_quantiles():
    dur = np.repeat([0.1, 0.2, 0.4, 0.8], 25)
    vel = np.repeat([30, 60, 90, 120], 25)
    notes = _notes(np.arange(100.0), dur, 60, vel)
    c = codec_fit.fit([notes], onset_bins=0, min_count=1)
    # Quartiles of 25 x {0.1, 0.2, 0.4, 0.8} sit at indices 24.75, 49.5, 74.25 and
    # interpolate between the groups: 0.1 + .75 * .1, 0.2 + .5 * .2, 0.4 + .25 * .4.
    np.testing.assert_allclose(c.duration_edges, [0.175, 0.3, 0.5])
    np.testing.assert_allclose(c.duration_values, [0.1, 0.2, 0.4, 0.8])
    assert c.velocity_values == (30, 60, 90, 120)
    q = c.quantize(notes)
    np.testing.assert_array_equal(q[:, 2], np.repeat([0, 1, 2, 3], 25))
    np.testing.assert_array_equal(q[:, 1], np.repeat([0, 1, 2, 3], 25))


def test_equal_durations_share_a_bin_despite_float_noise():
    start = np.array([1.0, 2.0, 3.0, 4.0])
    notes = midi_io.make_notes(start, start + 0.2, 60, 80)  # 1.2 - 1.0 != 3.2 - 3.0 in floats
    assert len(set((notes["end"] - notes["start"]).tolist())) > 1
    c = codec_fit.fit([notes, _notes([0.0], [0.5], 60, 80)], min_count=1)
    assert len(set(c.quantize(notes)[:, 2].tolist())) == 1


def test_repeated_values_merge_bins():
    notes = _notes(np.arange(10.0), np.full(10, 0.5), 60, np.full(10, 100))
    c = codec_fit.fit([notes], onset_bins=0, min_count=1)
    assert c.duration_values == (0.5,) and c.velocity_values == (100,)


def test_seed_encoding_with_no_onset_bins():
    # onset_bins=0 is the seed: the id is (pitch, velocity bin, duration bin);
    # decoding lays the notes back to back, so a chord becomes an arpeggio.
    notes = _notes([0, 0, 0, 3], [1, 2, 1, 2], [60, 64, 67, 72], [40, 100, 40, 100])
    c = codec_fit.fit([notes], onset_bins=0, duration_bins=2, velocity_bins=2, min_count=1)
    assert not c.has_onsets and c.num_onset_bins == 1
    np.testing.assert_array_equal(
        c.vocabulary[:, :4], [[60, 0, 0, 0], [64, 1, 1, 0], [67, 0, 0, 0], [72, 1, 1, 0]]
    )
    assert not c.vocabulary[:, 4].any()  # merged: one instrument
    ids = c.encode(notes)
    np.testing.assert_array_equal(ids, c.first_note_id + np.arange(4))
    out = c.decode(ids)
    np.testing.assert_allclose(out["start"], [0, 1, 3, 4])
    np.testing.assert_allclose(out["end"] - out["start"], [1, 2, 1, 2])
    np.testing.assert_array_equal(out["velocity"], [40, 100, 40, 100])


def test_round_trip_of_midi_with_chords_rests_tempo_tracks_and_drums(tmp_path):
    melody = [n for n in CHORDS_AND_RESTS if n[2] >= 67]
    harmony = [n for n in CHORDS_AND_RESTS if n[2] < 67]
    path = write_midi(
        tmp_path / "a.mid",
        [Track(melody, 0, 0), Track(harmony, 1, 24), Track(DRUMS, channel=9)],
        tempos=[(0, 120), (6, 60)],
    )
    notes = midi_io.read(path).notes
    # In seconds, positive onset gaps take 4 values (0.25, 0.5, 1, 2) and durations 4
    # (0.25, 0.5, 1, 2, the last once in 12): the default 8 onset bins and 16
    # duration bins give each value a bin of its own, so the round trip is exact.
    c = codec_fit.fit([notes], duration_bins=16, min_count=1)
    out = c.decode(c.encode(notes))
    np.testing.assert_array_equal(out["pitch"], notes["pitch"])
    np.testing.assert_allclose(out["start"], notes["start"], atol=1e-9)
    np.testing.assert_allclose(out["end"], notes["end"], atol=1e-9)
    assert music_stats.match_onsets(notes, out).f1 == 1.0


def test_onset_error_does_not_accumulate():
    # Gaps of 0.3 s with bin values {0, 0.25, 0.5}: plain rounding would drift 50 ms
    # a note; error feedback keeps every onset within half a bin (0.125 s).
    start = np.arange(200) * 0.3
    notes = _notes(start, np.full(200, 0.1), 60, 80)
    values = np.array([0.0, 0.25, 0.5])
    bins = codec._onset_bins_with_feedback(notes["start"], values)
    decoded = np.cumsum(values[bins])
    assert np.abs(decoded - start).max() <= 0.125 + 1e-9


def test_rare_long_gap_gets_a_bin_of_its_own():
    # 12 short gaps and one rest of 2 s: quantile bins merge the rest with 0.5 s.
    start = np.cumsum([0] + [0.25, 0.5] * 6 + [2.0])
    notes = _notes(start, np.full(14, 0.2), 60, 80)
    assert 2.0 not in codec_fit.fit([notes], onset_fit="quantile").onset_values
    c = codec_fit.fit([notes], min_count=1)
    np.testing.assert_allclose(c.onset_values, [0.0, 0.25, 0.5, 2.0])
    np.testing.assert_allclose(c.decode(c.encode(notes))["start"], start)


def test_lloyd_values_are_cluster_means():
    x = np.concatenate([np.full(50, 0.1), np.full(50, 0.12), np.full(100, 1.0)])
    np.testing.assert_allclose(
        codec_fit._lloyd_values(codec_fit.Counts.of(x), np.array([0.05, 0.5])), [0.11, 1.0]
    )


def _lloyd_over_samples(x, values, iterations=100):
    """The Lloyd refinement over the samples themselves (the codec's before its
    statistics became counts): what `_lloyd_values` over counts must equal."""
    x = np.sort(x)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    values = np.asarray(values, np.float64).copy()
    for _ in range(iterations):
        cuts = np.concatenate([[0], np.searchsorted(x, (values[1:] + values[:-1]) / 2), [x.size]])
        counts = np.diff(cuts)
        new = np.where(counts > 0, (csum[cuts[1:]] - csum[cuts[:-1]]) / np.maximum(counts, 1), values)
        if np.allclose(new, values, rtol=0, atol=1e-9):
            break
        values = new
    return np.sort(values)


_GRID = [0.0, 0.01, 1 / 3, 0.25, 0.5, 0.1 + 0.2, 2.0, 7.25]
_grid_samples = hnp.arrays(np.float64, st.integers(1, 300), elements=st.sampled_from(_GRID))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(x=_grid_samples, noise=st.integers(0, 2**31))
def test_counts_give_numpys_quantiles_medians_and_sums_to_the_bit(x, noise):
    # Repeated values (what counts fold) plus a few distinct ones near them.
    x = np.concatenate([x, x[: x.size // 3] + np.random.default_rng(noise).normal(0, 1e-7, x.size // 3)])
    counts = codec_fit.Counts.of(x)
    q = np.array([0.0, 0.1, 0.25, 1 / 3, 0.5, 0.75, 0.995, 1.0])
    assert counts.quantile(q).tobytes() == np.quantile(x, q).tobytes()
    assert counts.median() == np.median(x)
    higher = np.quantile(x, 0.995, method="higher")
    assert counts.ranked(np.ceil((x.size - 1) * 0.995).astype(np.int64)) == higher
    start = np.quantile(x, [0.2, 0.5, 0.8])
    assert codec_fit._lloyd_values(counts, start).tobytes() == _lloyd_over_samples(x, start).tobytes()
    halves = codec_fit.Counts.of(x[::2]).merge(codec_fit.Counts.of(x[1::2]))
    assert halves.values.tobytes() == counts.values.tobytes()
    assert halves.counts.tolist() == counts.counts.tolist()


def test_a_codec_fitted_from_merged_statistics_equals_one_fitted_on_all_the_pieces():
    rng = np.random.default_rng(0)
    pieces = []
    for n in rng.integers(1, 400, 12):
        start = np.cumsum(rng.choice([0.0, 0.0, 0.125, 0.25, 0.5, 1 / 3, 3.0], n))
        pieces.append(_notes(start, rng.choice([0.1, 0.25, 0.5, 1.5], n), rng.integers(40, 80, n),
                             rng.integers(1, 128, n)))  # fmt: skip
    whole = codec_fit.fit(pieces, genres=["a", "b"])
    parts = [codec_fit.NoteStats(), codec_fit.NoteStats()]
    for i, p in enumerate(pieces):
        parts[i % 2].add(p)
    parts[1]._PENDING = 0  # fold at every piece in one part, never in the other
    stats = codec_fit.NoteStats().merge(parts[1]).merge(parts[0])
    assert stats.notes == sum(p.shape[0] for p in pieces)
    bins = codec_fit.fit_bins(stats, genres=["a", "b"])
    counts = sum(codec_fit.tuple_counts(bins, bins.quantize(p)) for p in pieces)
    merged = codec_fit.with_vocabulary(bins, counts)
    assert merged.fingerprint == whole.fingerprint
    assert merged.vocab_size > 50
    assert merged.onset_values == (0.0, 0.125, 0.25, 0.333333, 0.5, 3.0)  # "with the previous" + 5 gaps
    with pytest.raises(codec.CodecError, match="no notes"):
        codec_fit.fit_bins(codec_fit.NoteStats())


def test_specials_and_genres_in_decode():
    notes = _notes([0, 0.5], [0.5, 0.5], [60, 62], [80, 80])
    c = codec_fit.fit([notes], genres=["jazz", "rock"], min_count=1)
    assert c.first_note_id == codec.NUM_SPECIAL + 2
    assert c.genre_id("rock") == codec.NUM_SPECIAL + 1
    a, b = c.encode(notes)
    ids = [codec.BOS, c.genre_id("jazz"), a, codec.PAD, codec.UNK, b, codec.EOS, a, a]
    out = c.decode(ids)
    assert list(out["pitch"]) == [60, 62]
    with pytest.raises(codec.CodecError, match="unknown genre 'pop'; this codec knows: jazz, rock"):
        c.genre_id("pop")
    with pytest.raises(codec.CodecError, match=f"id {c.vocab_size} is outside"):
        c.decode([a, c.vocab_size])


def test_unknown_tuples_become_nearest_or_unk():
    train = _notes([0, 1, 2], [0.5, 0.5, 0.5], [60, 64, 67], [80, 80, 80])
    c = codec_fit.fit([train], onset_bins=2, min_count=1)
    new = _notes([0, 1], [0.5, 0.5], [61, 64], [80, 80])  # pitch 61 never seen
    assert c.unknown_mask(new).tolist() == [True, False]
    assert c.encode(new, unknown="unk")[0] == codec.UNK
    nearest = c.vocabulary[c.encode(new)[0] - c.first_note_id]
    assert nearest[0] == 60 and nearest[3] == c.quantize(new)[0, 3]  # nearest pitch, same onset bin


def test_min_count_drops_rare_tuples():
    notes = _notes(np.arange(7.0), np.full(7, 0.5), [60, 60, 60, 62, 62, 62, 64], np.full(7, 80))
    c = codec_fit.fit([notes], onset_bins=0, min_count=2)
    assert sorted(set(c.vocabulary[:, 0])) == [60, 62]


def test_save_and_load_round_trip(tmp_path):
    notes = helpers.seconds_at_120(CHORDS_AND_RESTS)
    c = codec_fit.fit([notes], genres=["classical"], min_count=1)
    path = tmp_path / "codec.json"
    c.save(path)
    back = codec.load(path, expected_fingerprint=c.fingerprint)
    assert back.fingerprint == c.fingerprint
    np.testing.assert_array_equal(back.encode(notes), c.encode(notes))
    np.testing.assert_array_equal(back.decode(c.encode(notes)), c.decode(c.encode(notes)))
    assert back.genres == ("classical",)


def test_load_refuses_other_or_edited_codecs(tmp_path):
    notes = helpers.seconds_at_120(CHORDS_AND_RESTS)
    c = codec_fit.fit([notes], min_count=1)
    path = tmp_path / "codec.json"
    c.save(path)
    other = codec_fit.fit([notes], onset_bins=0, min_count=1)
    with pytest.raises(codec.CodecError, match="does not match the expected"):
        codec.load(path, expected_fingerprint=other.fingerprint)
    d = json.loads(path.read_text())
    d["vocabulary"][0][0] += 1
    path.write_text(json.dumps(d))
    with pytest.raises(codec.CodecError, match="fingerprint does not match its content"):
        codec.load(path)
    d["version"] = 99
    path.write_text(json.dumps(d))
    with pytest.raises(codec.CodecError, match="format version 99"):
        codec.load(path)
    path.write_text("{")
    with pytest.raises(codec.CodecError, match="cannot read codec"):
        codec.load(path)


def test_fit_refuses_bad_arguments():
    notes = helpers.seconds_at_120(CHORDS_AND_RESTS)
    with pytest.raises(codec.CodecError, match="no notes"):
        codec_fit.fit([])
    with pytest.raises(codec.CodecError, match="onset_fit"):
        codec_fit.fit([notes], onset_fit="kmeans")
    with pytest.raises(codec.CodecError, match="genre names repeat"):
        codec_fit.fit([notes], genres=["pop", "pop"])


sorted_starts = hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(0, 30, allow_nan=False)).map(
    np.sort
)


@settings(max_examples=60, deadline=None)
@given(start=sorted_starts, data=st.data())
def test_round_trip_keeps_pitch_order_and_onset_order(start, data):
    n = start.shape[0]
    pitch = data.draw(hnp.arrays(np.int16, n, elements=st.integers(0, 127)))
    dur = data.draw(hnp.arrays(np.float64, n, elements=st.floats(0.01, 4)))
    vel = data.draw(hnp.arrays(np.int16, n, elements=st.integers(1, 127)))
    notes = _notes(start, dur, pitch, vel)
    c = codec_fit.fit([notes], min_count=1)
    out = c.decode(c.encode(notes))
    np.testing.assert_array_equal(out["pitch"], notes["pitch"])  # pitch order kept
    assert np.all(np.diff(out["start"]) >= 0)  # onsets in the same order
    assert np.all(out["end"] > out["start"])


# -- instruments --------------------------------------------------------------

# codec.json as jaxmusic wrote it before the codec had instruments (its fingerprint then).
OLD_CODEC_JSON = (
    '{"format": "jaxmusic.codec", "version": 1, "fingerprint": "73003f9f71b69b86", "velocity_edges": [64.0], '
    '"velocity_values": [40, 100], "duration_edges": [0.5], "duration_values": [0.25, 1.0], "onset_values": '
    '[0.0, 0.5], "chord_tolerance": 0.02, "genres": ["jazz"], "min_count": 2, "vocabulary": [[60, 0, 0, 0], '
    "[64, 1, 1, 1]]}"
)


def test_a_codec_written_before_instruments_loads_as_merged_and_writes_back_the_same():
    c = codec.from_dict(json.loads(OLD_CODEC_JSON))
    assert c.instruments.mode == "merged" and c.instruments.count == 1 and not c.has_drums
    np.testing.assert_array_equal(c.vocabulary[:, 4], [0, 0])
    assert c.to_dict() == json.loads(OLD_CODEC_JSON)  # same fields, same fingerprint
    notes = c.decode([c.first_note_id, c.first_note_id + 1])
    assert not notes["program"].any() and not notes["is_drum"].any()


def test_an_instrument_mode_the_codec_does_not_know_is_one_line():
    d = codec_fit.fit([_band()], instruments="family", min_count=1).to_dict()
    d["instruments"] = "orchestra"
    body = {k: v for k, v in d.items() if k not in ("format", "version", "fingerprint")}
    d["fingerprint"] = codec._fingerprint(body)  # a well-formed file of a mode this jaxmusic does not know
    with pytest.raises(codec.CodecError, match="instruments 'orchestra': not one of merged, family, program"):
        codec.from_dict(d)


def _band() -> np.ndarray:
    """Two bars of a band: piano chords (program 1), a bass line (33), a guitar riff (27,
    and one note on 29) and drums (kick 36, snare 38), each on a beat grid."""
    rows = []
    for bar in range(2):
        t = 2.0 * bar
        for beat in range(4):
            rows.append((t + beat / 2, 0.1, 36 if beat % 2 == 0 else 38, 100, 0, True))
            rows.append((t + beat / 2, 0.5, 40 + beat, 80, 33, False))
            rows.append((t + beat / 2 + 0.25, 0.25, 64 + beat, 90, 27 if beat else 29, False))
        rows += [(t, 1.0, p, 70, 1, False) for p in (60, 64, 67)]
    start, length, pitch, velocity, program, drum = (np.array(c) for c in zip(*rows, strict=True))
    return midi_io.sort_notes(midi_io.make_notes(start, start + length, pitch, velocity, program, drum))


def test_family_round_trip_per_instrument_and_for_drums():
    notes = _band()
    c = codec_fit.fit([notes], instruments="family", duration_bins=4, min_count=1)
    assert c.has_drums and c.instruments.count == 17
    assert c.instruments.programs[:5] == (1, 8, 16, 27, 33)  # piano 1, unplayed (first), guitar 27, bass 33
    out = c.decode(c.encode(notes))
    want = c.instruments.order(notes)
    np.testing.assert_array_equal(out["pitch"], want["pitch"])
    np.testing.assert_allclose(out["start"], want["start"], atol=1e-9)
    np.testing.assert_array_equal(out["is_drum"], want["is_drum"])
    # Each family is written as its most played program: the guitar's one 29 comes back as 27.
    written = np.where(want["program"] == 29, 27, want["program"])
    np.testing.assert_array_equal(out["program"], np.where(want["is_drum"], 0, written))
    pitched = ~want["is_drum"]
    np.testing.assert_allclose((out["end"] - out["start"])[pitched], (want["end"] - want["start"])[pitched])
    np.testing.assert_allclose((out["end"] - out["start"])[~pitched], 0.1)  # drums: their median length
    # Notes that start together: drums first, then by family (piano 0, bass 4), pitch low to high.
    first = out[out["start"] == 0.0]
    assert first["is_drum"][0] and list(first["program"][1:]) == [1, 1, 1, 33]
    assert list(first["pitch"][1:4]) == [60, 64, 67]


def test_factors_name_each_ids_parts():
    """Each note id's parts (`codec.factors`) are its pitch on its instrument, velocity,
    duration, onset and instrument bins, offset part by part; other ids share the last row."""
    c = codec_fit.fit([_band()], instruments="family", duration_bins=4, min_count=1)
    f = codec.factors(c)
    p, kv, kd, ko, ki = c.grid_shape
    assert f.shape == (c.vocab_size, 5) and f.dtype == np.int32
    assert (f[: c.first_note_id] == p * ki + kv + kd + ko + ki).all()
    v = c.vocabulary.astype(np.int32)
    start = p * ki
    want = np.stack([v[:, 0] * ki + v[:, 4], start + v[:, 1], start + kv + v[:, 2], start + kv + kd + v[:, 3],
                     start + kv + kd + ko + v[:, 4]], axis=1)  # fmt: skip
    np.testing.assert_array_equal(f[c.first_note_id :], want)
    # Two notes of one pitch share the pitch row only when one instrument plays them.
    snare = c.first_note_id + np.flatnonzero(v[:, 4] == c.instruments.drums)[0]
    assert f[snare, 0] == v[snare - c.first_note_id, 0] * ki + c.instruments.drums


def test_repeat_groups_are_each_notes_pitch_instrument_and_onset():
    """Two ids share a group (`models.repeat_groups`, the ids a copy may vary among) exactly
    when both are notes of one pitch, instrument and onset bin; the specials share their own."""
    soft = _band()
    soft["velocity"] = np.where(soft["is_drum"], soft["velocity"], 20)  # the same notes played softly
    c = codec_fit.fit([_band(), soft], instruments="family", duration_bins=4, min_count=1)
    groups = models.repeat_groups(codec.factors(c))[:, 0]
    assert groups.shape == (c.vocab_size,) and groups.dtype == np.int32
    v = c.vocabulary[:, [0, 4, 3]].astype(np.int64)  # pitch, instrument, onset
    same = (v[:, None, :] == v[None, :, :]).all(-1)
    notes = groups[c.first_note_id :]
    np.testing.assert_array_equal(notes[:, None] == notes[None, :], same)
    assert not same.all() and (same.sum(1) > 1).any()  # groups of one id and of several
    assert len(set(groups[: c.first_note_id])) == 1 and groups[0] not in set(notes)


def test_recent_groups_are_each_notes_pitch_on_its_instrument_and_one_more_for_the_rest():
    """Two notes share a group of the recent counts (`recent.groups`) exactly when they
    have one pitch and instrument, and an instrument when they have one; every other id is
    in one group past the notes' and one instrument of its own."""
    soft = _band()
    soft["velocity"] = np.where(soft["is_drum"], soft["velocity"], 20)
    c = codec_fit.fit([_band(), soft], instruments="family", duration_bins=4, min_count=1)
    groups, instrument = recent.groups(codec.factors(c), c.first_note_id).T
    v = c.vocabulary[:, [0, 4]].astype(np.int64)  # pitch, instrument
    notes = groups[c.first_note_id :]
    np.testing.assert_array_equal(notes[:, None] == notes[None, :], (v[:, None] == v[None, :]).all(-1))
    assert len(set(notes)) < len(notes)
    assert (groups[: c.first_note_id] == notes.max() + 1).all()
    same = instrument[c.first_note_id :, None] == instrument[None, c.first_note_id :]
    np.testing.assert_array_equal(same, v[:, 1, None] == v[None, :, 1])
    assert len(set(instrument[: c.first_note_id])) == 1 and instrument[0] not in set(
        instrument[c.first_note_id :]
    )
    assert sorted(set(instrument)) == list(range(len(set(instrument))))


def test_program_mode_keeps_every_program():
    notes = _band()
    c = codec_fit.fit([notes], instruments="program", min_count=1)
    out = c.decode(c.encode(notes))
    want = c.instruments.order(notes)
    np.testing.assert_array_equal(out["program"], np.where(want["is_drum"], 0, want["program"]))


def test_drums_are_never_transposed():
    notes = _band()
    c = codec_fit.fit([notes, _moved(notes, 2)], instruments="family", min_count=1)
    table = codec.transpose_table(c, 2)
    drum_ids = c.first_note_id + np.flatnonzero(c.vocabulary[:, 4] == c.instruments.drums)
    assert drum_ids.size
    np.testing.assert_array_equal(table[drum_ids], drum_ids)
    moved = c.decode(table[c.encode(notes)])
    want = c.instruments.order(notes)
    np.testing.assert_array_equal(moved["pitch"], want["pitch"] + np.where(want["is_drum"], 0, 2))


def _moved(notes: np.ndarray, k: int) -> np.ndarray:
    out = notes.copy()
    out["pitch"] += np.where(out["is_drum"], 0, k).astype(np.int16)
    return out


def test_an_instrument_the_codec_never_saw_becomes_the_nearest_family():
    notes = _band()
    keep = (notes["program"] != 27) & (notes["program"] != 29)  # no guitar (family 3) in training
    c = codec_fit.fit([notes[keep]], instruments="family", min_count=1)
    guitar = midi_io.make_notes([0.0], [0.5], [45], [80], 26)
    out = c.decode(c.encode(guitar))
    assert out["program"][0] == 33  # bass (family 4), one family away; piano (0) is three
    assert c.unknown_mask(guitar).all()


def test_build_report_counts_fallbacks_per_instrument():
    notes = _band()
    c = codec_fit.fit([notes], instruments="family", min_count=2)
    counts = codec_fit.tuple_counts(c, c.quantize(notes))
    report = codec_fit.instrument_report(c, counts)
    assert set(report) == {"piano", "guitar", "bass", "drums"}
    # The first kick is the only drum note with onset gap 0 (from the piece's start): its tuple is seen once.
    assert report["drums"]["notes"] == 8 and report["drums"]["fallback_share"] == 1 / 8
    # Bass: 8 notes of 4 pitches twice each at one onset/length: none fall back.
    assert report["bass"]["fallback_share"] == 0.0 and report["bass"]["pseudo_notes"] == 4
    assert report["guitar"]["pseudo_notes"] == 4  # 4 pitches, each twice: in the vocabulary at min_count 2


def test_a_nearest_transposition_keeps_pitch_onset_and_instrument_and_takes_the_nearest_length():
    # Pitch 60 is played long and loud, pitch 62 only short and soft: the exact move of
    # the long 60 up a tone is not in the vocabulary; the nearest is the short 62.
    start = np.arange(8.0)
    notes = midi_io.make_notes(start, start + np.tile([1.0, 0.25], 4), np.tile([60, 62], 4),
                               np.tile([110, 40], 4), program=33)  # fmt: skip
    kit = midi_io.make_notes([8.0], [8.1], [38], [100], is_drum=True)  # one gap of 1 s throughout
    piece = midi_io.sort_notes(np.concatenate([notes, kit]))
    c = codec_fit.fit([piece], instruments="family", duration_bins=2, velocity_bins=2, min_count=1)
    ids = c.encode(piece)
    long60, short62, drum = ids[2], ids[3], ids[8]  # each 1 s after the note before
    assert codec.transpose_table(c, 2)[long60] == -1
    assert c.transpose_tables(2, nearest=True)[4][long60] == short62  # shift +2 is row 2 + 2
    assert c.transpose_tables(2, nearest=True)[4][drum] == drum
    assert c.transpose_tables(2, nearest=True)[0][short62] == long60  # and back down
    assert c.transpose_tables(2, nearest=True)[3][long60] == -1  # 61: never played, no nearest
