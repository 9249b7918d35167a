"""CLI: build a jaxmusic dataset from a MIDI folder or the bundled music21 corpus.

  python -m data_pipeline.build --midi_dir DIR --data_dir OUT [--name N] [--workers K] [--instruments family]
  python -m data_pipeline.build --corpus music21 --data_dir OUT [--corpus_size full]
  python -m data_pipeline.build --midi_dir DIR --data_dir OUT --beam_runner DirectRunner \
      [--beam_options "--direct_num_workers=4 --direct_running_mode=multi_processing"]

Writes the TFDS dataset to OUT/midi_pieces/<name>/<version>/, with `codec.json`
and `manifest.jsonl` beside its files, and prints what it found. Point a training
config's `data_dir` at OUT (or at the printed dataset folder).

The build's memory does not grow with the notes (docs/datasets.md): it keeps
statistics, not pieces, while it reads. With `--beam_runner` the same build runs as an
Apache Beam pipeline (TFDS's Beam support; `pip install -e '.[beam]'`): DirectRunner on
this machine, DataflowRunner, FlinkRunner or SparkRunner across many.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from data_pipeline import corpus, dataset, sources
from jaxmusic import cli, fileio, midi_io
from jaxmusic.errors import UsageError


def _define_flags(fv, argv: list[str]) -> None:
    from absl import flags

    flags.DEFINE_string("midi_dir", None, "a folder of genre subfolders of MIDI files", flag_values=fv)
    flags.DEFINE_enum("corpus", None, ["music21"], "the bundled corpus", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "where datasets are written", flag_values=fv)
    flags.DEFINE_string(
        "name", None, "the dataset's name (default: the folder's, or the corpus)", flag_values=fv
    )
    flags.DEFINE_enum("corpus_size", "small", ["small", "full"], "how much of the corpus", flag_values=fv)
    flags.DEFINE_string("cache_dir", None, "converted corpus cache", flag_values=fv)
    flags.DEFINE_integer("workers", None, "processes (default: every core)", flag_values=fv)
    flags.DEFINE_integer("num_shards", None, "shards a split (default: a power of two)", flag_values=fv)
    flags.DEFINE_integer("validation_percent", 5, "pieces for validation, by content hash", flag_values=fv)
    flags.DEFINE_integer("test_percent", 5, "pieces for test, by content hash", flag_values=fv)
    flags.DEFINE_integer("onset_bins", 8, "positive onset-gap bins of the codec", flag_values=fv)
    flags.DEFINE_integer("min_count", 2, "occurrences a pseudo-note needs to get an id", flag_values=fv)
    flags.DEFINE_enum(
        "instruments", "merged", ["merged", "family", "program"],
        "the pseudo-note's instrument: merged (one, drums left out: the seed), General MIDI family "
        "or program, drums as an instrument of their own",
        flag_values=fv,
    )  # fmt: skip
    flags.DEFINE_bool("overwrite", False, "rebuild a dataset that exists", flag_values=fv)
    flags.DEFINE_string(
        "beam_runner", None,
        "build as an Apache Beam pipeline on this runner (DirectRunner, DataflowRunner, ...; the beam extra)",
        flag_values=fv,
    )  # fmt: skip
    flags.DEFINE_string(
        "beam_options", "",
        'Beam pipeline flags as on a command line, e.g. "--project=P --region=R --temp_location=gs://B/tmp"',
        flag_values=fv,
    )  # fmt: skip
    flags.mark_flag_as_required("data_dir", flag_values=fv)
    flags.mark_flags_as_mutual_exclusive(["midi_dir", "corpus"], required=True, flag_values=fv)


@cli.entry_point
def main(argv: list[str]) -> int:
    f, _ = cli.parse_flags(argv, _define_flags, prog="python -m data_pipeline.build", doc=__doc__)
    for flag in ("workers", "num_shards"):
        if f[flag].value is not None and f[flag].value < 1:
            raise UsageError(f"--{flag} must be >= 1, got {f[flag].value}")
    remote = bool(f.midi_dir) and sources.is_url(f.midi_dir)
    midi_dir = (f.midi_dir.rstrip("/") if remote else Path(f.midi_dir)) if f.midi_dir else None
    folder_name = str(midi_dir).rsplit("/", 1)[-1] if remote else midi_dir.name if midi_dir else ""
    name = f.name or (f.corpus if f.corpus else folder_name)
    if not name or not name.replace("_", "").isalnum():
        raise UsageError(f"--name {name!r}: use letters, digits and underscores")
    t0 = time.perf_counter()
    kwargs = dict(
        name=name.lower(),
        workers=f.workers,
        num_shards=f.num_shards,
        overwrite=f.overwrite,
        codec_kwargs={"onset_bins": f.onset_bins, "min_count": f.min_count, "instruments": f.instruments},
        validation_percent=f.validation_percent,
        test_percent=f.test_percent,
        beam_runner=f.beam_runner,
        beam_options=shlex.split(f.beam_options),
    )
    if f.beam_options and not f.beam_runner:
        raise UsageError("--beam_options needs --beam_runner")
    if f.beam_runner:  # checked before any long work, naming the flags
        try:
            dataset.beam_runner_of(f.beam_runner, shlex.split(f.beam_options))
        except sources.BuildError as e:
            raise UsageError(f"--{e}") from None
    if f.corpus:
        cache = Path(f.cache_dir) if f.cache_dir else dataset.default_cache_dir()
        files, failures = corpus.prepare(cache, size=f.corpus_size, workers=f.workers)
        out, summary = dataset.build(f.data_dir, files=files, rejected_sources=failures, **kwargs)
    else:
        if not remote and not midi_dir.is_dir():
            raise UsageError(f"--midi_dir {midi_dir}: not a directory")
        for genre in [] if remote else sources.empty_genre_folders(midi_dir):
            print(f"warning: genre folder {midi_dir / genre} holds no MIDI files", file=sys.stderr)
        out, summary = dataset.build(f.data_dir, midi_dir=midi_dir, **kwargs)
    seconds = time.perf_counter() - t0
    summary["seconds"] = round(seconds, 1)
    summary["files_per_second"] = round(summary["files_found"] / seconds, 1)
    print(f"dataset: {out}")
    print(
        f"files found {summary['files_found']} = ok {summary['ok']} + rejected {summary['rejected']}"
        f" + duplicate {summary['duplicate']}"
    )
    print("pieces: " + ", ".join(f"{k} {v}" for k, v in summary["pieces"].items()))
    print(
        f"notes {summary['notes']}, vocabulary {summary['vocab_size']}, genres {', '.join(summary['genres'])}"
    )
    for name, row in summary.get("per_instrument", {}).items() if f.instruments != "merged" else []:
        print(f"  {name:>20}: {row['notes']} training notes, {row['pseudo_notes']} pseudo-notes, "
              f"{100 * row['fallback_share']:.2f}% fall back to the nearest")  # fmt: skip
    print(f"time {seconds:.1f} s ({summary['files_per_second']} files/s)")
    for line in midi_io.InternalReadError.report_lines(
        [(e["path"], e["reason"]) for e in summary["internal_errors"]]
    ):
        print(line, file=sys.stderr)
    print(f"codec: {out / sources.CODEC_FILE}\nmanifest: {out / sources.MANIFEST_FILE}")
    if sources.is_url(out):  # a bucket: no rename to make a write atomic
        (out / "build.json").write_text(json.dumps(summary, indent=1))
    else:
        fileio.atomic_write(out / "build.json", json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
