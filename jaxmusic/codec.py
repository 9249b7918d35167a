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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxmusic import midi_io
from jaxmusic.cli import Error, atomic_write

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
        shape = self._grid_shape
        if vocab.size and (np.any(vocab.max(axis=0) >= shape) or np.any(vocab < 0)):
            raise CodecError("vocabulary holds a bin index beyond the codec's bins")

    @property
    def _grid_shape(self) -> tuple[int, int, int, int]:
        return (NUM_PITCHES, self.num_velocity_bins, self.num_duration_bins, self.num_onset_bins)

    @functools.cached_property
    def _exact_table(self) -> np.ndarray:
        """int32[128, kv, kd, ko]: the id of each tuple, UNK where unseen."""
        table = np.full(self._grid_shape, UNK, np.int32)
        p, v, d, o = self.vocabulary.T.astype(np.int64)
        table[p, v, d, o] = self.first_note_id + np.arange(self.vocabulary.shape[0], dtype=np.int32)
        return table

    def _nearest_ids(self, tuples: np.ndarray) -> np.ndarray:
        """int32[n]: the id of the seen tuple nearest to each row of int[n, 4].

        Nearest keeps the onset bin first (so timing survives), then the pitch,
        then the duration bin, then the velocity bin.
        """
        if not self.vocabulary.shape[0]:
            return np.full(tuples.shape[0], UNK, np.int32)
        vocab = self.vocabulary.astype(np.int64)
        weights = np.array([10**3, 1, 10, 10**6])  # pitch, velocity, duration, onset
        cost = (np.abs(tuples[:, None, :] - vocab[None, :, :]) * weights).sum(-1)
        return (self.first_note_id + cost.argmin(1)).astype(np.int32)

    # -- sizes and ids -------------------------------------------------------

    @property
    def num_velocity_bins(self) -> int:
        return len(self.velocity_values)

    @property
    def num_duration_bins(self) -> int:
        return len(self.duration_values)

    @property
    def num_onset_bins(self) -> int:
        """Onset categories, the "with the previous note" bin included (1 for the seed)."""
        return max(len(self.onset_values), 1)

    @property
    def has_onsets(self) -> bool:
        return len(self.onset_values) > 0

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
        """Bins each note.

        Args:
          notes: NOTE_DTYPE[n], sorted by start (as `midi_io.read` gives them).

        Returns:
          int64[n, 4] rows (pitch, velocity bin, duration bin, onset bin).
        """
        out = np.zeros((notes.shape[0], 4), np.int64)
        out[:, 0] = notes["pitch"]
        out[:, 1] = np.digitize(notes["velocity"], self.velocity_edges)
        out[:, 2] = np.digitize(durations(notes), self.duration_edges)
        if self.has_onsets:
            out[:, 3] = _onset_bins_with_feedback(notes["start"], np.asarray(self.onset_values))
        return out

    @property
    def grid_size(self) -> int:
        """Tuples the bins can make (the length of `tuple_counts`)."""
        return int(np.prod(self._grid_shape))

    def tuple_counts(self, tuples: np.ndarray) -> np.ndarray:
        """int64[grid_size]: how often each tuple occurs in `quantize`'s int[n, 4] rows."""
        return np.bincount(np.ravel_multi_index(tuple(np.asarray(tuples).T), self._grid_shape),
                           minlength=self.grid_size)  # fmt: skip

    def tuple_cells(self, tuples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`tuple_counts` in sparse form, for a piece that touches few of the grid's cells:
        (cells int64[k], counts int64[k]), the cells' indices into `tuple_counts`."""
        return np.unique(
            np.ravel_multi_index(tuple(np.asarray(tuples).T), self._grid_shape), return_counts=True
        )

    def encode(self, notes: np.ndarray, *, unknown: str = "nearest") -> np.ndarray:
        """Encodes notes.

        Args:
          notes: NOTE_DTYPE[n], sorted by start. Pitches outside 0..127 are an error.
          unknown: what a tuple outside the vocabulary becomes: "nearest", the
            nearest seen tuple with the same onset bin (timing is kept); "unk", UNK
            (its onset gap is then lost when decoding).

        Returns:
          int32[n] ids.
        """
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
            ids[unseen] = self._nearest_ids(rows)[inverse.reshape(-1)]
        return ids

    def unknown_mask(self, notes: np.ndarray) -> np.ndarray:
        """bool[n]: notes whose exact tuple is not in the vocabulary."""
        return self._exact_table[tuple(self._checked_quantize(notes).T)] == UNK

    def _checked_quantize(self, notes: np.ndarray) -> np.ndarray:
        if notes.shape[0] and (notes["pitch"].min() < 0 or notes["pitch"].max() >= NUM_PITCHES):
            raise CodecError("notes hold a pitch outside 0..127")
        return self.quantize(notes)

    def decode(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decodes ids back to notes.

        PAD, BOS, UNK and genre ids are skipped; EOS ends the piece. Without onset
        bins (the seed) each note starts where the previous one ends.

        Args:
          ids: int[n] ids of this codec.

        Returns:
          NOTE_DTYPE[m] notes, m <= n, program 0, the first starting at its gap from 0.

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

    # -- save / load ---------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-able dict of everything needed to rebuild the codec."""
        body = {
            "velocity_edges": [float(x) for x in self.velocity_edges],
            "velocity_values": [int(x) for x in self.velocity_values],
            "duration_edges": [float(x) for x in self.duration_edges],
            "duration_values": [float(x) for x in self.duration_values],
            "onset_values": [float(x) for x in self.onset_values],
            "chord_tolerance": float(self.chord_tolerance),
            "genres": list(self.genres),
            "min_count": int(self.min_count),
            "vocabulary": self.vocabulary.tolist(),
        }
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


# ----------------------------------------------------------------------------
# Fitting.
# ----------------------------------------------------------------------------


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


class Counts:
    """Exact counts of distinct float64 values: a distribution that merges without
    holding its samples (what a build of any size keeps of the notes' times).

    Attributes:
      values: float64[k] distinct values, ascending.
      counts: int64[k] how often each occurs (> 0).
    """

    def __init__(self, values: np.ndarray | None = None, counts: np.ndarray | None = None):
        self.values = np.zeros(0, np.float64) if values is None else np.asarray(values, np.float64)
        self.counts = np.zeros(0, np.int64) if counts is None else np.asarray(counts, np.int64)

    @classmethod
    def of(cls, x: np.ndarray) -> Counts:
        """The counts of the samples x float[n]."""
        values, counts = np.unique(np.asarray(x, np.float64), return_counts=True)
        return cls(values, counts)

    def merge(self, *others: Counts) -> Counts:
        """These counts and the others' added (a new Counts)."""
        values, inverse = np.unique(np.concatenate([self.values, *(o.values for o in others)]),
                                    return_inverse=True)  # fmt: skip
        counts = np.zeros(values.shape[0], np.int64)
        np.add.at(counts, inverse, np.concatenate([self.counts, *(o.counts for o in others)]))
        return Counts(values, counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def select(self, mask: np.ndarray) -> Counts:
        return Counts(self.values[mask], self.counts[mask])

    def ranked(self, ranks: np.ndarray) -> np.ndarray:
        """float64[...]: the samples at 0-based ranks (int[...]) of their sorted order."""
        return self.values[np.searchsorted(np.cumsum(self.counts), ranks, side="right")]

    def quantile(self, q: np.ndarray) -> np.ndarray:
        """`np.quantile(samples, q)` (its default "linear" method), bit for bit.

        Args:
          q: float64[m] in [0, 1].
        """
        n = self.total
        virtual = (n - 1) * np.asarray(q, np.float64)
        below = np.floor(virtual).astype(np.int64)
        last = virtual >= n - 1
        below = np.where(last, n - 1, below)
        above = np.where(last, n - 1, below + 1)
        return _lerp(self.ranked(below), self.ranked(above), virtual - below)

    def median(self) -> float:
        """`np.median(samples)`, bit for bit."""
        n = self.total
        middle = self.ranked(np.array([(n - 1) // 2, n // 2]))
        return float(np.mean(middle[:1] if n % 2 else middle))

    def clipped(self, top: float) -> Counts:
        """The counts of `np.minimum(samples, top)`."""
        keep = self.values < top
        over = self.counts[~keep].sum()
        if not over:
            return self
        return Counts(np.append(self.values[keep], top), np.append(self.counts[keep], over))


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """NumPy's quantile interpolation (numpy.lib._function_base_impl._lerp), so that
    `Counts.quantile` equals `np.quantile` to the bit (tests/test_codec.py holds it to it)."""
    diff = b - a
    out = a + diff * t
    return np.where(t >= 0.5, b - diff * (1 - t), out)


class NoteStats:
    """Everything `fit_bins` needs of the training notes, gathered piece by piece
    (`add`) or merged from parts (`merge`, for a parallel or Beam build), in memory
    that grows with the distinct durations and gaps, not with the notes.

    Velocities are held as counts over 0..127, durations and onset gaps as exact
    `Counts` on their natural grid (seconds rounded to TIME_DECIMALS, as `fit`
    rounds them), so bins fitted from merged statistics equal bins fitted from all
    the notes at once.
    """

    _PENDING = 1 << 18  # values held before they are folded into the counts
    _NAMES = ("velocities", "durations", "gaps")

    def __init__(self):
        self.notes = 0
        self._counts = {name: Counts() for name in self._NAMES}
        self._raw: dict[str, list[np.ndarray]] = {name: [] for name in self._NAMES}
        self._merged: dict[str, list[Counts]] = {name: [] for name in self._NAMES}
        self._pending = 0

    def add(self, notes: np.ndarray) -> NoteStats:
        """Counts one piece's notes (NOTE_DTYPE[n], sorted by start); returns self."""
        if not notes.shape[0]:
            return self
        self.notes += int(notes.shape[0])
        self._raw["velocities"].append(notes["velocity"].astype(np.float64))
        self._raw["durations"].append(durations(notes))
        self._raw["gaps"].append(np.round(np.diff(notes["start"]), TIME_DECIMALS))
        return self._added(3 * notes.shape[0])

    def merge(self, other: NoteStats) -> NoteStats:
        """Adds another's statistics to these; returns self."""
        other._fold()
        self.notes += other.notes
        for k in self._NAMES:
            self._merged[k].append(other._counts[k])
        return self._added(sum(c.values.shape[0] for c in other._counts.values()))

    def _added(self, size: int) -> NoteStats:
        # Folded in batches: a fold per piece would cost the size of all the counts each time.
        self._pending += size
        if self._pending > self._PENDING:
            self._fold()
        return self

    def _fold(self) -> None:
        if not self._pending:
            return
        for k in self._NAMES:
            raw = [Counts.of(np.concatenate(self._raw[k]))] if self._raw[k] else []
            self._counts[k] = self._counts[k].merge(*raw, *self._merged[k])
        self._raw = {k: [] for k in self._NAMES}
        self._merged = {k: [] for k in self._NAMES}
        self._pending = 0

    @property
    def velocities(self) -> Counts:
        """Counts of the notes' velocities."""
        self._fold()
        return self._counts["velocities"]

    @property
    def durations(self) -> Counts:
        """Counts of the notes' durations, seconds."""
        self._fold()
        return self._counts["durations"]

    @property
    def gaps(self) -> Counts:
        """Counts of the gaps between consecutive starts within a piece, seconds."""
        self._fold()
        return self._counts["gaps"]

    def __getstate__(self):  # pickled folded (worker processes, Beam)
        self._fold()
        return self.__dict__


def _quantile_bins(x: Counts, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner edges at quantiles of the samples and each bin's median (duplicate edges merged).

    Returns:
      (edges float[k-1], values float[k]) with k <= num_bins.
    """
    if num_bins < 1:
        raise CodecError(f"number of bins must be >= 1, got {num_bins}")
    edges = np.unique(x.quantile(np.arange(1, num_bins) / num_bins))
    # Two edges between the same pair of samples make an empty bin: drop its lower
    # edge; an edge at or below the minimum leaves bin 0 empty: drop it.
    occupied = np.bincount(np.digitize(x.values, edges), weights=x.counts, minlength=edges.shape[0] + 1) > 0
    edges = edges[occupied[1:]]
    edges = edges[edges > x.values[0]]
    bins = np.digitize(x.values, edges)
    values = np.array([x.select(bins == b).median() for b in range(edges.shape[0] + 1)])
    return edges, values


def _fill_farthest(x: Counts, values: np.ndarray, k: int) -> np.ndarray:
    """Adds values (up to k in all) at the samples farthest from every value.

    Quantile bins merge when few samples are spread over many bins (a rare long
    rest joins the bin of short gaps); this gives such samples a value of their own.

    Args:
      x: the samples.
      values: float[m] values, m <= k.
      k: the number of values wanted.

    Returns:
      float[k'] ascending values, m <= k' <= k (fewer when x has fewer distinct values).
    """
    values = list(values)
    while len(values) < k:
        distance = np.abs(x.values[:, None] - np.asarray(values)[None, :]).min(1)
        if distance.max() <= 0:
            break
        values.append(float(x.values[distance.argmax()]))
    return np.sort(values)


def _running_sums(x: Counts, chunk: int = 1 << 20) -> np.ndarray:
    """float64[k + 1]: the sum of the sorted samples before each distinct value (and of
    all), added one sample at a time as `np.cumsum` of the samples adds them, so
    that sums of whole runs of equal values equal the sums over the samples to the bit."""
    out = np.zeros(x.values.shape[0] + 1)
    acc = 0.0
    for i, (v, c) in enumerate(zip(x.values.tolist(), x.counts.tolist(), strict=True)):
        while c:
            step = min(c, chunk)
            acc = float(np.cumsum(np.concatenate([[acc], np.full(step, v)]))[-1])
            c -= step
        out[i + 1] = acc
    return out


def _lloyd_values(x: Counts, values: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Refines 1-D quantizer values by Lloyd iterations (k-means on a line).

    Args:
      x: the samples.
      values: float[k] initial values, ascending.

    Returns:
      float[k] values, ascending: each the mean of the samples nearest to it.
    """
    csum = _running_sums(x)
    before = np.concatenate([[0], np.cumsum(x.counts)])  # samples before each distinct value
    values = np.asarray(values, np.float64).copy()
    for _ in range(iterations):
        cuts = np.concatenate([[0], np.searchsorted(x.values, (values[1:] + values[:-1]) / 2),
                               [x.values.size]])  # fmt: skip
        counts = np.diff(before[cuts])
        sums = csum[cuts[1:]] - csum[cuts[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), values)
        if np.allclose(new, values, rtol=0, atol=1e-9):
            break
        values = new
    return np.sort(values)


def fit(pieces: Iterable[np.ndarray], **settings: Any) -> Codec:
    """Fits bins and vocabulary on training pieces held in memory. A dataset build of
    any size runs the same steps over its files: `NoteStats`, `fit_bins`,
    `Codec.tuple_counts`, `with_vocabulary`.

    Args:
      pieces: NOTE_DTYPE[n_i] arrays, each sorted by start.
      **settings: `fit_bins`'s keyword arguments (bins, min_count, genres, ...).

    Returns:
      The fitted `Codec`.
    """
    pieces = [p for p in pieces if p.shape[0]]
    stats = NoteStats()
    for p in pieces:
        stats.add(p)
    bins = fit_bins(stats, **settings)
    counts = np.zeros(bins.grid_size, np.int64)
    for p in pieces:
        counts += bins.tuple_counts(bins.quantize(p))
    return with_vocabulary(bins, counts)


def fit_bins(
    stats: NoteStats,
    *,
    duration_bins: int = 4,
    velocity_bins: int = 4,
    onset_bins: int = 8,
    onset_fit: str = "lloyd",
    chord_tolerance: float = 0.02,
    min_count: int = 2,
    genres: Sequence[str] = (),
) -> Codec:
    """The bins of a codec from the statistics of its training notes: a codec with an
    empty vocabulary, to quantize the pieces with and count their tuples
    (`Codec.tuple_counts`, then `with_vocabulary`).

    Args:
      stats: the training notes' `NoteStats`.
      duration_bins: duration bins at quantiles (the seed: 4).
      velocity_bins: velocity bins at quantiles.
      onset_bins: bins for positive onset gaps, beside the "with the previous
        note" bin; 0 reproduces the seed (no onset information).
      onset_fit: "quantile": each positive-gap bin decodes to the median of its
        quantile bin; "lloyd": those values refined by Lloyd iterations (1-D
        k-means), which minimizes the onset error of decoding. Quantile values
        crowd around the most common gaps and leave holes (on POP909 none
        between 0 and 0.13 s), and a top value far below the long rests makes
        the notes after a rest late.
      chord_tolerance: seconds; smaller gaps count as "with the previous note".
      min_count: tuples seen fewer times are left out of the vocabulary.
      genres: genre names, each given an id.

    Returns:
      The bins, as a `Codec` without vocabulary.
    """
    if not stats.notes:
        raise CodecError("cannot fit a codec on no notes")
    if onset_bins < 0 or min_count < 1 or chord_tolerance < 0:
        raise CodecError(
            f"need onset_bins >= 0, min_count >= 1, chord_tolerance >= 0; got "
            f"{onset_bins}, {min_count}, {chord_tolerance}"
        )
    if onset_fit not in ("quantile", "lloyd"):
        raise CodecError(f"onset_fit must be 'quantile' or 'lloyd', got {onset_fit!r}")
    if len(set(genres)) != len(genres):
        raise CodecError(f"genre names repeat: {list(genres)}")
    v_edges, v_values = _quantile_bins(stats.velocities, velocity_bins)
    d_edges, d_values = _quantile_bins(stats.durations, duration_bins)
    o_values = np.zeros(0)
    if onset_bins:
        positive = stats.gaps.select(stats.gaps.values >= chord_tolerance)
        if positive.total:
            _, o_values = _quantile_bins(positive, onset_bins)
            if onset_fit == "lloyd":
                o_values = _fill_farthest(positive, o_values, onset_bins)
                # Clipped: squared error would spend values on a few rests of minutes.
                top = positive.ranked(np.ceil((positive.total - 1) * 0.995).astype(np.int64))  # "higher"
                o_values = _lloyd_values(positive.clipped(float(top)), o_values)
        o_values = np.concatenate([[0.0], o_values])
    return Codec(
        velocity_edges=tuple(v_edges.tolist()),
        velocity_values=tuple(round(v) for v in v_values.tolist()),
        duration_edges=tuple(d_edges.tolist()),
        duration_values=tuple(d_values.tolist()),
        onset_values=tuple(o_values.tolist()),
        chord_tolerance=float(chord_tolerance),
        vocabulary=np.zeros((0, 4), np.int16),
        genres=tuple(genres),
        min_count=min_count,
    )


def with_vocabulary(bins: Codec, counts: np.ndarray) -> Codec:
    """`bins` with the vocabulary of every tuple counted at least `bins.min_count` times.

    Args:
      counts: int64[bins.grid_size], `Codec.tuple_counts` summed over the training pieces.
    """
    seen = np.argwhere(np.asarray(counts).reshape(bins._grid_shape) >= bins.min_count)  # sorted tuples
    return dataclasses.replace(bins, vocabulary=seen.astype(np.int16))
