"""The pseudo-note codec: one categorical id per note, and back.

A note (start, end, pitch, velocity, program, drum flag) becomes the tuple
(pitch, velocity bin, duration bin, onset-gap bin, instrument), and each tuple seen
in the training data becomes one id (see DESIGN.md, "The pseudo-note"):

- duration = end - start, binned at quantiles of all training durations (the
  seed: 4 bins); velocity binned at quantiles too (4 bins);
- onset gap = time from the previous note's start (the first note: from 0), one
  bin for "with the previous note" (gap 0) plus `onset_bins` bins at quantiles of
  the positive gaps. `onset_bins=0` is the seed exactly: no onset information,
  and decoding lays notes back to back.

Onset gaps are quantized with error feedback: each gap is measured from the
previous note's *decoded* start and mapped to the nearest bin value, so rounding
errors never accumulate over a piece (decoding is a plain cumulative sum).

The instrument, per dataset (`INSTRUMENT_MODES`): "merged" (the seed: every note
one instrument, drums left out at reading, written as program 0), "family" (General
MIDI's 16 families of 8 programs, plus drums) or "program" (128 programs, plus drums).
Drums are an instrument of their own whose pitch is a sound: never transposed, and
with one duration (General MIDI drum sounds ignore a note's end). Notes that start
together are ordered drums first, then by instrument, then by pitch low to high, so
each part's chord is contiguous and the beat leads.

Ids: PAD = 0, BOS = 1, EOS = 2, UNK = 3, then one id per genre, then the
pseudo-notes in sorted tuple order. Everything needed to decode is in
`codec.json` (`save`/`load`), checked by a fingerprint, so a model can never be
paired with the wrong vocabulary.

Fitting the bins and the vocabulary on training notes is `jaxmusic.codec_fit`;
`python -m jaxmusic.codec_report MIDI_DIR` measures how faithfully a folder of MIDI
files survives encode -> decode.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxmusic import midi_io
from jaxmusic.errors import Error
from jaxmusic.fileio import atomic_write

PAD, BOS, EOS, UNK = 0, 1, 2, 3
NUM_SPECIAL = 4
FORMAT = "jaxmusic.codec"
FORMAT_VERSION = 1
NUM_PITCHES = 128
INSTRUMENT_MODES = ("merged", "family", "program")
NUM_FAMILIES = 16  # General MIDI: 8 programs a family
TIME_DECIMALS = 6  # times are binned at microsecond resolution


class CodecError(Error, ValueError):
    """A codec that cannot be fitted, loaded or used as asked."""


@dataclasses.dataclass(frozen=True)
class Instruments:
    """The codec's instrument component (see the module's docstring).

    Attributes:
      mode: one of `INSTRUMENT_MODES`.
      programs: the General MIDI program each pitched instrument is written as (a
        family's: the one most played in training); one per instrument but the drums.
      drum_duration: seconds every drum note decodes to (the training drums' median).
    """

    mode: str = "merged"
    programs: tuple[int, ...] = (0,)
    drum_duration: float = 0.0

    def __post_init__(self):
        if self.mode not in INSTRUMENT_MODES:
            raise CodecError(f"instruments {self.mode!r}: not one of {', '.join(INSTRUMENT_MODES)}")
        if len(self.programs) != self.count - self.has_drums:
            raise CodecError(f"{self.mode} instruments need one program each (drums aside), got "
                             f"{len(self.programs)}")  # fmt: skip

    @property
    def count(self) -> int:
        """Instrument categories: 1 merged, 17 families (drums last), 129 programs (drums last)."""
        return {"merged": 1, "family": NUM_FAMILIES + 1, "program": 129}[self.mode]

    @property
    def has_drums(self) -> bool:
        """Whether drums are an instrument (every mode but merged, which leaves them out)."""
        return self.mode != "merged"

    @property
    def drums(self) -> int:
        """The drums' instrument index (-1 for merged)."""
        return self.count - 1 if self.has_drums else -1

    def names(self) -> list[str]:
        """A short name per instrument index ("drums", a family's or a program's)."""
        if self.mode == "merged":
            return ["all"]
        if self.mode == "family":
            return list(midi_io.INSTRUMENT_NAMES)
        return [*(f"program {p}" for p in range(128)), "drums"]

    def line_up(self, names: Sequence[str]) -> np.ndarray:
        """bool[count]: the instruments named (`names()`'s spelling), for a band to play.

        Raises:
          CodecError: a merged codec, no name, or a name this mode does not have.
        """
        known = self.names()
        if self.mode == "merged":
            raise CodecError("a line-up needs a codec with instruments (this one is merged)")
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise CodecError(f"instruments {', '.join(unknown) or '(none)'}: not one of {', '.join(known)}")
        out = np.zeros(self.count, bool)
        out[[known.index(n) for n in names]] = True
        return out

    def of(self, notes: np.ndarray) -> np.ndarray:
        """int64[n]: each note's instrument index (from its program and drum flag)."""
        program = np.asarray(notes["program"], np.int64)
        if self.mode == "merged":
            return np.zeros(program.shape[0], np.int64)
        if self.mode == "family":
            return midi_io.instrument_index(notes)  # the drums' index, 16, is this mode's
        return np.where(notes["is_drum"], self.drums, program)

    def order(self, notes: np.ndarray) -> np.ndarray:
        """The notes in encoding order: by start; notes starting together drums first,
        then by instrument, then by pitch low to high (then end). For merged codecs
        this is `midi_io.sort_notes`'s order."""
        inst = self.of(notes)
        pitched = inst != self.drums  # False sorts first: drums lead
        return notes[np.lexsort((notes["end"], notes["pitch"], inst, pitched, notes["start"]))]

    def program_of(self, instrument: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(program int64[n], is_drum bool[n]) written for instrument indices int[n]."""
        drum = instrument == self.drums
        return np.asarray([*self.programs, 0])[np.where(drum, -1, instrument)], drum


@dataclasses.dataclass(frozen=True, eq=False)
class Codec:
    """A fitted pseudo-note vocabulary. Build with `fit` or `load`.

    Attributes:
      velocity_edges: float[kv - 1] inner bin edges (bin i: edges[i-1] <= v < edges[i]).
      velocity_values: int[kv] the velocity each bin decodes to (the bin's median).
      duration_edges: float[kd - 1] inner edges, seconds.
      duration_values: float[kd] seconds each bin decodes to (the bin's median).
      onset_values: float[ko] seconds each onset bin decodes to; bin 0 is 0.0
        ("with the previous note"); empty when `onset_bins == 0` (the seed).
      chord_tolerance: gaps below it count as "with the previous note" when fitting.
      vocabulary: int16[V, 5] rows (pitch, velocity bin, duration bin, onset bin,
        instrument), sorted; row r is id `first_note_id + r`.
      genres: genre names; genre g is id `NUM_SPECIAL + g`.
      min_count: tuples seen fewer times than this in fitting are not in the
        vocabulary (`encode` maps them to their nearest neighbour, or to UNK).
      instruments: the instrument component (`Instruments`: merged by default).
    """

    velocity_edges: tuple[float, ...]
    velocity_values: tuple[int, ...]
    duration_edges: tuple[float, ...]
    duration_values: tuple[float, ...]
    onset_values: tuple[float, ...]
    chord_tolerance: float
    vocabulary: np.ndarray
    genres: tuple[str, ...] = ()
    min_count: int = 1
    instruments: Instruments = Instruments()

    def __post_init__(self):
        vocab = np.asarray(self.vocabulary, np.int16)
        if vocab.ndim == 2 and vocab.shape[1] == 4:  # a merged codec's rows, as codec.json holds them
            vocab = np.concatenate([vocab, np.zeros((vocab.shape[0], 1), np.int16)], axis=1)
        vocab = vocab.reshape(-1, 5)
        object.__setattr__(self, "vocabulary", vocab)
        shape = self.grid_shape
        if vocab.size and (np.any(vocab.max(axis=0) >= shape) or np.any(vocab < 0)):
            raise CodecError("vocabulary holds a bin index beyond the codec's bins")

    @property
    def grid_shape(self) -> tuple[int, int, int, int, int]:
        """The bins' grid: (pitches, velocity bins, duration bins, onset bins, instruments)."""
        return (NUM_PITCHES, self.num_velocity_bins, self.num_duration_bins, self.num_onset_bins,
                self.instruments.count)  # fmt: skip

    @functools.cached_property
    def _exact_table(self) -> np.ndarray:
        """int32[128, kv, kd, ko, ki]: the id of each tuple, UNK where unseen."""
        table = np.full(self.grid_shape, UNK, np.int32)
        table[tuple(self.vocabulary.T.astype(np.int64))] = self.first_note_id + np.arange(
            self.vocabulary.shape[0], dtype=np.int32
        )
        return table

    # -- sizes and ids -------------------------------------------------------

    num_velocity_bins = property(lambda self: len(self.velocity_values))
    num_duration_bins = property(lambda self: len(self.duration_values))
    has_onsets = property(lambda self: len(self.onset_values) > 0)

    @property
    def num_onset_bins(self) -> int:
        """Onset categories, the "with the previous note" bin included (1 for the seed)."""
        return max(len(self.onset_values), 1)

    @property
    def first_note_id(self) -> int:
        return NUM_SPECIAL + len(self.genres)

    @property
    def vocab_size(self) -> int:
        return self.first_note_id + self.vocabulary.shape[0]

    @property
    def has_drums(self) -> bool:
        """Whether the vocabulary holds a drum note (whether to read drum tracks)."""
        return self.instruments.has_drums and bool((self.vocabulary[:, 4] == self.instruments.drums).any())

    def genre_id(self, genre: str) -> int:
        """Returns the id of `genre`; a `CodecError` lists the known ones."""
        try:
            return NUM_SPECIAL + self.genres.index(genre)
        except ValueError:
            known = ", ".join(self.genres) or "none"
            raise CodecError(f"unknown genre {genre!r}; this codec knows: {known}") from None

    def is_note(self, ids: np.ndarray) -> np.ndarray:
        """bool[...]: which ids are pseudo-notes (not PAD/BOS/EOS/UNK or a genre)."""
        ids = np.asarray(ids)
        return (ids >= self.first_note_id) & (ids < self.vocab_size)

    # -- encode / decode -----------------------------------------------------

    def quantize(self, notes: np.ndarray) -> np.ndarray:
        """int64[n, 5] rows (pitch, velocity bin, duration bin, onset bin, instrument) of
        notes NOTE_DTYPE[n] in `order` (merged codecs: as given, sorted by start as
        `midi_io.read` gives them). A drum note's duration bin is 0: drums have one."""
        if self.instruments.has_drums:
            notes = self.instruments.order(notes)
        out = np.zeros((notes.shape[0], 5), np.int64)
        out[:, 0] = notes["pitch"]
        out[:, 1] = np.digitize(notes["velocity"], self.velocity_edges)
        out[:, 4] = self.instruments.of(notes)
        duration_bin = np.digitize(durations(notes), self.duration_edges)
        out[:, 2] = np.where(out[:, 4] == self.instruments.drums, 0, duration_bin)
        if self.has_onsets:
            out[:, 3] = _onset_bins_with_feedback(notes["start"], np.asarray(self.onset_values))
        return out

    def encode(self, notes: np.ndarray, *, unknown: str = "nearest") -> np.ndarray:
        """int32[n] ids of notes NOTE_DTYPE[n], sorted by start, in `order` (a pitch outside
        0..127 is an error). unknown: what a tuple outside the vocabulary becomes:
        "nearest", the nearest seen tuple with the same onset bin (timing is kept) and
        instrument (else the nearest instrument's); "unk", UNK (its onset gap is then lost
        when decoding)."""
        return self.ids_of(self._checked_quantize(notes), unknown=unknown)

    def ids_of(self, tuples: np.ndarray, *, unknown: str = "nearest") -> np.ndarray:
        """int32[n]: the ids of `quantize`'s int[n, 5] rows (`encode` after the binning;
        `unknown` as there)."""
        if unknown not in ("nearest", "unk"):
            raise CodecError(f"unknown= must be 'nearest' or 'unk', got {unknown!r}")
        q = np.asarray(tuples, np.int64).reshape(-1, 5)
        ids = self._exact_table[tuple(q.T)]
        unseen = ids == UNK
        if unknown == "nearest" and unseen.any():
            rows, inverse = np.unique(q[unseen], axis=0, return_inverse=True)
            ids[unseen] = _nearest_ids(self, rows)[inverse.reshape(-1)]
        return ids

    def unknown_mask(self, notes: np.ndarray) -> np.ndarray:
        """bool[n]: notes (in `quantize`'s order) whose exact tuple is not in the vocabulary."""
        return self._exact_table[tuple(self._checked_quantize(notes).T)] == UNK

    def _checked_quantize(self, notes: np.ndarray) -> np.ndarray:
        if notes.shape[0] and (notes["pitch"].min() < 0 or notes["pitch"].max() >= NUM_PITCHES):
            raise CodecError("notes hold a pitch outside 0..127")
        return self.quantize(notes)

    def decode(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """NOTE_DTYPE[m] notes (m <= n, each with its instrument's program and drum flag, the
        first starting at its gap from 0) of ids int[n]: PAD, BOS, UNK and genre ids are
        skipped; EOS ends the piece. Without onset bins (the seed) each note starts where
        the previous one ends.

        Raises:
          CodecError: an id is outside this codec's vocabulary (a model or a file
            paired with another codec).
        """
        ids = np.asarray(ids, np.int64).reshape(-1)
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise CodecError(
                f"id {int(ids[bad][0])} is outside this codec's vocabulary of {self.vocab_size} "
                "(ids from a model or dataset with another codec.json?)"
            )
        eos = np.flatnonzero(ids == EOS)
        if eos.size:
            ids = ids[: eos[0]]
        q = self.vocabulary[ids[self.is_note(ids)] - self.first_note_id].astype(np.int64)
        duration = np.asarray(self.duration_values)[q[:, 2]]
        program, drum = self.instruments.program_of(q[:, 4])
        duration = np.where(drum, self.instruments.drum_duration, duration)
        if self.has_onsets:
            start = np.cumsum(np.asarray(self.onset_values)[q[:, 3]])
        else:
            start = np.concatenate([[0.0], np.cumsum(duration)[:-1]])
        return midi_io.make_notes(start, start + duration, q[:, 0], np.asarray(self.velocity_values)[q[:, 1]],
                                  program, drum)  # fmt: skip

    def transpose_tables(self, max_semitones: int, *, nearest: bool = False) -> np.ndarray | None:
        """int32[2k + 1, vocab_size]: `transpose_table` of each shift -k..k (None for k = 0)."""
        if max_semitones < 0:
            raise CodecError(f"transposition semitones must be >= 0, got {max_semitones}")
        if max_semitones == 0:
            return None
        shifts = range(-max_semitones, max_semitones + 1)
        return np.stack([transpose_table(self, s, nearest=nearest) for s in shifts])

    # -- save / load ---------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-able dict of everything needed to rebuild the codec (`from_dict`)."""
        body = _body(self)
        return {"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": _fingerprint(body), **body}

    @property
    def fingerprint(self) -> str:
        """A short hash of the vocabulary and bins: equal iff the codecs decode alike."""
        return self.to_dict()["fingerprint"]

    def to_json(self) -> str:
        """The text of codec.json."""
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the codec as JSON (atomically: whole or not at all)."""
        atomic_write(path, self.to_json())


def factors(codec: Codec) -> np.ndarray:
    """int32[V, 5]: each id's rows in one table of the vocabulary's parts, for a model that
    shares what it learns across ids (`models.Seq2Seq.factors`): its pitch as played by
    its instrument, velocity bin, duration bin, onset bin and instrument, each part's rows
    after the one before; ids that are not notes take the last row."""
    pitch, vel, dur, onset, inst = codec.grid_shape
    sizes = np.array([pitch * inst, vel, dur, onset, inst])
    v = codec.vocabulary.astype(np.int32)
    rows = np.stack([v[:, 0] * inst + v[:, 4], v[:, 1], v[:, 2], v[:, 3], v[:, 4]], axis=1)
    rows = rows + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    specials = np.full((codec.first_note_id, 5), sizes.sum(), np.int32)
    return np.concatenate([specials, rows]).astype(np.int32)


def transpose_table(codec: Codec, semitones: int, *, nearest: bool = False) -> np.ndarray:
    """int32[vocab_size]: the id of each pseudo-note moved by `semitones`.

    Special and genre ids and drum notes map to themselves; a pseudo-note whose
    moved tuple is outside 0..127 or not in the vocabulary maps to -1. With `nearest`,
    a moved tuple not in the vocabulary takes the seen one of the same pitch, onset bin
    and instrument nearest in duration, then velocity bin, where there is one: a band's
    vocabulary is sparse per instrument, and exact moves leave most windows unmovable
    (docs/datasets.md).
    """
    table = np.arange(codec.vocab_size, dtype=np.int32)
    drum = codec.vocabulary[:, 4] == codec.instruments.drums
    p = codec.vocabulary[:, 0].astype(np.int64) + np.where(drum, 0, semitones)
    ok = (p >= 0) & (p < NUM_PITCHES)
    moved = np.full(codec.vocabulary.shape[0], -1, np.int32)
    v, d, o, i = codec.vocabulary[ok, 1:].T.astype(np.int64)
    found = codec._exact_table[p[ok], v, d, o, i]
    moved[ok] = np.where(found == UNK, -1, found)
    if nearest:
        moved = np.where(moved >= 0, moved, _nearest_in_cell(codec, p, ok))
    table[codec.first_note_id :] = moved
    return table


def _nearest_in_cell(codec: Codec, pitch: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """int32[P]: for each pseudo-note (row of the vocabulary) moved to `pitch` int[P] (ok:
    bool[P] within 0..127), the seen id of that pitch, onset bin and instrument nearest
    in duration bin, then velocity bin; -1 where there is none."""
    vocab = codec.vocabulary.astype(np.int64)
    rows = np.flatnonzero(ok)
    cells = codec._exact_table[pitch[rows], :, :, vocab[rows, 3], vocab[rows, 4]]  # [n, kv, kd]
    kv, kd = cells.shape[1:] if rows.size else (1, 1)
    cost = (np.abs(np.arange(kv)[None, :, None] - vocab[rows, 1, None, None])
            + 10 * np.abs(np.arange(kd)[None, None, :] - vocab[rows, 2, None, None]))  # fmt: skip
    cost = np.where(cells == UNK, np.iinfo(np.int64).max, cost).reshape(rows.size, -1)
    best = cost.argmin(1) if rows.size else np.zeros(0, np.int64)
    out = np.full(pitch.shape[0], -1, np.int32)
    found = cells.reshape(rows.size, -1)[np.arange(rows.size), best]
    out[rows] = np.where(found == UNK, -1, found)
    return out


def _nearest_ids(codec: Codec, tuples: np.ndarray, chunk: int = 256) -> np.ndarray:
    """int32[n]: the id of the seen tuple nearest to each row of int[n, 5]: the
    instrument kept first (else the nearest instrument index: a neighbouring family),
    then the onset bin (so timing survives), the pitch, the duration bin, the velocity bin."""
    if not codec.vocabulary.shape[0]:
        return np.full(tuples.shape[0], UNK, np.int32)
    vocab = codec.vocabulary.astype(np.int64)
    weights = np.array([10**3, 1, 10, 10**6, 10**8])  # pitch, velocity, duration, onset, instrument
    out = np.empty(tuples.shape[0], np.int32)
    for lo in range(0, tuples.shape[0], chunk):  # chunks: [chunk, V, 5] stays small at any V
        cost = (np.abs(tuples[lo : lo + chunk, None, :] - vocab[None, :, :]) * weights).sum(-1)
        out[lo : lo + chunk] = codec.first_note_id + cost.argmin(1)
    return out


def _body(codec: Codec) -> dict:
    """What `Codec.to_dict` holds beside its format and fingerprint. A merged codec is
    written as before instruments existed (4-column rows), so its fingerprint is kept."""
    merged = not codec.instruments.has_drums
    instruments = {} if merged else {
        "instruments": codec.instruments.mode,
        "instrument_programs": [int(p) for p in codec.instruments.programs],
        "drum_duration": float(codec.instruments.drum_duration),
    }  # fmt: skip
    return {
        "velocity_edges": [float(x) for x in codec.velocity_edges],
        "velocity_values": [int(x) for x in codec.velocity_values],
        "duration_edges": [float(x) for x in codec.duration_edges],
        "duration_values": [float(x) for x in codec.duration_values],
        "onset_values": [float(x) for x in codec.onset_values],
        "chord_tolerance": float(codec.chord_tolerance),
        "genres": list(codec.genres),
        "min_count": int(codec.min_count),
        "vocabulary": (codec.vocabulary[:, :4] if merged else codec.vocabulary).tolist(),
        **instruments,
    }


def _fingerprint(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def from_dict(d: dict, *, source: str = "codec") -> Codec:
    """Rebuilds a codec from `Codec.to_dict()`, checking format and fingerprint."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CodecError(f"{source}: not a jaxmusic codec (no 'format': {FORMAT!r})")
    if d.get("version") != FORMAT_VERSION:
        raise CodecError(
            f"{source}: codec format version {d.get('version')!r}; this jaxmusic reads {FORMAT_VERSION}"
        )
    body = {k: v for k, v in d.items() if k not in ("format", "version", "fingerprint")}
    if _fingerprint(body) != d.get("fingerprint"):
        raise CodecError(f"{source}: fingerprint does not match its content (edited or corrupt)")
    try:
        return Codec(
            velocity_edges=tuple(body["velocity_edges"]),
            velocity_values=tuple(body["velocity_values"]),
            duration_edges=tuple(body["duration_edges"]),
            duration_values=tuple(body["duration_values"]),
            onset_values=tuple(body["onset_values"]),
            chord_tolerance=body["chord_tolerance"],
            vocabulary=np.asarray(body["vocabulary"], np.int16),
            genres=tuple(body["genres"]),
            min_count=body["min_count"],
            instruments=Instruments(  # absent: written before instruments, merged
                body.get("instruments", "merged"),
                tuple(body.get("instrument_programs", (0,))),
                body.get("drum_duration", 0.0),
            ),
        )
    except KeyError as e:
        raise CodecError(f"{source}: missing field {e}") from None


def load(path: str | os.PathLike, *, expected_fingerprint: str | None = None) -> Codec:
    """Loads `codec.json` (a local path, or a path object of any file system, such as
    `etils.epath.Path("gs://...")`); with `expected_fingerprint`, refuses any other codec."""
    try:
        d = json.loads((path if hasattr(path, "read_text") else Path(path)).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CodecError(f"{path}: cannot read codec: {e}") from None
    codec = from_dict(d, source=str(path))
    if expected_fingerprint is not None and codec.fingerprint != expected_fingerprint:
        raise CodecError(
            f"{path}: codec fingerprint {codec.fingerprint} does not match the expected "
            f"{expected_fingerprint}: the model was trained with another vocabulary"
        )
    return codec


def durations(notes: np.ndarray) -> np.ndarray:
    """float64[n] note lengths in seconds, rounded to TIME_DECIMALS.

    Equal lengths in ticks differ by float noise in seconds (0.2 can be
    0.19999999999999996 or 0.20000000000000018); unrounded, a quantile edge could
    fall between them and split equal notes into two bins.
    """
    return np.round(notes["end"] - notes["start"], TIME_DECIMALS)


def _onset_bins_with_feedback(start: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Onset bin per note, each gap measured from the previous *decoded* start.

    Args:
      start: float[n] note starts, ascending.
      values: float[k] bin values, values[0] == 0, ascending.

    Returns:
      int64[n] bins; decoding start = cumsum(values[bins]) stays within half a
      bin spacing of the true start instead of drifting.
    """
    mids = (values[1:] + values[:-1]) / 2  # nearest value = searchsorted on midpoints
    out = np.empty(start.shape[0], np.int64)
    decoded = 0.0
    mids_list, values_list = mids.tolist(), values.tolist()
    for i, s in enumerate(start.tolist()):
        b = bisect.bisect_right(mids_list, s - decoded)
        out[i] = b
        decoded += values_list[b]
    return out


def played_instruments(codec: Codec) -> np.ndarray:
    """bool[codec.instruments.count]: the instruments some pseudo-note of the vocabulary plays."""
    out = np.zeros(codec.instruments.count, bool)
    out[codec.vocabulary[:, 4]] = True
    return out
