"""The `key_agreement` section: how often a continuation keeps its primer's
Krumhansl-Schmuckler key (`conditioning.key_of`), with 95% Wilson intervals, for the
samples, the evaluated split's real continuations and the train split's."""

from __future__ import annotations

import math

import numpy as np

from jaxmusic import codec as codec_lib
from jaxmusic import conditioning, music_stats

# The most train pieces whose real key agreement is measured (+-2 points at 95%).
KEY_TRAIN_PIECES = 2048


def agreement_counts(
    codec: codec_lib.Codec, primers: list[np.ndarray], continued: list[np.ndarray]
) -> tuple[int, int]:
    """(continuations whose key is their primer's, pairs judged): pairs where either has
    no key to tell are left out."""
    keys = [(music_stats.estimate_key(codec.decode(p)), music_stats.estimate_key(codec.decode(c)))
            for p, c in zip(primers, continued, strict=True)]  # fmt: skip
    told = [a == b for a, b in keys if conditioning.NO_KEY not in (a, b)]
    return int(sum(told)), len(told)


def agreement(codec: codec_lib.Codec, primers: list[np.ndarray], continued: list[np.ndarray]) -> float:
    """The share of continuations whose key is their primer's (0 when no pair is left)."""
    return share(agreement_counts(codec, primers, continued))["share"]


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share (95% by default): how far a share measured
    on `trials` pieces may lie from the collection's own. (0, 1) for no trials."""
    if not trials:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def share(counts: tuple[int, int]) -> dict:
    """A share with its count and Wilson interval, as the report holds it."""
    agree, told = counts
    return {
        "share": agree / told if told else 0.0,
        "pairs": told,
        "interval": list(wilson_interval(agree, told)),
    }


def section(
    codec: codec_lib.Codec, pieces, train_pieces, train: tuple, c, primer_notes: int, seed: int
) -> dict:
    """The `key_agreement` section. train: the train split's `samples.continuations`; c:
    the `samples.Continuations`."""
    real_primers = [pieces.sequences[i][1 : 1 + primer_notes] for i in c.real_idx]
    pick = np.random.default_rng(seed).choice(len(train[0]), size=min(KEY_TRAIN_PIECES, len(train[0])),
                                              replace=False)  # fmt: skip
    counts = {
        "samples": agreement_counts(codec, c.primers, c.sample_ids),
        "real": agreement_counts(codec, real_primers, c.real_ids),
        # Real music's own share, on a split usually 10 to 20 times the evaluated one
        # (a validation split of 43 pieces measures it only to about +-14 points).
        "train_split": agreement_counts(
            codec,
            [train_pieces.sequences[train[0][i]][1 : 1 + primer_notes] for i in pick],
            [train[1][i] for i in pick],
        ),
    }
    shares = {name: share(v) for name, v in counts.items()}
    return {**{name: v["share"] for name, v in shares.items()}, "counts": shares}
