"""The pseudo-note codec: one categorical id per note, and back.

A note (start, end, pitch, velocity) becomes the tuple
(pitch, velocity bin, duration bin, onset-gap bin), and each tuple seen in the
training data becomes one id (see DESIGN.md, "The pseudo-note"):

- duration = end - start, binned at quantiles of all training durations (the
  seed: 4 bins); velocity binned at quantiles too (4 bins);
- onset gap = time from the previous note's start (the first note: from 0), one
  bin for "with the previous note" (gap 0) plus `onset_bins` bins at quantiles of
  the positive gaps. `onset_bins=0` is the seed exactly: no onset information,
  and decoding lays notes back to back.

Onset gaps are quantized with error feedback: each gap is measured from the
previous note's *decoded* start and mapped to the nearest bin value, so rounding
errors never accumulate over a piece (decoding is a plain cumulative sum).

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
TIME_DECIMALS = 6  # times are binned at microsecond resolution


class CodecError(Error, ValueError):
    """A codec that cannot be fitted, loaded or used as asked."""


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
      vocabulary: int16[V, 4] rows (pitch, velocity bin, duration bin, onset bin),
        sorted; row r is id `first_note_id + r`.
      genres: genre names; genre g is id `NUM_SPECIAL + g`.
      min_count: tuples seen fewer times than this in fitting are not in the
        vocabulary (`encode` maps them to their nearest neighbour, or to UNK).
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

    def __post_init__(self):
        vocab = np.asarray(self.vocabulary, np.int16).reshape(-1, 4)
        object.__setattr__(self, "vocabulary", vocab)
        shape = self.grid_shape
        if vocab.size and (np.any(vocab.max(axis=0) >= shape) or np.any(vocab < 0)):
            raise CodecError("vocabulary holds a bin index beyond the codec's bins")

    @property
    def grid_shape(self) -> tuple[int, int, int, int]:
        """The bins' grid: (pitches, velocity bins, duration bins, onset bins)."""
        return (NUM_PITCHES, self.num_velocity_bins, self.num_duration_bins, self.num_onset_bins)

    @functools.cached_property
    def _exact_table(self) -> np.ndarray:
        """int32[128, kv, kd, ko]: the id of each tuple, UNK where unseen."""
        table = np.full(self.grid_shape, UNK, np.int32)
        p, v, d, o = self.vocabulary.T.astype(np.int64)
        table[p, v, d, o] = self.first_note_id + np.arange(self.vocabulary.shape[0], dtype=np.int32)
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
        """int64[n, 4] rows (pitch, velocity bin, duration bin, onset bin) of notes
        NOTE_DTYPE[n], sorted by start (as `midi_io.read` gives them)."""
        out = np.zeros((notes.shape[0], 4), np.int64)
        out[:, 0] = notes["pitch"]
        out[:, 1] = np.digitize(notes["velocity"], self.velocity_edges)
        out[:, 2] = np.digitize(durations(notes), self.duration_edges)
        if self.has_onsets:
            out[:, 3] = _onset_bins_with_feedback(notes["start"], np.asarray(self.onset_values))
        return out

    def encode(self, notes: np.ndarray, *, unknown: str = "nearest") -> np.ndarray:
        """int32[n] ids of notes NOTE_DTYPE[n], sorted by start (a pitch outside 0..127 is
        an error). unknown: what a tuple outside the vocabulary becomes: "nearest", the
        nearest seen tuple with the same onset bin (timing is kept); "unk", UNK (its onset
        gap is then lost when decoding)."""
        return self.ids_of(self._checked_quantize(notes), unknown=unknown)

    def ids_of(self, tuples: np.ndarray, *, unknown: str = "nearest") -> np.ndarray:
        """int32[n]: the ids of `quantize`'s int[n, 4] rows (`encode` after the binning;
        `unknown` as there)."""
        if unknown not in ("nearest", "unk"):
            raise CodecError(f"unknown= must be 'nearest' or 'unk', got {unknown!r}")
        q = np.asarray(tuples, np.int64).reshape(-1, 4)
        ids = self._exact_table[tuple(q.T)]
        unseen = ids == UNK
        if unknown == "nearest" and unseen.any():
            rows, inverse = np.unique(q[unseen], axis=0, return_inverse=True)
            ids[unseen] = _nearest_ids(self, rows)[inverse.reshape(-1)]
        return ids

    def unknown_mask(self, notes: np.ndarray) -> np.ndarray:
        """bool[n]: notes whose exact tuple is not in the vocabulary."""
        return self._exact_table[tuple(self._checked_quantize(notes).T)] == UNK

    def _checked_quantize(self, notes: np.ndarray) -> np.ndarray:
        if notes.shape[0] and (notes["pitch"].min() < 0 or notes["pitch"].max() >= NUM_PITCHES):
            raise CodecError("notes hold a pitch outside 0..127")
        return self.quantize(notes)

    def decode(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """NOTE_DTYPE[m] notes (m <= n, program 0, the first starting at its gap from 0) of
        ids int[n]: PAD, BOS, UNK and genre ids are skipped; EOS ends the piece. Without
        onset bins (the seed) each note starts where the previous one ends.

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
        if self.has_onsets:
            start = np.cumsum(np.asarray(self.onset_values)[q[:, 3]])
        else:
            start = np.concatenate([[0.0], np.cumsum(duration)[:-1]])
        return midi_io.make_notes(start, start + duration, q[:, 0], np.asarray(self.velocity_values)[q[:, 1]])

    def transpose_table(self, semitones: int) -> np.ndarray:
        """int32[vocab_size]: the id of each pseudo-note moved by `semitones`.

        Special and genre ids map to themselves; a pseudo-note whose moved tuple
        is outside 0..127 or not in the vocabulary maps to -1.
        """
        table = np.arange(self.vocab_size, dtype=np.int32)
        p = self.vocabulary[:, 0].astype(np.int64) + semitones
        ok = (p >= 0) & (p < NUM_PITCHES)
        moved = np.full(self.vocabulary.shape[0], -1, np.int32)
        v, d, o = self.vocabulary[ok, 1:].T.astype(np.int64)
        found = self._exact_table[p[ok], v, d, o]
        moved[ok] = np.where(found == UNK, -1, found)
        table[self.first_note_id :] = moved
        return table

    def transpose_tables(self, max_semitones: int) -> np.ndarray | None:
        """int32[2k + 1, vocab_size]: `transpose_table` of each shift -k..k (None for k = 0)."""
        if max_semitones < 0:
            raise CodecError(f"transposition semitones must be >= 0, got {max_semitones}")
        if max_semitones == 0:
            return None
        return np.stack([self.transpose_table(s) for s in range(-max_semitones, max_semitones + 1)])

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


def _nearest_ids(codec: Codec, tuples: np.ndarray) -> np.ndarray:
    """int32[n]: the id of the seen tuple nearest to each row of int[n, 4]: the onset bin
    kept first (so timing survives), then the pitch, the duration bin, the velocity bin."""
    if not codec.vocabulary.shape[0]:
        return np.full(tuples.shape[0], UNK, np.int32)
    vocab = codec.vocabulary.astype(np.int64)
    weights = np.array([10**3, 1, 10, 10**6])  # pitch, velocity, duration, onset
    cost = (np.abs(tuples[:, None, :] - vocab[None, :, :]) * weights).sum(-1)
    return (codec.first_note_id + cost.argmin(1)).astype(np.int32)


def _body(codec: Codec) -> dict:
    """What `Codec.to_dict` holds beside its format and fingerprint."""
    return {
        "velocity_edges": [float(x) for x in codec.velocity_edges],
        "velocity_values": [int(x) for x in codec.velocity_values],
        "duration_edges": [float(x) for x in codec.duration_edges],
        "duration_values": [float(x) for x in codec.duration_values],
        "onset_values": [float(x) for x in codec.onset_values],
        "chord_tolerance": float(codec.chord_tolerance),
        "genres": list(codec.genres),
        "min_count": int(codec.min_count),
        "vocabulary": codec.vocabulary.tolist(),
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
