"""CLI: how good a trained model is, in one command.

  python -m jaxmusic.evaluate --workdir runs/default [--split validation] \\
      [--num_samples 64] [--num_notes 128] [--primer_notes N] [--ngram_orders 2,3,4] \\
      [--temperature 0.9] [--top_k 0] [--top_p 0.9] [--sweep temperature=0.8,1.0] [--long_notes 1024] \\
      [--carry_state] [--min_notes 1] [--nountempered_rhythm] [--seed 0] [--line_up primer|piece] \\
      [--data_dir D] \\
      [--json eval.json] [--plots eval_plots] [--page eval.html]

Reports, for the best checkpoint of the workdir (the lowest validation NLL; --checkpoint
latest for its newest) on a split of its dataset, the
model's likelihood against n-gram baselines, its samples' music statistics beside real
music's, key and genre adherence, long samples and an optional sweep of sampling
settings (the sections: `jaxmusic.evaluation`). Sampling settings not given are the
run's own (its config's `sampling`). A table goes to stdout, everything to --json,
histograms of real against generated statistics to --plots, and one self-contained HTML
page (figures, plots, every sample to listen to beside its real music) to --page, by
default beside --json.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from jaxmusic import cli, fileio, host_memory, inference
from jaxmusic.errors import UsageError
from jaxmusic.evaluation import evaluator, page, report


def _bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(value)
    return value.lower() == "true"


SWEEPABLE = {"temperature": float, "top_k": int, "top_p": float, "min_notes": int, "carry_state": _bool,
             "untempered_rhythm": _bool, "untempered_copy": _bool, "primer_instruments": _bool,
             "untempered_instruments": _bool}  # fmt: skip


def parse_sweep(specs: Sequence[str]) -> list[dict[str, Any]]:
    """The grid of `--sweep name=v1,v2` flags (one per setting): every combination.

    Raises:
      UsageError: an unknown setting or a value of the wrong type.
    """
    axes = []
    for spec in specs:
        name, _, values = spec.partition("=")
        if name not in SWEEPABLE or not values:
            raise UsageError(f"--sweep {spec!r}: use name=v1,v2,... with name one of {', '.join(SWEEPABLE)}")
        try:
            axes.append([(name, SWEEPABLE[name](v)) for v in values.split(",")])
        except ValueError:
            raise UsageError(f"--sweep {spec!r}: a value is not a {name}") from None
    return [dict(combo) for combo in itertools.product(*axes)] if axes else []


def _orders(text: str) -> tuple[int, ...]:
    try:
        orders = tuple(sorted({int(n) for n in text.split(",") if n.strip()}))
    except ValueError:
        raise UsageError(f"--ngram_orders must be comma-separated integers, got {text!r}") from None
    if any(n < 2 for n in orders):
        raise UsageError(f"--ngram_orders must be >= 2 (the unigram is always reported), got {list(orders)}")
    return orders


def _define_flags(fv, argv: list[str]) -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "a training workdir (see --checkpoint)", flag_values=fv)
    flags.DEFINE_string("split", "validation", "the dataset split to evaluate on", flag_values=fv)
    flags.DEFINE_string(
        "data_dir", None, "the dataset (default: the one the model trained on)", flag_values=fv
    )
    flags.DEFINE_integer("num_samples", 64, "samples generated for the statistics", flag_values=fv)
    flags.DEFINE_integer("num_notes", 128, "notes per sample (and per real continuation)", flag_values=fv)
    flags.DEFINE_integer("primer_notes", None, "notes of a real piece each sample continues "
                         "(default: the config's encoder_len)", flag_values=fv)  # fmt: skip
    flags.DEFINE_string(
        "ngram_orders", "2,3,4", "Kneser-Ney baseline orders, comma-separated", flag_values=fv
    )
    cli.define_sampling_flags(fv)
    flags.DEFINE_integer("seed", 0, "primer choice and sampling", flag_values=fv)
    flags.DEFINE_enum("line_up", None, ["primer", "piece"], "which instruments a sample plays (a codec with "
                      "instruments): as the settings say (primer), or every one its piece plays (piece); "
                      "default: the config's sampling.line_up", flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("batch", 64, "samples generated at once", flag_values=fv)
    sweepable = ", ".join(SWEEPABLE)
    flags.DEFINE_multi_string("sweep", [], f"name=v1,v2,...: also sample with each value of a setting "
                              f"({sweepable}; several: every combination)", flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("long_notes", 1024, "notes of the long samples whose first and last "
                         "--num_notes notes are compared (0: none)", flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("form_notes", 512, "notes of the samples whose form (repetition, returns, "
                         "loops) is measured against real continuations as long (0: none)",
                         flag_values=fv)  # fmt: skip
    flags.DEFINE_string("json", None, "write the report here", flag_values=fv)
    flags.DEFINE_string("plots", None, "write PNG plots into this folder", flag_values=fv)
    flags.DEFINE_string("page", None, "write the run's HTML page here (default: beside --json, as .html; "
                        "'' for none)", flag_values=fv)  # fmt: skip
    flags.mark_flag_as_required("workdir", flag_values=fv)


def _page(f) -> str | None:
    """--page, or beside --json when not given."""
    if f.page is not None:
        return f.page or None
    return page.default_path(f.json) if f.json else None


def _options(f, generator: inference.Generator) -> evaluator.Options:
    """The flags as evaluation options, each checked with its flag's name."""
    options = evaluator.Options(
        workdir=str(f.workdir), settings=cli.sampling_settings(f, generator), split=f.split,
        data_dir=f.data_dir, num_samples=f.num_samples, num_notes=f.num_notes, primer_notes=f.primer_notes,
        ngram_orders=_orders(f.ngram_orders), sweep=tuple(parse_sweep(f.sweep or [])),
        line_up=f.line_up or generator.config.sampling.line_up, long_notes=f.long_notes,
        form_notes=f.form_notes, seed=f.seed, batch=f.batch, plots=f.plots,
        page=_page(f),
    )  # fmt: skip
    try:
        options.check()
    except UsageError as e:
        raise UsageError(f"--{e}") from None
    return options


@cli.entry_point
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()
    f, _ = cli.parse_flags(
        argv, _define_flags, prog="python -m jaxmusic.evaluate", doc=__doc__, log_level="error"
    )
    parse_sweep(f.sweep or [])
    _orders(f.ngram_orders)
    generator = cli.load_generator(f)
    options = _options(f, generator)
    if f.json:
        cli.ensure_writable("--json", fileio.path(f.json).parent)
    if f.plots:
        cli.ensure_writable("--plots", f.plots)
    if options.page:
        cli.ensure_writable("--page", fileio.path(options.page).parent)
    result = evaluator.run(generator, options)
    print(report.format_report(result))
    if f.json:
        fileio.atomic_write(f.json, json.dumps(result, indent=1))
        print(f"report: {f.json}")
    if f.plots:
        print(f"plots: {', '.join(str(fileio.path(f.plots) / p) for p in result['plots'])}")
    if options.page:
        print(f"page: {options.page} ({result['page']['bytes'] / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
