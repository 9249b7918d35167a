"""Fitting a codec on training notes: bins at quantiles, onset values by Lloyd, the
vocabulary of the tuples seen, in memory that does not grow with the notes.

A dataset build of any size runs `fit`'s steps over its files: gather `NoteStats`
piece by piece (or merge them from parallel or Beam workers), `fit_bins`, count each
piece's tuples (`tuple_counts`, `tuple_cells`), then `with_vocabulary`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from jaxmusic.codec import (
    NUM_FAMILIES,
    TIME_DECIMALS,
    Codec,
    CodecError,
    Instruments,
    durations,
)


def grid_size(bins: Codec) -> int:
    """Tuples the bins can make (the length of `tuple_counts`)."""
    return int(np.prod(bins.grid_shape))


def tuple_counts(bins: Codec, tuples: np.ndarray) -> np.ndarray:
    """int64[grid_size]: how often each tuple occurs in `Codec.quantize`'s int[n, 5] rows."""
    return np.bincount(np.ravel_multi_index(tuple(np.asarray(tuples).T), bins.grid_shape),
                       minlength=grid_size(bins))  # fmt: skip


def tuple_cells(bins: Codec, tuples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`tuple_counts` in sparse form, for a piece that touches few of the grid's cells:
    (cells int64[k], counts int64[k]), the cells' indices into `tuple_counts`."""
    return np.unique(np.ravel_multi_index(tuple(np.asarray(tuples).T), bins.grid_shape), return_counts=True)


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
    the notes at once. Durations are the pitched notes' (drums: `drum_durations`);
    `programs` counts notes per program, index 128 the drums.
    """

    _PENDING = 1 << 18  # values held before they are folded into the counts
    _NAMES = ("velocities", "durations", "gaps", "drum_durations")

    def __init__(self):
        self.notes = 0
        self.programs = np.zeros(129, np.int64)
        self._counts = {name: Counts() for name in self._NAMES}
        self._raw: dict[str, list[np.ndarray]] = {name: [] for name in self._NAMES}
        self._merged: dict[str, list[Counts]] = {name: [] for name in self._NAMES}
        self._pending = 0

    def add(self, notes: np.ndarray) -> NoteStats:
        """Counts one piece's notes (NOTE_DTYPE[n], sorted by start); returns self."""
        if not notes.shape[0]:
            return self
        self.notes += int(notes.shape[0])
        drum = notes["is_drum"]
        self.programs += np.bincount(np.where(drum, 128, notes["program"]), minlength=129)
        self._raw["velocities"].append(notes["velocity"].astype(np.float64))
        self._raw["durations"].append(durations(notes[~drum]))
        self._raw["drum_durations"].append(durations(notes[drum]))
        self._raw["gaps"].append(np.round(np.diff(notes["start"]), TIME_DECIMALS))
        return self._added(4 * notes.shape[0])

    def merge(self, other: NoteStats) -> NoteStats:
        """Adds another's statistics to these; returns self."""
        other._fold()
        self.notes += other.notes
        self.programs += other.programs
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
    def drum_durations(self) -> Counts:
        """Counts of the drum notes' durations, seconds."""
        self._fold()
        return self._counts["drum_durations"]

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
    counts = np.zeros(grid_size(bins), np.int64)
    for p in pieces:
        counts += tuple_counts(bins, bins.quantize(p))
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
    instruments: str = "merged",
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
      instruments: the instrument component (`codec.INSTRUMENT_MODES`): "merged" (the
        seed), "family" (each written as its most played program) or "program".

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
    if not stats.durations.total:
        raise CodecError("cannot fit a codec on drum notes alone")
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
        vocabulary=np.zeros((0, 5), np.int16),
        genres=tuple(genres),
        min_count=min_count,
        instruments=Instruments(
            instruments,
            _written_programs(stats.programs, instruments),
            stats.drum_durations.median() if stats.drum_durations.total else 0.0,
        ),
    )


def _written_programs(programs: np.ndarray, instruments: str) -> tuple[int, ...]:
    """The program each pitched instrument is written as: a family's most played program
    (its first when the family was never played); a program itself."""
    if instruments == "merged":
        return (0,)
    if instruments == "program":
        return tuple(range(128))
    counts = programs[:128].reshape(NUM_FAMILIES, 8)
    return tuple(int(8 * f + counts[f].argmax()) for f in range(NUM_FAMILIES))


def with_vocabulary(bins: Codec, counts: np.ndarray) -> Codec:
    """`bins` with the vocabulary of every tuple counted at least `bins.min_count` times.

    Args:
      counts: int64[grid_size(bins)], `Codec.tuple_counts` summed over the training pieces.
    """
    seen = np.argwhere(np.asarray(counts).reshape(bins.grid_shape) >= bins.min_count)  # sorted tuples
    return dataclasses.replace(bins, vocabulary=seen.astype(np.int16))


def instrument_report(codec: Codec, counts: np.ndarray) -> dict[str, dict]:
    """Per instrument with training notes: {name: {"notes", "pseudo_notes" (its ids in the
    vocabulary), "fallback_share" (its training notes whose tuple was seen fewer than
    min_count times: they encode as their nearest pseudo-note)}}.

    Args:
      counts: int64[grid_size(codec)], the training tuples' counts `with_vocabulary` was given.
    """
    per = np.asarray(counts).reshape(-1, codec.instruments.count)  # the instrument is the grid's last axis
    notes = per.sum(0)
    fallback = np.where(per < codec.min_count, per, 0).sum(0)
    in_vocabulary = np.bincount(codec.vocabulary[:, 4], minlength=codec.instruments.count)
    return {
        name: {
            "notes": int(notes[i]),
            "pseudo_notes": int(in_vocabulary[i]),
            "fallback_share": float(fallback[i] / notes[i]),
        }
        for i, name in enumerate(codec.instruments.names())
        if notes[i]
    }
