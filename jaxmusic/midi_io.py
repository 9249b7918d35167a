"""MIDI files <-> note arrays, with miditoolkit.

Every note of every track (drum tracks when asked) becomes one row of a structured array
(`NOTE_DTYPE`): start and end in seconds through the file's tempo map, pitch,
velocity, program and a drum flag. This is the only module that opens MIDI files,
so every limit on untrusted input lives here, in `Limits`.

Real collections hold broken files. `read` gives either a correct read or one
`MidiError(path, reason)`; where miditoolkit refuses a file that a tolerant read
recovers (data bytes above 127, key signatures out of range, RIFF and gzip
wrappers) it recovers it and says so in `MidiRead.recovered`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import miditoolkit
import mido.midifiles.meta as mido_meta
import mido.midifiles.midifiles as mido_files
import numpy as np

from jaxmusic.errors import Error
from jaxmusic.fileio import atomic_path

NOTE_DTYPE = np.dtype(
    [
        ("start", np.float64),  # seconds
        ("end", np.float64),  # seconds, > start
        ("pitch", np.int16),  # MIDI pitch 0..127
        ("velocity", np.int16),  # 1..127
        ("program", np.int16),  # General MIDI program 0..127
        ("is_drum", np.bool_),
    ]
)

MIDI_SUFFIXES = (".mid", ".midi", ".kar")
DEFAULT_BPM = 120.0


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on one input file; anything beyond them is a `MidiError`.

    They keep a hostile or broken file from taking unbounded memory or time:
    mido holds every event of a file as a Python object (about 200 bytes each),
    so the byte limit bounds memory before parsing starts.
    """

    max_file_bytes: int = 4 * 2**20  # on disk, and after un-gzipping
    max_notes: int = 200_000  # after merging tracks
    max_seconds: float = 2 * 3600.0  # end of the last note
    # Absolute ticks of a note: symusic holds ticks as int32, and a larger value only
    # comes from corrupt delta times (a real file's last tick is in the millions).
    max_tick: int = 2**31 - 1
    # Tempo: MIDI can express 3.6 to 60,000,000 bpm; real music stays within tens to
    # hundreds. Beyond this a file is corrupt, and its times would be meaningless.
    max_bpm: float = 2000.0


LIMITS = Limits()


class MidiError(Error):
    """A MIDI file that cannot be read: names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # crosses process boundaries in parallel reads
        return (type(self), (self.path, self.reason))


class InternalReadError(MidiError):
    """A read that failed by an exception `read` does not expect: a bug in jaxmusic
    (or a parser), not a verdict on the file. `read_hashed` returns it so that one
    file never stops a build; callers count it apart from ordinary rejections.
    Its reason starts with "internal error:"."""

    PREFIX = "internal error: "

    @classmethod
    def wrap(cls, path: str | os.PathLike, error: BaseException) -> InternalReadError:
        return cls(path, f"{cls.PREFIX}{type(error).__name__}: {error}")

    @classmethod
    def report_lines(cls, failures: list[tuple[str, str]], limit: int = 10) -> list[str]:
        """What a CLI prints, at its end, for (path, reason) rows of internal errors."""
        if not failures:
            return []
        lines = [f"internal errors: {len(failures)} file(s) rejected by an unexpected exception "
                 "(a bug: please report it with the file)"]  # fmt: skip
        lines += [f"  {path}: {reason}" for path, reason in failures[:limit]]
        if len(failures) > limit:
            lines.append(f"  ... and {len(failures) - limit} more")
        return lines


@dataclasses.dataclass(frozen=True)
class MidiRead:
    """The result of `read`.

    Attributes:
      notes: NOTE_DTYPE[n], sorted by (start, pitch, end), n >= 1.
      recovered: what a tolerant read had to repair, one phrase each (empty for a
        clean file).
      dropped_zero_length: notes whose end equals their start (inaudible).
      dropped_drums: drum notes left out (`include_drums=False`).
    """

    notes: np.ndarray
    recovered: tuple[str, ...] = ()
    dropped_zero_length: int = 0
    dropped_drums: int = 0


def empty_notes(n: int = 0) -> np.ndarray:
    """Returns a zeroed NOTE_DTYPE[n] array."""
    return np.zeros(n, dtype=NOTE_DTYPE)


def make_notes(
    start: np.ndarray,
    end: np.ndarray,
    pitch: np.ndarray,
    velocity: np.ndarray,
    program: np.ndarray | int = 0,
    is_drum: np.ndarray | bool = False,
) -> np.ndarray:
    """Builds a NOTE_DTYPE[n] array from equal-length columns (scalars broadcast)."""
    start = np.asarray(start, np.float64)
    notes = empty_notes(start.shape[0])
    notes["start"] = start
    notes["end"] = end
    notes["pitch"] = pitch
    notes["velocity"] = velocity
    notes["program"] = program
    notes["is_drum"] = is_drum
    return notes


# General MIDI's 16 instrument families (8 programs each: program // 8), then the drums.
INSTRUMENT_NAMES = ("piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble",
                    "brass", "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic",
                    "percussive", "sound effects", "drums")  # fmt: skip
DRUMS = len(INSTRUMENT_NAMES) - 1


def instrument_index(notes: np.ndarray) -> np.ndarray:
    """int64[n]: each note's General MIDI family 0..15 (program // 8), or `DRUMS` (16) for a drum."""
    return np.where(notes["is_drum"], DRUMS, np.asarray(notes["program"], np.int64) // 8)


def sort_notes(notes: np.ndarray) -> np.ndarray:
    """Returns notes sorted by start, then pitch, then end (a chord low to high)."""
    order = np.lexsort((notes["end"], notes["pitch"], notes["start"]))
    return notes[order]


# ----------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------


def read(
    path: str | os.PathLike,
    *,
    include_drums: bool = False,
    limits: Limits = LIMITS,
    reader: str = "miditoolkit",
) -> MidiRead:
    """Reads a MIDI file into notes.

    Args:
      path: a Standard MIDI File (.mid, .midi, .kar), possibly wrapped in RIFF
        (RMID) or gzip.
      include_drums: keep notes of drum channels (channel 10) too.
      limits: bounds on size, note count and length.
      reader: "miditoolkit", the reference; or "symusic", a C++ parser about 100
        times faster that gives the same notes (tests/test_midi_io.py), used for
        dataset builds. A file symusic refuses is read with miditoolkit, whose
        tolerant retries may still recover it.

    Returns:
      A `MidiRead` whose `notes` is NOTE_DTYPE[n], n >= 1, sorted.

    Raises:
      MidiError: the file is unreadable, beyond a limit, or has no notes; an
        `InternalReadError` (a MidiError) for an exception the reader did not
        expect, which is a bug to report rather than a verdict on the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise MidiError(path, f"cannot open: {e.strerror or e}") from None
    _check_size(path, size, limits)  # before reading: a huge file never enters memory
    return _read_data(path, path.read_bytes(), include_drums, limits, reader)


def read_hashed(
    path: str | os.PathLike,
    *,
    reader: str = "miditoolkit",
    limits: Limits = LIMITS,
    data: bytes | None = None,
    include_drums: bool = False,
) -> tuple[str, MidiRead | MidiError]:
    """(sha1 of the file's bytes, its `read` or the `MidiError`), reading the file once.

    For parallel workers: an error is returned, not raised (it crosses a process
    boundary), and the hash is "" only when the file cannot be opened. An
    unexpected exception comes back as an `InternalReadError`, as `read` raises it.
    `data`: the file's bytes, already read (from a bucket); `path` then only names it.
    """
    path = Path(path)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as e:
            return "", MidiError(path, f"cannot open: {e.strerror or e}")
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        _check_size(path, len(data), limits)
        return sha1, _read_data(path, data, include_drums, limits, reader)
    except MidiError as e:
        return sha1, e


def _check_size(path: Path, size: int, limits: Limits) -> None:
    if size > limits.max_file_bytes:
        raise MidiError(path, f"file of {size} bytes is over the limit of {limits.max_file_bytes}")


def _read_data(path: Path, data: bytes, include_drums: bool, limits: Limits, reader: str) -> MidiRead:
    if reader not in ("miditoolkit", "symusic"):
        raise ValueError(f"reader must be 'miditoolkit' or 'symusic', got {reader!r}")
    recovered: list[str] = []
    try:
        data = _unwrap(path, data, limits, recovered)
        raw = _parse_symusic(data) if reader == "symusic" else None
        if raw is None:
            raw = _parse_miditoolkit(path, data, recovered)
        return _to_notes(path, raw, include_drums, limits, tuple(recovered))
    except MidiError:
        raise
    except Exception as e:  # no input may escape as anything but a MidiError
        raise InternalReadError.wrap(path, e) from e


def _unwrap(path: Path, data: bytes, limits: Limits, recovered: list[str]) -> bytes:
    """Returns the Standard MIDI File bytes inside `data` (RIFF or gzip wrapper)."""
    if data.startswith(b"\x1f\x8b"):
        try:
            # Bounded decompression: a gzip bomb stops at the limit.
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = inflater.decompress(data, limits.max_file_bytes + 1)
        except zlib.error as e:
            raise MidiError(path, f"corrupt gzip wrapper: {e}") from None
        if len(data) > limits.max_file_bytes:
            raise MidiError(path, f"gzip content is over the limit of {limits.max_file_bytes} bytes")
        recovered.append("unwrapped gzip")
    if data.startswith(b"RIFF") and data[8:12] == b"RMID":
        pos = 12
        while pos + 8 <= len(data):
            tag, length = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
            if tag == b"data":
                data = data[pos + 8 : pos + 8 + length]
                recovered.append("unwrapped RIFF RMID")
                break
            pos += 8 + length + (length & 1)
        else:
            raise MidiError(path, "RIFF RMID file without a 'data' chunk")
    if not data:
        raise MidiError(path, "empty file")
    if not data.startswith(b"MThd"):
        head = data[:64].lstrip().lower()
        if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
            raise MidiError(path, "not a MIDI file: looks like HTML/XML")
        if data.startswith(b"RIFF"):
            raise MidiError(path, "not a MIDI file: a RIFF file that is not RMID (audio?)")
        raise MidiError(path, f"not a MIDI file: starts with {data[:4]!r}, not b'MThd'")
    if len(data) < 14:
        raise MidiError(path, "truncated: header chunk incomplete")
    fmt, _, division = struct.unpack(">HHh", data[8:14])
    if fmt == 2:
        raise MidiError(path, "type-2 MIDI (independent sequences) is not supported")
    if fmt > 2:
        raise MidiError(path, f"unknown MIDI format {fmt}")
    if division == 0:
        raise MidiError(path, "time division of 0 ticks per beat")
    return data


@dataclasses.dataclass(frozen=True)
class _RawNotes:
    """Notes in ticks, as a parser gives them, with the tempo map to time them.

    Attributes:
      ticks: int64[n, 2] start and end ticks.
      pitch, velocity, program: int64[n].
      is_drum: bool[n].
      ticks_per_beat: the file's division (negative: SMPTE).
      tempo_ticks: int64[m] ticks of tempo changes; tempo_bpm: float64[m].
    """

    ticks: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    program: np.ndarray
    is_drum: np.ndarray
    ticks_per_beat: int
    tempo_ticks: np.ndarray
    tempo_bpm: np.ndarray


def _parse_symusic(data: bytes) -> _RawNotes | None:
    """Parses with symusic; None where it refuses the file."""
    import symusic

    try:
        score = symusic.Score.from_midi(data, ttype="tick")
    except Exception:  # a refusal of any kind: the reference reader decides
        return None
    tracks = [(t, t.notes.numpy()) for t in score.tracks]
    n = [len(a["time"]) for _, a in tracks]
    start = np.concatenate([a["time"] for _, a in tracks] + [np.zeros(0, np.int64)]).astype(np.int64)
    duration = np.concatenate([a["duration"] for _, a in tracks] + [np.zeros(0, np.int64)])
    tempos = score.tempos.numpy()
    return _RawNotes(
        ticks=np.stack([start, start + duration.astype(np.int64)], 1),
        pitch=np.concatenate([a["pitch"] for _, a in tracks] + [np.zeros(0)]).astype(np.int64),
        velocity=np.concatenate([a["velocity"] for _, a in tracks] + [np.zeros(0)]).astype(np.int64),
        program=np.repeat([t.program for t, _ in tracks], n).astype(np.int64),
        is_drum=np.repeat([t.is_drum for t, _ in tracks], n).astype(np.bool_),
        ticks_per_beat=_division(data),
        tempo_ticks=tempos["time"].astype(np.int64),
        tempo_bpm=60e6 / tempos["mspq"].astype(np.float64),
    )


def _division(data: bytes) -> int:
    return struct.unpack(">h", data[12:14])[0]


def _parse_miditoolkit(path: Path, data: bytes, recovered: list[str]) -> _RawNotes:
    """Parses with miditoolkit, retrying tolerantly where a strict read refuses."""
    clip = False
    lenient_keys = False
    for _ in range(3):
        try:
            with _lenient_key_signatures(lenient_keys), _strict_variable_ints():
                midi = miditoolkit.MidiFile(file=io.BytesIO(data), clip=clip)
            break
        except _VariableIntTooLong as e:
            raise MidiError(path, str(e)) from None
        except mido_meta.KeySignatureError:
            if lenient_keys:
                break
            lenient_keys = True
            recovered.append("ignored key signatures out of range")
        except OSError as e:
            if "data byte must be in range" in str(e) and not clip:
                clip = True
                recovered.append("clipped data bytes above 127")
                continue
            raise MidiError(path, f"corrupt MIDI data: {e}") from None
        except EOFError:
            raise MidiError(path, "truncated: file ends inside a chunk") from None
        except Exception as e:  # a third-party parser on untrusted bytes
            raise MidiError(path, f"corrupt MIDI data: {type(e).__name__}: {e}") from None
    else:
        raise MidiError(path, "corrupt MIDI data")  # pragma: no cover - retries are bounded
    notes = [(x, inst) for inst in midi.instruments for x in inst.notes]
    tempos = sorted(midi.tempo_changes, key=lambda t: t.time)
    # Every tick is a sum of 4-byte delta times within a bounded file, so it fits an
    # int64; the limit on ticks is checked in `_to_notes` for both readers.
    return _RawNotes(
        ticks=np.array([(x.start, x.end) for x, _ in notes], np.int64).reshape(-1, 2),
        pitch=np.array([x.pitch for x, _ in notes], np.int64),
        velocity=np.array([x.velocity for x, _ in notes], np.int64),
        program=np.array([inst.program for _, inst in notes], np.int64),
        is_drum=np.array([inst.is_drum for _, inst in notes], np.bool_),
        ticks_per_beat=midi.ticks_per_beat,
        tempo_ticks=np.array([t.time for t in tempos], np.int64),
        tempo_bpm=np.array([t.tempo for t in tempos], np.float64),
    )


# A Standard MIDI File writes a variable-length quantity (delta time, chunk or event
# length) in at most 4 bytes (up to 0x0FFFFFFF). mido reads one without bound, so a
# corrupt file can make a delta time of any size; a strict reader refuses it.
_MAX_VARIABLE_INT_BYTES = 4


class _VariableIntTooLong(Exception):
    pass


def _read_variable_int_strict(infile) -> int:
    value = 0
    for _ in range(_MAX_VARIABLE_INT_BYTES):
        byte = mido_files.read_byte(infile)
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value
    where = f" at byte {infile.tell()}" if hasattr(infile, "tell") else ""
    raise _VariableIntTooLong(
        f"corrupt MIDI data: a variable-length quantity longer than {_MAX_VARIABLE_INT_BYTES} bytes{where}"
    )


@contextlib.contextmanager
def _strict_variable_ints() -> Iterator[None]:
    """Swaps mido's variable-length quantity reader for a bounded one while parsing."""
    original = mido_files.read_variable_int
    mido_files.read_variable_int = _read_variable_int_strict
    try:
        yield
    finally:
        mido_files.read_variable_int = original


class _LenientKeySignature(mido_meta.MetaSpec_key_signature):
    """A key signature spec that reads an out-of-range key as C major."""

    def decode(self, message, data):
        try:
            super().decode(message, data)
        except mido_meta.KeySignatureError:
            message.key = "C"


@contextlib.contextmanager
def _lenient_key_signatures(enabled: bool) -> Iterator[None]:
    """Swaps mido's key signature decoder for a lenient one while parsing."""
    if not enabled:
        yield
        return
    original = mido_meta._META_SPECS[0x59]
    mido_meta.add_meta_spec(_LenientKeySignature)
    try:
        yield
    finally:
        mido_meta.add_meta_spec(type(original))


def tick_to_seconds(
    ticks: np.ndarray, ticks_per_beat: int, tempo_ticks: np.ndarray, tempo_bpm: np.ndarray
) -> np.ndarray:
    """Maps ticks to seconds through a tempo map, without a per-tick table.

    Args:
      ticks: int[n] absolute ticks.
      ticks_per_beat: the file's division; negative for SMPTE (-fps, ticks/frame).
      tempo_ticks: int[m] ticks of tempo changes, ascending, first 0.
      tempo_bpm: float[m] tempo in force from each change on.

    Returns:
      float64[n] seconds.
    """
    ticks = np.asarray(ticks, np.float64)
    if ticks_per_beat < 0:  # SMPTE: fixed rate, tempo events do not apply
        fps = -(ticks_per_beat >> 8)
        per_frame = ticks_per_beat & 0xFF
        return ticks / (29.97 if fps == 29 else fps) / max(per_frame, 1)
    sec_per_tick = 60.0 / (np.asarray(tempo_bpm, np.float64) * ticks_per_beat)
    tempo_ticks = np.asarray(tempo_ticks, np.float64)
    start_sec = np.concatenate([[0.0], np.cumsum(np.diff(tempo_ticks) * sec_per_tick[:-1])])
    idx = np.searchsorted(tempo_ticks, ticks, side="right") - 1
    return start_sec[idx] + (ticks - tempo_ticks[idx]) * sec_per_tick[idx]


def _to_notes(
    path: Path,
    raw: _RawNotes,
    include_drums: bool,
    limits: Limits,
    recovered: tuple[str, ...],
) -> MidiRead:
    total = raw.pitch.shape[0]
    if total > limits.max_notes:
        raise MidiError(path, f"{total} notes is over the limit of {limits.max_notes}")
    keep = np.ones(total, np.bool_) if include_drums else ~raw.is_drum
    dropped_drums = int(total - keep.sum())
    if not keep.any():
        raise MidiError(path, "no pitched notes (drum tracks only)" if dropped_drums else "no notes")
    tempo_ticks, tempo_bpm = raw.tempo_ticks, raw.tempo_bpm
    if tempo_ticks.shape[0] == 0 or tempo_ticks[0] != 0:  # 120 bpm until the first change
        tempo_ticks = np.concatenate([[0], tempo_ticks])
        tempo_bpm = np.concatenate([[DEFAULT_BPM], tempo_bpm])
    if raw.ticks.size and (raw.ticks.min() < 0 or raw.ticks.max() > limits.max_tick):
        raise MidiError(path, f"note at tick {raw.ticks.max()} is beyond the limit of {limits.max_tick}")
    if not np.all(np.isfinite(tempo_bpm)) or np.any(tempo_bpm <= 0):
        raise MidiError(path, "tempo map holds a tempo of zero")
    if np.any(tempo_bpm > limits.max_bpm):
        raise MidiError(path, f"tempo of {tempo_bpm.max():.0f} bpm is over the limit of {limits.max_bpm:.0f}")
    seconds = tick_to_seconds(raw.ticks[keep].ravel(), raw.ticks_per_beat, tempo_ticks, tempo_bpm)
    notes = make_notes(
        seconds[0::2],
        seconds[1::2],
        raw.pitch[keep],
        raw.velocity[keep],
        raw.program[keep],
        raw.is_drum[keep],
    )
    last = float(notes["end"].max())
    if last > limits.max_seconds:
        raise MidiError(path, f"{last:.0f} s long is over the limit of {limits.max_seconds:.0f} s")
    audible = notes["end"] > notes["start"]
    if not audible.any():
        raise MidiError(path, "no notes longer than zero")
    return MidiRead(
        notes=sort_notes(notes[audible]),
        recovered=recovered,
        dropped_zero_length=int((~audible).sum()),
        dropped_drums=dropped_drums,
    )


def find_midi_files(directory: str | os.PathLike) -> list[Path]:
    """Returns every MIDI file under `directory`, recursively, sorted by path."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory")
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())


# ----------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------


def write(
    notes: np.ndarray,
    path: str | os.PathLike,
    *,
    ticks_per_beat: int = 480,
    bpm: float = DEFAULT_BPM,
) -> None:
    """Writes notes to a MIDI file, one track per (program, drum) pair.

    Times are rounded to ticks at a constant tempo (at the defaults one tick is
    1/960 s), and every note lasts at least one tick. The file appears whole or
    not at all: it is written beside `path` and renamed into place.

    Args:
      notes: NOTE_DTYPE[n].
      path: the .mid file to write; its folder must exist.
      ticks_per_beat: the written file's division.
      bpm: the written file's single tempo.
    """
    path = Path(path)
    ticks_per_sec = ticks_per_beat * bpm / 60.0
    midi = miditoolkit.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.tempo_changes = [miditoolkit.TempoChange(bpm, 0)]
    keys = sorted({(int(p), bool(d)) for p, d in zip(notes["program"], notes["is_drum"], strict=True)})
    for program, is_drum in keys:
        sel = notes[(notes["program"] == program) & (notes["is_drum"] == is_drum)]
        start = np.round(sel["start"] * ticks_per_sec).astype(np.int64)
        end = np.maximum(np.round(sel["end"] * ticks_per_sec).astype(np.int64), start + 1)
        inst = miditoolkit.Instrument(program=program, is_drum=is_drum)
        inst.notes = [
            miditoolkit.Note(int(v), int(p), int(s), int(e))
            for s, e, p, v in zip(start, end, sel["pitch"], sel["velocity"], strict=True)
        ]
        midi.instruments.append(inst)
    midi.max_tick = max([n.end for inst in midi.instruments for n in inst.notes], default=0) + 1
    with atomic_path(path) as tmp:
        midi.dump(str(tmp))
