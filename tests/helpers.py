"""MIDI files the tests write, byte by byte where a test needs a broken one.

`write_midi` builds a Standard MIDI File with mido from notes given in beats, so a
test knows every note's exact time in seconds.
"""

from __future__ import annotations

import dataclasses
import fcntl
import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import mido
import numpy as np

from jaxmusic import midi_io


@dataclasses.dataclass
class Track:
    """A track: notes as (start_beat, duration_beats, pitch, velocity)."""

    notes: list[tuple[float, float, int, int]]
    channel: int = 0  # 9 is drums
    program: int = 0


def write_midi(
    path: Path,
    tracks: list[Track],
    *,
    tpb: int = 480,
    tempos: list[tuple[float, float]] = ((0.0, 120.0),),
    midi_type: int = 1,
) -> Path:
    """Writes a MIDI file. tempos: (beat, bpm) pairs, written in a conductor track."""
    mid = mido.MidiFile(type=midi_type, ticks_per_beat=tpb)
    conductor = [
        (round(b * tpb), 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))) for b, bpm in tempos
    ]
    mid.tracks.append(_to_track(conductor))
    for tr in tracks:
        events = [(0, 0, mido.Message("program_change", program=tr.program, channel=tr.channel))]
        for start, dur, pitch, vel in tr.notes:
            s, e = round(start * tpb), round((start + dur) * tpb)
            events.append((s, 2, mido.Message("note_on", note=pitch, velocity=vel, channel=tr.channel)))
            # A note ending where another starts ends first; a zero-length one after its start.
            events.append(
                (e, 3 if e == s else 1, mido.Message("note_off", note=pitch, velocity=0, channel=tr.channel))
            )
        mid.tracks.append(_to_track(events))
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(path)
    return path


def _to_track(events: list[tuple[int, int, mido.Message]]) -> mido.MidiTrack:
    """Events are (tick, order at that tick, message)."""
    events = sorted(events, key=lambda e: e[:2])
    track, tick = mido.MidiTrack(), 0
    for t, _, msg in events:
        track.append(msg.copy(time=t - tick))
        tick = t
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def seconds_at_120(notes: list[tuple[float, float, int, int]]) -> np.ndarray:
    """The NOTE_DTYPE array these beat-notes give at 120 bpm, sorted like midi_io."""
    a = np.array(notes, np.float64)
    return midi_io.sort_notes(midi_io.make_notes(a[:, 0] / 2, (a[:, 0] + a[:, 1]) / 2, a[:, 2], a[:, 3]))


# A melody with chords and rests, on a grid: onset gaps in {0, 0.5, 1, 2} beats,
# durations in {0.5, 1, 2} beats.
CHORDS_AND_RESTS = [
    (0, 1, 60, 80),
    (0, 1, 64, 80),
    (0, 1, 67, 80),  # C major chord
    (1, 0.5, 72, 100),
    (1.5, 0.5, 74, 100),
    (2, 2, 65, 60),
    (2, 2, 69, 60),
    (2, 2, 72, 60),  # F major chord
    (6, 1, 67, 100),  # after a rest of two beats
    (7, 0.5, 65, 80),
    (7.5, 0.5, 64, 80),
    (8, 2, 60, 60),
]

DRUMS = [(b, 0.25, 36 + (b % 2) * 2, 90) for b in range(8)]


def bad_midi_bytes() -> dict[str, bytes]:
    """Broken inputs found in real collections, by name."""
    good = _good_bytes()
    header_type2 = bytearray(good)
    header_type2[9] = 2
    data_byte = bytearray(good)
    data_byte[data_byte.index(bytes([0x90, 60])) + 2] = 200  # a velocity above 127
    return {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "html": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "wave": b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32,
        "garbage": b"\x00\x01\x02\x03" * 10,
        "type2": bytes(header_type2),
        "data_byte_above_127": bytes(data_byte),
        "key_signature_out_of_range": _with_bad_key_signature(good),
        "long_delta_time": _with_long_delta_time(good),
    }


def _good_bytes() -> bytes:
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    mid.tracks.append(
        _to_track(
            [
                (0, 2, mido.Message("note_on", note=60, velocity=64, channel=0)),
                (480, 1, mido.Message("note_off", note=60, velocity=0, channel=0)),
                (480, 2, mido.Message("note_on", note=62, velocity=64, channel=0)),
                (960, 1, mido.Message("note_off", note=62, velocity=0, channel=0)),
            ]
        )
    )
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def _with_bad_key_signature(good: bytes) -> bytes:
    """Inserts a key signature meta event with 9 sharps (valid: -7..7) at tick 0."""
    i = good.index(b"MTrk")
    length = int.from_bytes(good[i + 4 : i + 8], "big")
    event = b"\x00\xff\x59\x02\x09\x00"
    body = event + good[i + 8 : i + 8 + length]
    return good[:i] + b"MTrk" + len(body).to_bytes(4, "big") + body + good[i + 8 + length :]


def _with_long_delta_time(good: bytes) -> bytes:
    """The first event's delta time written in 11 bytes (a Standard MIDI File allows
    at most 4): read without bound, its value passes 2^63. Found by fuzzing."""
    i = good.index(b"MTrk")
    length = int.from_bytes(good[i + 4 : i + 8], "big")
    assert good[i + 8] == 0  # the first delta time, one byte
    body = b"\xff" * 10 + b"\x7f" + good[i + 9 : i + 8 + length]
    return good[:i] + b"MTrk" + len(body).to_bytes(4, "big") + body + good[i + 8 + length :]


def good_midi_bytes() -> bytes:
    """A valid two-note file: C4 for one beat, then D4 for one beat, at 120 bpm."""
    return _good_bytes()


def made_once(name: str, make: Callable[[Path], None]) -> Path:
    """The session's folder `name`, filled by make(folder) in whichever test process asks
    first while the others wait (xdist runs a module's tests on both workers, and each
    would make its own module-scoped fixture). Read it; do not write to it."""
    root = Path(os.environ["JAXMUSIC_TEST_SHARED"])  # tests/conftest.py
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a make that failed
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder
