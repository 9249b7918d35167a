"""The `long_form` section: does a sample hold its music to its end? Long samples (EOS
never drawn) from the same primers: the statistics of their first and last `num_notes`
notes against the real continuations (overlap, and for a scalar statistic the share of
samples outside the real range), and the genre the classifier gives each part."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxmusic import inference, music_stats
from jaxmusic.evaluation import genre


def section(generator: inference.Generator, options: Any, c, real: tuple, classifier) -> dict:
    """options: `evaluator.Options`; c: the `samples.Continuations`; real: (notes,
    statistics) of the real continuations; classifier: `genre.section`'s, or None."""
    if not options.long_notes:
        return {"skipped": "long_notes 0"}
    n = options.num_notes
    settings = dataclasses.replace(options.settings, fixed_length=True)
    batch = min(options.batch, options.num_samples)
    ids = generator.continuations(c.primers, c.genres, num_notes=options.long_notes, seed=options.seed,
                                  settings=settings, batch=batch, line_ups=c.line_ups)  # fmt: skip
    notes = {"first": [generator.codec.decode(x[:n]) for x in ids],
             "last": [generator.codec.decode(x[-n:]) for x in ids]}  # fmt: skip
    stats = {k: music_stats.statistics(v, instrumentation=generator.codec.instruments.has_drums)
             for k, v in notes.items()}  # fmt: skip
    out: dict[str, Any] = {"long_notes": options.long_notes, "window_notes": n, "statistics": {}}
    for name in real[1]:
        overlap = {
            k: music_stats.compare_sets(real[1][name], s[name])["overlap_area"] for k, s in stats.items()
        }
        out["statistics"][name] = {"first_overlap": overlap["first"], "last_overlap": overlap["last"]}
        outside = {k: music_stats.outside_range(real[1][name], s[name]) for k, s in stats.items()}
        if outside["first"] is not None:
            out["statistics"][name] |= {"first_outside": outside["first"], "last_outside": outside["last"]}
    out["largest_drop"] = float(
        max(v["first_overlap"] - v["last_overlap"] for v in out["statistics"].values())
    )
    if classifier is not None:
        out["genre_adherence"] = {
            k: float((classifier.predict(genre.features(notes[k], s)) == c.genres).mean())
            for k, s in stats.items()
        }
    return out
