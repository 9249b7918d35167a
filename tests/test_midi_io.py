"""midi_io: reading through the tempo map, merging tracks, bad input, writing."""

import gzip
import struct

import helpers
import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from helpers import CHORDS_AND_RESTS, DRUMS, Track, write_midi

from jaxmusic import fuzz, midi_io


def test_read_merges_tracks_sorts_and_times_in_seconds(tmp_path):
    melody = [n for n in CHORDS_AND_RESTS if n[2] >= 67]
    harmony = [n for n in CHORDS_AND_RESTS if n[2] < 67]
    path = write_midi(tmp_path / "a.mid", [Track(melody, 0, 0), Track(harmony, 1, 33)])
    got = midi_io.read(path)
    want = helpers.seconds_at_120(CHORDS_AND_RESTS)
    np.testing.assert_array_equal(got.notes["pitch"], want["pitch"])
    np.testing.assert_allclose(got.notes["start"], want["start"], atol=1e-9)
    np.testing.assert_allclose(got.notes["end"], want["end"], atol=1e-9)
    np.testing.assert_array_equal(got.notes["velocity"], want["velocity"])
    assert set(got.notes["program"][got.notes["pitch"] < 67]) == {33}
    assert got.recovered == ()


def test_tempo_changes_are_followed(tmp_path):
    # 120 bpm for 2 beats (1 s), then 60 bpm: beat 3 is at 1 s + 1 s = 2 s.
    notes = [(0, 1, 60, 80), (2, 1, 62, 80), (3, 1, 64, 80)]
    path = write_midi(tmp_path / "t.mid", [Track(notes)], tempos=[(0, 120), (2, 60)])
    got = midi_io.read(path).notes
    np.testing.assert_allclose(got["start"], [0.0, 1.0, 2.0])
    np.testing.assert_allclose(got["end"], [0.5, 2.0, 3.0])


def test_tempo_before_first_change_is_120_bpm():
    sec = midi_io.tick_to_seconds(
        np.array([0, 480, 960, 1440]), 480, np.array([0, 960]), np.array([120.0, 60.0])
    )
    np.testing.assert_allclose(sec, [0.0, 0.5, 1.0, 2.0])


def test_smpte_division_uses_frames(tmp_path):
    # 25 fps, 40 ticks per frame: 1000 ticks per second.
    division = struct.unpack(">h", bytes([256 - 25, 40]))[0]
    sec = midi_io.tick_to_seconds(np.array([0, 1000, 2500]), division, np.array([0]), np.array([120.0]))
    np.testing.assert_allclose(sec, [0.0, 1.0, 2.5])


def test_drums_left_out_by_default_and_kept_on_request(tmp_path):
    path = write_midi(tmp_path / "d.mid", [Track(CHORDS_AND_RESTS), Track(DRUMS, channel=9)])
    plain = midi_io.read(path)
    assert plain.notes.shape[0] == len(CHORDS_AND_RESTS)
    assert plain.dropped_drums == len(DRUMS)
    assert not plain.notes["is_drum"].any()
    full = midi_io.read(path, include_drums=True)
    assert full.notes.shape[0] == len(CHORDS_AND_RESTS) + len(DRUMS)
    assert full.notes["is_drum"].sum() == len(DRUMS)


def test_only_drums_is_a_midi_error(tmp_path):
    path = write_midi(tmp_path / "drums.mid", [Track(DRUMS, channel=9)])
    with pytest.raises(midi_io.MidiError, match="drum tracks only"):
        midi_io.read(path)


def test_zero_length_notes_dropped_and_overlaps_kept(tmp_path):
    notes = [(0, 0, 60, 80), (0, 2, 62, 80), (1, 2, 62, 70), (1, 1, 64, 90)]
    path = write_midi(tmp_path / "z.mid", [Track(notes)])
    got = midi_io.read(path)
    assert got.dropped_zero_length == 1
    assert list(got.notes["pitch"]) == [62, 62, 64]
    assert np.all(got.notes["end"] > got.notes["start"])


@pytest.mark.parametrize(
    "name, reason",
    [
        ("empty", "empty file"),
        ("truncated", "truncated"),
        ("html", "looks like HTML"),
        ("wave", "RIFF file that is not RMID"),
        ("garbage", "not a MIDI file"),
        ("type2", "type-2"),
        ("long_delta_time", "variable-length quantity longer than 4 bytes"),
    ],
)
@pytest.mark.parametrize("reader", ["miditoolkit", "symusic"])
def test_bad_files_raise_one_midi_error(tmp_path, name, reason, reader):
    path = tmp_path / f"{name}.mid"
    path.write_bytes(helpers.bad_midi_bytes()[name])
    with pytest.raises(midi_io.MidiError, match=reason) as e:
        midi_io.read(path, reader=reader)
    assert e.value.path == str(path)
    assert not isinstance(e.value, midi_io.InternalReadError)


def test_strict_variable_ints_do_not_leak(tmp_path):
    import mido.midifiles.midifiles as mido_files

    original = mido_files.read_variable_int
    path = tmp_path / "v.mid"
    path.write_bytes(helpers.bad_midi_bytes()["long_delta_time"])
    with pytest.raises(midi_io.MidiError):
        midi_io.read(path)
    assert mido_files.read_variable_int is original
    assert midi_io.read(helpers.write_midi(tmp_path / "ok.mid", [Track(CHORDS_AND_RESTS)])).notes.size == 12


def test_tick_and_tempo_limits(tmp_path):
    path = write_midi(tmp_path / "t.mid", [Track([(0, 1, 60, 80), (100, 1, 62, 80)])])  # ends at tick 48,480
    with pytest.raises(midi_io.MidiError, match="tick 48480 is beyond the limit of 48000"):
        midi_io.read(path, limits=midi_io.Limits(max_tick=48_000))
    fast = write_midi(tmp_path / "fast.mid", [Track([(0, 1, 60, 80)])], tempos=[(0, 120), (0.5, 3000)])
    for reader in ("miditoolkit", "symusic"):
        with pytest.raises(midi_io.MidiError, match="tempo of 3000 bpm is over the limit of 2000"):
            midi_io.read(fast, reader=reader)


def test_unexpected_exception_is_an_internal_read_error(tmp_path, monkeypatch):
    path = write_midi(tmp_path / "a.mid", [Track(CHORDS_AND_RESTS)])

    def broken(*args):
        raise OverflowError("Python int too large to convert to C long")

    monkeypatch.setattr(midi_io, "_to_notes", broken)
    with pytest.raises(midi_io.InternalReadError) as e:
        midi_io.read(path)
    assert e.value.reason == "internal error: OverflowError: Python int too large to convert to C long"
    sha1, got = midi_io.read_hashed(path)
    assert isinstance(got, midi_io.InternalReadError) and len(sha1) == 40
    lines = midi_io.InternalReadError.report_lines([(str(path), got.reason)] * 12, limit=10)
    assert lines[0].startswith("internal errors: 12 file(s)") and lines[-1] == "  ... and 2 more"


@pytest.mark.parametrize(
    "name, recovered",
    [
        ("data_byte_above_127", "clipped data bytes above 127"),
        ("key_signature_out_of_range", "ignored key signatures out of range"),
    ],
)
def test_tolerant_read_recovers_and_says_so(tmp_path, name, recovered):
    path = tmp_path / f"{name}.mid"
    path.write_bytes(helpers.bad_midi_bytes()[name])
    got = midi_io.read(path)
    assert recovered in got.recovered
    assert list(got.notes["pitch"]) == [60, 62]
    np.testing.assert_allclose(got.notes["start"], [0.0, 0.5])


def test_key_signature_tolerance_does_not_leak(tmp_path):
    path = tmp_path / "k.mid"
    path.write_bytes(helpers.bad_midi_bytes()["key_signature_out_of_range"])
    midi_io.read(path)
    import mido.midifiles.meta as meta

    assert type(meta._META_SPECS[0x59]) is meta.MetaSpec_key_signature


def test_gzip_and_rmid_wrappers_are_unwrapped(tmp_path):
    good = helpers.good_midi_bytes()
    gz = tmp_path / "g.mid"
    gz.write_bytes(gzip.compress(good))
    assert midi_io.read(gz).recovered == ("unwrapped gzip",)
    data_chunk = b"data" + struct.pack("<I", len(good)) + good
    riff = tmp_path / "r.mid"
    riff.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(data_chunk)) + b"RMID" + data_chunk)
    got = midi_io.read(riff)
    assert got.recovered == ("unwrapped RIFF RMID",)
    assert list(got.notes["pitch"]) == [60, 62]


def test_limits_bound_size_notes_and_length(tmp_path):
    path = write_midi(tmp_path / "long.mid", [Track([(0, 1, 60, 80), (7200, 1, 62, 80)])])
    with pytest.raises(midi_io.MidiError, match="over the limit of 3600 s"):
        midi_io.read(path, limits=midi_io.Limits(max_seconds=3600))
    with pytest.raises(midi_io.MidiError, match="2 notes is over the limit of 1"):
        midi_io.read(path, limits=midi_io.Limits(max_notes=1))
    with pytest.raises(midi_io.MidiError, match="over the limit of 10"):
        midi_io.read(path, limits=midi_io.Limits(max_file_bytes=10))
    # A gzip bomb stops at the byte limit instead of filling memory.
    bomb = tmp_path / "bomb.mid"
    bomb.write_bytes(gzip.compress(b"MThd" + b"\x00" * 10_000_000))
    with pytest.raises(midi_io.MidiError, match="gzip content is over the limit"):
        midi_io.read(bomb)


def test_missing_file_is_a_midi_error(tmp_path):
    with pytest.raises(midi_io.MidiError, match="cannot open"):
        midi_io.read(tmp_path / "nope.mid")


def test_midi_error_pickles_for_worker_processes():
    import pickle

    e = pickle.loads(pickle.dumps(midi_io.MidiError("a.mid", "empty file")))
    assert (e.path, e.reason, str(e)) == ("a.mid", "empty file", "a.mid: empty file")


def test_write_then_read_round_trip(tmp_path):
    want = helpers.seconds_at_120(CHORDS_AND_RESTS)
    want["program"][::2] = 40
    path = tmp_path / "w.mid"
    midi_io.write(want, path)
    got = midi_io.read(path).notes
    np.testing.assert_array_equal(got["pitch"], want["pitch"])
    np.testing.assert_allclose(got["start"], want["start"], atol=1 / 960)
    np.testing.assert_allclose(got["end"], want["end"], atol=1 / 960)
    assert sorted(got["program"]) == sorted(want["program"])


def test_failed_write_keeps_the_existing_file(tmp_path):
    path = tmp_path / "keep.mid"
    path.write_bytes(helpers.good_midi_bytes())
    bad = midi_io.make_notes([0.0], [1.0], [300], [80])  # pitch beyond MIDI
    with pytest.raises(Exception):  # noqa: B017 - whatever mido raises, the old file must survive
        midi_io.write(bad, path)
    assert path.read_bytes() == helpers.good_midi_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mid"]


def test_find_midi_files_recurses_and_filters(tmp_path):
    for name in ["a/x.mid", "a/b/y.MIDI", "z.kar", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in midi_io.find_midi_files(tmp_path)]
    assert found == ["a/b/y.MIDI", "a/x.mid", "z.kar"]


def _assert_same_read(a: midi_io.MidiRead, b: midi_io.MidiRead):
    for field in ("start", "end"):
        np.testing.assert_allclose(a.notes[field], b.notes[field], rtol=0, atol=1e-9)
    for field in ("pitch", "velocity", "program", "is_drum"):
        np.testing.assert_array_equal(a.notes[field], b.notes[field])
    assert (a.dropped_drums, a.dropped_zero_length) == (b.dropped_drums, b.dropped_zero_length)


@pytest.mark.parametrize("include_drums", [False, True])
def test_symusic_reader_gives_the_reference_notes(tmp_path, include_drums):
    overlaps = [(0, 0, 60, 80), (0, 2, 62, 80), (1, 2, 62, 70), (1, 1, 64, 90), (3, 1, 62, 50)]
    files = [
        write_midi(tmp_path / "a.mid", [Track(CHORDS_AND_RESTS, 0, 5), Track(DRUMS, channel=9)]),
        write_midi(tmp_path / "b.mid", [Track(CHORDS_AND_RESTS, 2, 40)], tempos=[(0, 90), (3, 150), (7, 61)]),
        write_midi(tmp_path / "c.mid", [Track(overlaps, 0, 0), Track(overlaps, 1, 70)], tpb=96),
    ]
    for f in files:
        ref = midi_io.read(f, include_drums=include_drums)
        fast = midi_io.read(f, include_drums=include_drums, reader="symusic")
        _assert_same_read(fast, ref)


def test_symusic_reader_falls_back_to_the_tolerant_reference(tmp_path):
    path = tmp_path / "x.mid"
    path.write_bytes(helpers.bad_midi_bytes()["data_byte_above_127"])
    fast = midi_io.read(path, reader="symusic")
    assert fast.recovered == ("clipped data bytes above 127",)
    _assert_same_read(fast, midi_io.read(path))
    path.write_bytes(helpers.bad_midi_bytes()["truncated"])
    with pytest.raises(midi_io.MidiError, match="truncated"):
        midi_io.read(path, reader="symusic")


def test_read_hashed_reads_once_and_returns_errors(tmp_path):
    import hashlib

    good = tmp_path / "g.mid"
    good.write_bytes(helpers.good_midi_bytes())
    sha1, got = midi_io.read_hashed(good)
    assert sha1 == hashlib.sha1(helpers.good_midi_bytes()).hexdigest()
    assert list(got.notes["pitch"]) == [60, 62]
    bad = tmp_path / "b.mid"
    bad.write_bytes(helpers.bad_midi_bytes()["html"])
    sha1, err = midi_io.read_hashed(bad)
    assert sha1 == hashlib.sha1(bad.read_bytes()).hexdigest() and isinstance(err, midi_io.MidiError)
    assert err.reason == "not a MIDI file: looks like HTML/XML"
    sha1, err = midi_io.read_hashed(tmp_path / "missing.mid")
    assert sha1 == "" and "cannot open" in err.reason
    _, err = midi_io.read_hashed(good, limits=midi_io.Limits(max_file_bytes=10))
    assert "over the limit of 10" in err.reason


def _check_valid_read(got: midi_io.MidiRead) -> None:
    notes = got.notes
    assert notes.shape[0] >= 1
    assert np.isfinite(notes["start"]).all() and np.isfinite(notes["end"]).all()
    assert (notes["end"] > notes["start"]).all() and (notes["start"] >= 0).all()
    assert ((notes["pitch"] >= 0) & (notes["pitch"] <= 127)).all()
    assert ((notes["velocity"] >= 0) & (notes["velocity"] <= 127)).all()
    assert (np.diff(notes["start"]) >= 0).all()


def _fuzz_fixtures() -> list[bytes]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = write_midi(
            Path(d) / "f.mid",
            [Track(CHORDS_AND_RESTS, 0, 5), Track(DRUMS, channel=9)],
            tempos=[(0, 100), (4, 140)],
        )
        return [helpers.good_midi_bytes(), path.read_bytes()]


FUZZ_FIXTURES = _fuzz_fixtures()


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True, database=None)
@hypothesis.given(
    fixture=st.sampled_from(range(len(FUZZ_FIXTURES))),
    seed=st.integers(0, 2**32 - 1),
    reader=st.sampled_from(["miditoolkit", "symusic"]),
)
def test_mutated_files_read_or_raise_midi_error(tmp_path_factory, fixture, seed, reader):
    """Every mutant (flips, truncation, junk, chunk lengths, header fields, repeats,
    long variable-length quantities) gives a valid read or a MidiError, quickly."""
    import time

    data, applied = fuzz.mutate(FUZZ_FIXTURES[fixture], seed)
    path = tmp_path_factory.mktemp("fuzz") / "m.mid"
    path.write_bytes(data)
    t = time.perf_counter()
    try:
        got = midi_io.read(path, reader=reader)
    except midi_io.InternalReadError as e:
        raise AssertionError(f"mutations {applied} (seed {seed}): {e}") from e
    except midi_io.MidiError:
        pass
    else:
        _check_valid_read(got)
    assert time.perf_counter() - t < 10.0, f"mutations {applied} (seed {seed}) took over 10 s"


def test_mutations_are_reproducible_and_each_kind_changes_the_bytes():
    good = FUZZ_FIXTURES[1]
    assert fuzz.mutate(good, 7) == fuzz.mutate(good, 7)
    rng = np.random.default_rng(0)
    for name, mutation in fuzz.MUTATIONS.items():
        assert bytes(mutation(bytearray(good), rng)) != good, name
    data = fuzz.MUTATIONS["long_variable_int"](bytearray(good), np.random.default_rng(1))
    assert len(data) > len(good)
