"""The whole evaluation: `run(generator, Options(...))` -> the report, section by section
(the sections: this package's modules)."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from jaxmusic import fileio, inference, sampler
from jaxmusic.errors import UsageError
from jaxmusic.evaluation import (
    form,
    genre,
    keys,
    likelihood,
    long_form,
    page,
    report,
    samples,
    statistics,
    sweep,
)


@dataclasses.dataclass(frozen=True)
class Options:
    """What to evaluate and how (every CLI flag of jaxmusic.evaluate but the outputs').

    Attributes:
      workdir: the run, as the report names it.
      split: the dataset split evaluated; data_dir: the dataset (None: the model's own).
      num_samples, num_notes, primer_notes: samples, their notes, the notes of real music
        each continues (None: the config's encoder_len).
      ngram_orders: Kneser-Ney baseline orders (each >= 2).
      settings: how samples are drawn; sweep: settings to compare (`sweep.parse` rows).
      line_up: which instruments a sample plays (a codec with instruments): "primer" (as
        `settings` say: with `primer_instruments`, its primer's) or "piece" (every one its
        piece plays, as a user names a band: `samples.line_ups`).
      long_notes: notes of the long samples (0: none); form_notes: notes of the samples
        whose form is measured (0: none); seed: primer choice and sampling;
      batch: samples generated at once; plots: a folder for PNG plots, or None; page: the
        run's HTML page (`page`), or None.
    """

    workdir: str
    settings: sampler.Settings
    split: str = "validation"
    data_dir: str | None = None
    num_samples: int = 64
    num_notes: int = 128
    primer_notes: int | None = None
    ngram_orders: tuple[int, ...] = (2, 3, 4)
    sweep: tuple[dict, ...] = ()
    line_up: str = "primer"
    long_notes: int = 1024
    form_notes: int = 512
    seed: int = 0
    batch: int = 64
    plots: str | None = None
    page: str | None = None

    def check(self) -> None:
        """Raises UsageError naming an option that cannot work, before any long work."""
        for name, low in (("num_samples", 1), ("num_notes", 1), ("batch", 1)):
            if getattr(self, name) < low:
                raise UsageError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.long_notes and self.long_notes < 2 * self.num_notes:
            raise UsageError(
                f"long_notes must be 0 or >= 2 x num_notes ({2 * self.num_notes}), got {self.long_notes}"
            )
        if self.form_notes and self.form_notes < 16:
            raise UsageError(
                f"form_notes must be 0 or >= 16 (the longest n-gram measured), got {self.form_notes}"
            )
        if self.line_up not in sampler.LINE_UPS:
            raise UsageError(f"line_up must be one of {', '.join(sampler.LINE_UPS)}, got {self.line_up!r}")
        if self.primer_notes is not None and self.primer_notes < 0:
            raise UsageError(f"primer_notes must be >= 0, got {self.primer_notes}")
        if any(n < 2 for n in self.ngram_orders):
            raise UsageError(
                f"ngram_orders must be >= 2 (the unigram is always reported), got {self.ngram_orders}"
            )


def run(generator: inference.Generator, options: Options) -> dict[str, Any]:
    """The whole evaluation; returns the JSON report (and writes the plots if asked)."""
    options.check()
    codec, config = generator.codec, generator.config
    dataset, pieces, train_pieces = samples.load_splits(generator, options.data_dir, options.split)
    primer_notes = config.encoder_len if options.primer_notes is None else options.primer_notes
    genres = tuple(codec.genres) or ("all",)
    out: dict[str, Any] = {
        "workdir": options.workdir,
        "checkpoint_step": generator.step,
        "checkpoint": generator.checkpoint,
        "dtype": config.model.dtype,  # the products' input type (as asked, or the checkpoint's)
        "dataset": str(dataset),
        "split": options.split,
        "pieces": len(pieces),
        "codec_fingerprint": codec.fingerprint,
        "genres": list(genres),
        "missing_genres": [g for i, g in enumerate(genres) if not (pieces.genres == i).any()],
    }
    out["likelihood"] = likelihood.section(generator, pieces, genres)
    out["baselines"] = likelihood.baselines(
        train_pieces, pieces, codec.vocab_size, options.ngram_orders, genres
    )
    c = samples.Continuations.draw(generator, pieces, options, primer_notes, options.settings)
    real, generated = statistics.of(codec, c.real_ids), statistics.of(codec, c.sample_ids)
    out["samples"] = samples.section(c, options, primer_notes, options.settings)
    out["statistics"] = statistics.section(real, generated)
    # The train split's continuations: real music in the samples' place, and what the
    # genre classifier learns from.
    train = samples.continuations(train_pieces, primer_notes, options.num_notes)
    out["samples"]["train_degenerate_share"] = statistics.degenerate_share(train[1]) if train[1] else None
    statistics.add_reference(out["statistics"], codec, train[1], real, options.num_samples, options.seed)
    train_notes = [codec.decode(x) for x in train[1]]  # decoded once: instrumentation and genre read them
    if codec.instruments.has_drums:
        out["instrumentation"] = statistics.instrumentation(real[0], generated[0], train_notes)
    out["key_agreement"] = keys.section(codec, pieces, train_pieces, train, c, primer_notes, options.seed)
    out["genre_adherence"], classifier = genre.section(codec, pieces, train_pieces, (train[0], train_notes),
                                                       c, real, generated)  # fmt: skip
    out["long_form"] = long_form.section(generator, options, c, real, classifier)
    out["form"], long, form_stats = form.section(generator, pieces, train_pieces, options, primer_notes)
    if options.sweep:
        out["sweep"] = [sweep.row(generator, options, pieces, primer_notes,
                                  dataclasses.replace(options.settings, **combo), real)
                        for combo in options.sweep]  # fmt: skip
    if options.plots or options.page:
        _plots_and_page(out, options, c, (real[1], generated[1]), long, form_stats, codec)
    return out


def _plots_and_page(out: dict, options: Options, c, stats: tuple, long, form_stats: dict, codec) -> None:
    """Adds the plots (`report.plot`; stats: the real and generated statistics) and the
    page to `out`. The plots are drawn once into a local folder (--plots staged there: a
    bucket gets each PNG whole; else a temporary one, as the page shows them all the
    same), and the page reads them from it."""
    with contextlib.ExitStack() as stack:
        if options.plots:
            folder = stack.enter_context(fileio.staged_folder(options.plots))
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jaxmusic-plots-")))
        out["plots"] = report.plot(folder, out, *stats, long=long, form_stats=form_stats)
        if options.page:
            drawn = f"temperature {options.settings.temperature}, top_p {options.settings.top_p}"
            listen = page.listening(c, long, drawn)
            out["page"] = {"path": options.page,
                           "bytes": page.write(options.page, out, codec, listen, folder)}  # fmt: skip
    if not options.plots:
        del out["plots"]
