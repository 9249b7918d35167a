"""The `form` section: do samples come back to their own material as real music does?

Long samples (`form_notes` notes, 512 by default, EOS never drawn) continue primers of
the split's pieces; the real continuations of the pieces long enough to have as many
notes after the primer, and the train split's (real music in the samples' place), are
the measure. Per piece, in three views of its notes: the pseudo-note ids; pitch and
onset-gap bin (what a reader of plain MIDI sees, velocity and duration aside); and a
transposition-free view (each note's pitch interval from the note before and its
onset-gap bin, so a motif played a third higher repeats):

- repetition share (n = 4, 8, 16): of the piece's n-grams, the share that already
  occurred earlier in the same piece;
- the lag at which material returns: for each repeated 8-gram of ids, the distance
  back to its latest earlier occurrence, as a histogram over log-spaced bins;
- loop share: the share of notes inside a loop, a stretch that repeats one pattern of at
  most 8 notes at least 4 times in a row (a sample stuck on one figure is not form).

Each is compared with the real continuations as the other statistics are (Yang &
Lerch's overlap area and KL; `statistics`). `self_similarity` draws which notes recur
where in a few samples beside their real continuations.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxmusic import codec as codec_lib
from jaxmusic import inference, music_stats
from jaxmusic.evaluation import samples

ORDERS = (4, 8, 16)
VIEWS = ("ids", "pitches", "intervals")
LAG_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # notes back; the last bin holds everything beyond
LOOP_PERIOD = 8  # a loop's pattern has at most this many notes ...
LOOP_REPEATS = 4  # ... and comes this many times in a row


def views(codec: codec_lib.Codec, ids: np.ndarray) -> dict[str, np.ndarray]:
    """{"ids": int64[n] the note ids, "pitches": int64[n] a symbol of (pitch, onset-gap
    bin, instrument) per note, "intervals": int64[n] a symbol of (pitch interval from the
    note before, onset-gap bin, instrument) per note}."""
    ids = np.asarray(ids, np.int64)
    rows = codec.vocabulary[ids - codec.first_note_id].astype(np.int64)
    interval = np.diff(rows[:, 0], prepend=rows[:1, 0]) + 128  # 0..255
    onset = rows[:, 3]
    inst, ki = rows[:, 4], codec.instruments.count
    return {"ids": ids, "pitches": (rows[:, 0] * codec.num_onset_bins + onset) * ki + inst,
            "intervals": (interval * codec.num_onset_bins + onset) * ki + inst}  # fmt: skip


def _earlier(x: np.ndarray, n: int) -> np.ndarray:
    """int64[len(x) - n + 1]: for each n-gram of x, how far back its latest earlier
    occurrence starts (0 where it is new)."""
    if x.shape[0] < n:
        return np.zeros(0, np.int64)
    grams = np.lib.stride_tricks.sliding_window_view(x, n)
    _, inverse = np.unique(grams, axis=0, return_inverse=True)
    last: dict[int, int] = {}
    lag = np.zeros(grams.shape[0], np.int64)
    for i, g in enumerate(inverse.reshape(-1).tolist()):
        if g in last:
            lag[i] = i - last[g]
        last[g] = i
    return lag


def repetition(x: np.ndarray, n: int) -> float:
    """The share of x's n-grams that occurred earlier in x (0 for fewer than n notes)."""
    lag = _earlier(x, n)
    return float((lag > 0).mean()) if lag.size else 0.0


def lag_histogram(x: np.ndarray, n: int = 8) -> np.ndarray:
    """float64[len(LAG_EDGES)]: the shares of x's repeated n-grams by the distance back to
    their latest earlier occurrence (bins from LAG_EDGES; zeros when nothing repeats)."""
    lag = _earlier(x, n)
    lag = lag[lag > 0]
    bins = np.searchsorted(np.asarray(LAG_EDGES[1:]), lag, side="right")
    counts = np.bincount(bins, minlength=len(LAG_EDGES))
    return counts / max(lag.size, 1)


def loop_share(x: np.ndarray) -> float:
    """The share of x's notes inside a loop: a stretch where every note equals the one p
    notes before (p <= LOOP_PERIOD), LOOP_REPEATS periods long or more."""
    n = x.shape[0]
    inside = np.zeros(n, bool)
    for p in range(1, LOOP_PERIOD + 1):
        if n <= p:
            break
        eq = np.concatenate([np.zeros(p, bool), x[p:] == x[:-p]])
        # Runs of equal-to-p-before; a run of r covers r + p notes (the first period too).
        change = np.flatnonzero(np.diff(np.concatenate([[0], eq.astype(np.int8), [0]])))
        for start, end in zip(change[0::2], change[1::2], strict=True):
            if end - start + p >= LOOP_REPEATS * p:
                inside[start - p : end] = True
    return float(inside.mean()) if n else 0.0


STATISTICS = (
    *(f"repetition_{n}_{view}" for view in VIEWS for n in ORDERS),
    "lag_histogram",
    "loop_share",
)


def statistics(codec: codec_lib.Codec, pieces: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every form statistic of every piece (note ids): {name: float64[P, d]}."""
    out = {name: [] for name in STATISTICS}
    for ids in pieces:
        v = views(codec, ids)
        for view, x in v.items():
            for n in ORDERS:
                out[f"repetition_{n}_{view}"].append([repetition(x, n)])
        out["lag_histogram"].append(lag_histogram(v["ids"]))
        out["loop_share"].append([loop_share(v["ids"])])
    return {k: np.asarray(v, np.float64).reshape(len(pieces), -1) for k, v in out.items()}


@dataclasses.dataclass
class Long:
    """Long samples and the real music they are measured against (note ids, notes only)."""

    primers: list[np.ndarray]
    genres: np.ndarray
    sample_ids: list[np.ndarray]
    real_ids: list[np.ndarray]  # the split's real continuations of form_notes notes
    train_ids: list[np.ndarray]  # the train split's continuations of the same length


def draw(generator: inference.Generator, pieces, train_pieces, options: Any,
         primer_notes: int) -> Long | None:  # fmt: skip
    """options.num_samples long samples of options.form_notes notes (EOS never drawn)
    after primers of the split's pieces (any piece longer than its primer: a sample's
    form does not need its piece to be long, and few pieces of a small split are), the
    real continuations of the pieces that have form_notes notes after their primer, and
    as many of the train split's; None when no piece of the split is that long."""
    n = options.form_notes
    idx, real = samples.continuations(pieces, primer_notes, n)
    long_enough = [i for i, ids in zip(idx, real, strict=True) if ids.shape[0] == n]
    real = [ids for ids in real if ids.shape[0] == n]
    if not real:
        return None
    # The long pieces' primers first, so sample i and real continuation i share a primer
    # (the self-similarity picture); the rest drawn from every piece.
    rest = np.random.default_rng(options.seed).choice(idx, size=options.num_samples, replace=True)
    picked = np.concatenate([long_enough, rest])[: options.num_samples].astype(np.int64)
    primers = [pieces.sequences[i][1 : 1 + primer_notes] for i in picked]
    settings = dataclasses.replace(options.settings, fixed_length=True)
    batch = min(options.batch, options.num_samples)
    bands = samples.line_ups(generator, pieces, picked, options.line_up)
    ids = generator.continuations(primers, pieces.genres[picked], num_notes=n, settings=settings,
                                  seed=options.seed, batch=batch, line_ups=bands)  # fmt: skip
    _, train = samples.continuations(train_pieces, primer_notes, n)
    train = [ids for ids in train if ids.shape[0] == n]
    pick = np.random.default_rng(options.seed).permutation(len(train))[: options.num_samples]
    return Long(primers, pieces.genres[picked], ids, real, [train[i] for i in pick])


def section(generator: inference.Generator, pieces, train_pieces, options: Any,
            primer_notes: int) -> tuple[dict, Long | None, dict]:  # fmt: skip
    """(the `form` section or why it was skipped, the long samples and their real
    music, {"samples" | "real" | "train": statistics}) for the plots."""
    if not options.form_notes:
        return {"skipped": "form_notes 0"}, None, {}
    long = draw(generator, pieces, train_pieces, options, primer_notes)
    if long is None:
        why = f"no piece of split {options.split} has {options.form_notes} notes after its primer"
        return {"skipped": why}, None, {}
    codec = generator.codec
    stats = {k: statistics(codec, v) for k, v in (("samples", long.sample_ids), ("real", long.real_ids),
                                                 ("train", long.train_ids))}  # fmt: skip
    out: dict[str, Any] = {
        "form_notes": options.form_notes,
        "samples": len(long.sample_ids),
        "real_continuations": len(long.real_ids),
        "train_continuations": len(long.train_ids),
        "statistics": {},
    }
    for name in STATISTICS:
        row = music_stats.compare_sets(stats["real"][name], stats["samples"][name])
        if long.train_ids:  # real music in the samples' place
            train = music_stats.compare_sets(stats["real"][name], stats["train"][name])
            row["reference_overlap"], row["train_mean"] = train["overlap_area"], train["generated_mean"]
        out["statistics"][name] = row
    # The share of pieces more than half loop: samples stuck on one figure.
    out["looping_share"] = {k: float((v["loop_share"][:, 0] > 0.5).mean()) for k, v in stats.items()
                            if v["loop_share"].size}  # fmt: skip
    return out, long, stats
