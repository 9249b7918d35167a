"""The `statistics` section: the samples' music statistics against real music's
(Yang & Lerch's overlap area and KL divergence, `music_stats`), real music's own overlap
in the samples' place, and degenerate samples."""

from __future__ import annotations

import numpy as np

from jaxmusic import codec as codec_lib
from jaxmusic import midi_io, music_stats


def of(codec: codec_lib.Codec, ids: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """(the notes of each piece of ids, every statistic of them: {name: float64[P, d]})."""
    notes = [codec.decode(x) for x in ids]
    return notes, music_stats.statistics(notes, instrumentation=codec.instruments.has_drums)


def section(real: tuple, generated: tuple) -> dict:
    """{statistic: overlap area, KL divergence, each set's mean} of real against generated
    ((notes, statistics) pairs, `of`)."""
    return {name: music_stats.compare_sets(real[1][name], generated[1][name]) for name in real[1]}


def reference_overlaps(codec: codec_lib.Codec, train_ids: list[np.ndarray], real_stats: dict, count: int,
                       seed: int) -> dict[str, float] | None:  # fmt: skip
    """Each statistic's overlap area with real music in place of the samples: up to
    `count` of the train split's continuations (train_ids) against the evaluated split's
    (`real_stats`). What a model whose samples were real music of the collection would
    score, so the noise floor of an overlap measured against this many real
    continuations; None without train continuations."""
    if not train_ids:
        return None
    pick = np.random.default_rng(seed).choice(len(train_ids), size=min(count, len(train_ids)), replace=False)
    return overlaps(real_stats, of(codec, [train_ids[i] for i in pick])[1])


def add_reference(section: dict, codec: codec_lib.Codec, train_ids: list[np.ndarray], real: tuple, count: int,
                  seed: int) -> None:  # fmt: skip
    """Adds each statistic's `reference_overlap` (`reference_overlaps`) to the section."""
    for name, value in (reference_overlaps(codec, train_ids, real[1], count, seed) or {}).items():
        section[name]["reference_overlap"] = value


def degenerate_share(pieces: list[np.ndarray]) -> float:
    """The share of `pieces` (note ids) that `music_stats.is_degenerate` calls degenerate."""
    return float(np.mean([music_stats.is_degenerate(ids) for ids in pieces]))


def overlaps(real_stats: dict, generated_stats: dict) -> dict[str, float]:
    """{statistic: overlap area} of two sets' statistics."""
    return {
        name: float(music_stats.compare_sets(real_stats[name], generated_stats[name])["overlap_area"])
        for name in real_stats
    }


def instrumentation(real: list[np.ndarray], generated: list[np.ndarray], train: list[np.ndarray]) -> dict:
    """What a band plays, set against set (notes of the real continuations, the samples and
    the train split's continuations): the share of pieces with drums, instruments per
    piece, and each instrument's pitch range (5th to 95th percentile of its notes)."""

    def drums(pieces):
        return float(np.mean([p["is_drum"].any() for p in pieces])) if pieces else None

    def ranges(pieces):
        notes = np.concatenate(pieces) if pieces else midi_io.empty_notes()
        played = midi_io.instrument_index(notes)
        return {
            midi_io.INSTRUMENT_NAMES[i]: np.percentile(notes["pitch"][played == i], [5, 95]).tolist()
            for i in np.unique(played)
            if i != midi_io.DRUMS and (played == i).sum() >= 20
        }

    sets = {"real": real, "samples": generated, "train_split": train}
    return {
        "with_drums": {k: drums(v) for k, v in sets.items()},
        "instruments_per_piece": {
            k: float(np.mean([music_stats.instruments_used(p)[0] for p in v])) for k, v in sets.items() if v
        },
        "pitch_range": {k: ranges(v) for k, v in sets.items() if k != "train_split"},
    }
