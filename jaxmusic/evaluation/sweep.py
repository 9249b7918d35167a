"""The `sweep` section: the samples' summary again for each setting of a grid of
sampling settings (jaxmusic.evaluate's `--sweep name=v1,v2`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxmusic import inference, sampler
from jaxmusic.evaluation import keys, samples, statistics


def row(generator: inference.Generator, options: Any, pieces, primer_notes: int, settings: sampler.Settings,
        real: tuple) -> dict:  # fmt: skip
    """One setting's summary: overlap areas, endings, degenerate samples, key agreement."""
    codec = generator.codec
    c = samples.Continuations.draw(generator, pieces, options, primer_notes, settings)
    overlap = statistics.overlaps(real[1], statistics.of(codec, c.sample_ids)[1])
    return {
        "settings": settings.to_dict(),
        "mean_overlap": float(np.mean(list(overlap.values()))),
        "min_overlap": float(np.min(list(overlap.values()))),
        "overlap": overlap,  # per statistic
        "ended_share": float(np.mean(c.ended)),
        "degenerate_share": c.degenerate_share(),
        "key_agreement": keys.agreement(codec, c.primers, c.sample_ids),
    }
