"""CLI: build a jaxmusic dataset from a MIDI folder or the bundled music21 corpus.

  python -m data_pipeline.build --midi_dir DIR --data_dir OUT [--name N] [--workers K]
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

import contextlib
import io
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from etils import epath

from data_pipeline import builder as builder_lib
from jaxmusic import cli, midi_io
from jaxmusic import codec as codec_lib


def default_cache_dir() -> Path:
    """Where converted corpora are cached: $XDG_CACHE_HOME/jaxmusic (or ~/.cache/jaxmusic)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxmusic"


def default_num_shards(num_files: int) -> int:
    """A power of two (1..64) leaving about 64 pieces or more a train shard.

    A power of two divides evenly among the power-of-two host counts of TPU pod
    slices, so `tfds.split_for_jax_process` gives every host whole shards.
    """
    return 2 ** max(0, min(6, int(math.log2(max(1, num_files * 0.9 / 64)))))


def build(
    data_dir: str | os.PathLike,
    *,
    name: str,
    midi_dir: str | os.PathLike | None = None,
    files: Sequence[tuple[Path, str]] | None = None,
    rejected_sources: Sequence[tuple[str, str, str]] = (),
    workers: int | None = None,
    num_shards: int | None = None,
    overwrite: bool = False,
    codec_kwargs: dict | None = None,
    validation_percent: int = 5,
    test_percent: int = 5,
    beam_runner: str | None = None,
    beam_options: Sequence[str] = (),
) -> tuple[epath.Path, dict]:
    """Builds the dataset; returns (its folder, a summary of what was found).

    Exactly one of `midi_dir` (a folder of genre folders) and `files`
    ((path, genre) pairs) names the input. With `beam_runner` (a Beam runner's
    name) the build is an Apache Beam pipeline run by it, with `beam_options` (Beam's
    pipeline flags, e.g. "--project=P"); it writes the same dataset. A Beam build
    reads `midi_dir` and writes `data_dir` on any file system TensorFlow reads
    (gs://BUCKET/... included); the local build writes a local `data_dir`.

    Raises:
      builder.BuildError: bad input (no MIDI files, a dataset already there, an
        unknown runner, Beam not installed, ...).
    """
    import tensorflow_datasets as tfds

    runner = _beam_runner(beam_runner, beam_options) if beam_runner else None
    if (midi_dir is None) == (files is None):
        raise builder_lib.BuildError("give exactly one of midi_dir and files")
    if midi_dir is not None:
        files = builder_lib.find_sources(midi_dir)
    if not files:
        raise builder_lib.BuildError("no MIDI files to build from")
    if not 0 <= validation_percent <= 100 or not 0 <= test_percent <= 100 - validation_percent:
        raise builder_lib.BuildError(
            f"split percents must leave a train share: validation {validation_percent}, test {test_percent}"
        )
    num_files = len(files)
    config = builder_lib.MidiPiecesConfig(
        name=name,
        files=tuple((str(p), g) for p, g in files),
        label_root=str(midi_dir) if midi_dir is not None else None,
        rejected_sources=tuple(rejected_sources),
        validation_percent=validation_percent,
        test_percent=test_percent,
        codec_kwargs=dict(codec_kwargs or {}),
        workers=workers,
        beam=runner is not None,
    )
    del files  # Path objects, hundreds of bytes a file: the config keeps the paths as text
    if builder_lib.is_url(data_dir) and not runner:
        raise builder_lib.BuildError(
            f"--data_dir {data_dir}: the local build writes to a local folder (it spills pieces beside "
            "the dataset); build into a bucket with --beam_runner, or into a mounted folder"
        )
    b = builder_lib.MidiPieces(config=config, data_dir=str(data_dir))
    out = epath.Path(b.data_dir)
    if (out / "dataset_info.json").exists() and not overwrite:
        raise builder_lib.BuildError(f"{out}: a dataset is already there; pass --overwrite to rebuild it")
    download_config = tfds.download.DownloadConfig(
        num_shards=num_shards or default_num_shards(num_files),
        try_download_gcs=False,
        download_mode=(
            tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
            if not overwrite
            else tfds.download.GenerateMode.FORCE_REDOWNLOAD
        ),
        **(dict(beam_runner=runner[0], beam_options=runner[1]) if runner else {}),
    )
    with _bounded_shuffle_buffer():
        try:
            b.download_and_prepare(download_config=download_config)
        except ValueError as e:
            empty = re.search(r"generated examples is 0 for split (\w+)", str(e))
            if not runner or not empty:
                raise
            raise builder_lib.BuildError(
                f"no piece fell in the {empty[1]} split, and Beam cannot write an empty split: build a "
                "corpus this small without --beam_runner"
            ) from None
    codec = codec_lib.load(out / builder_lib.CODEC_FILE)
    return out, builder_lib.summary_of(out / builder_lib.MANIFEST_FILE, codec)


# TFDS's writer holds a split's serialized examples in memory up to 1 GB before it
# spills them to disk in buckets (the same order either way): capped lower so that a
# build's memory does not grow with the corpus (docs/datasets.md).
SHUFFLE_BUFFER_BYTES = 16 << 20


@contextlib.contextmanager
def _bounded_shuffle_buffer() -> Iterator[None]:
    from tensorflow_datasets.core import shuffle

    before = shuffle.MAX_MEM_BUFFER_SIZE
    shuffle.MAX_MEM_BUFFER_SIZE = min(before, SHUFFLE_BUFFER_BYTES)
    try:
        yield
    finally:
        shuffle.MAX_MEM_BUFFER_SIZE = before


def _beam_runner(name: str, options: Sequence[str]):
    """(Beam runner, PipelineOptions) for --beam_runner and --beam_options.

    Raises:
      builder.BuildError: Beam is not installed, or does not know the runner or an option.
    """
    try:
        import apache_beam as beam
    except ImportError:
        raise builder_lib.BuildError(
            f"--beam_runner {name}: Apache Beam is not installed (pip install -e '.[beam]')"
        ) from None
    try:
        runner = beam.runners.create_runner(name)
    except ValueError:
        raise builder_lib.BuildError(
            f"--beam_runner {name}: not a runner Beam knows (DirectRunner, DataflowRunner, FlinkRunner, "
            "SparkRunner, ...)"
        ) from None
    except ImportError as e:
        raise builder_lib.BuildError(f"--beam_runner {name}: needs what is not installed ({e})") from None
    pipeline_options = beam.options.pipeline_options.PipelineOptions(list(options))
    said = io.StringIO()
    try:  # Beam parses its flags with argparse, which prints its usage and exits on a bad one
        with contextlib.redirect_stderr(said):
            known = pipeline_options.get_all_options(retain_unknown_options=False)
            given = pipeline_options.get_all_options(retain_unknown_options=True)
    except SystemExit:
        reason = said.getvalue().strip().splitlines()[-1].split("error: ", 1)[-1]
        raise builder_lib.BuildError(f"--beam_options {' '.join(options)!r}: {reason}") from None
    unknown = sorted(set(given) - set(known))
    if unknown:  # Beam would drop them with a warning: a typo in --temp_location would go unseen
        raise builder_lib.BuildError(
            f"--beam_options: not options Beam knows: {', '.join('--' + u for u in unknown)}"
        )
    return runner, pipeline_options


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
            raise cli.UsageError(f"--{flag} must be >= 1, got {f[flag].value}")
    remote = bool(f.midi_dir) and builder_lib.is_url(f.midi_dir)
    midi_dir = (f.midi_dir.rstrip("/") if remote else Path(f.midi_dir)) if f.midi_dir else None
    folder_name = str(midi_dir).rsplit("/", 1)[-1] if remote else midi_dir.name if midi_dir else ""
    name = f.name or (f.corpus if f.corpus else folder_name)
    if not name or not name.replace("_", "").isalnum():
        raise cli.UsageError(f"--name {name!r}: use letters, digits and underscores")
    t0 = time.perf_counter()
    kwargs = dict(
        name=name.lower(),
        workers=f.workers,
        num_shards=f.num_shards,
        overwrite=f.overwrite,
        codec_kwargs={"onset_bins": f.onset_bins, "min_count": f.min_count},
        validation_percent=f.validation_percent,
        test_percent=f.test_percent,
        beam_runner=f.beam_runner,
        beam_options=shlex.split(f.beam_options),
    )
    if f.beam_options and not f.beam_runner:
        raise cli.UsageError("--beam_options needs --beam_runner")
    if f.corpus:
        from data_pipeline import corpus

        cache = Path(f.cache_dir) if f.cache_dir else default_cache_dir()
        files, failures = corpus.prepare(cache, size=f.corpus_size, workers=f.workers)
        out, summary = build(f.data_dir, files=files, rejected_sources=failures, **kwargs)
    else:
        if not remote and not midi_dir.is_dir():
            raise cli.UsageError(f"--midi_dir {midi_dir}: not a directory")
        for genre in [] if remote else builder_lib.empty_genre_folders(midi_dir):
            print(f"warning: genre folder {midi_dir / genre} holds no MIDI files", file=sys.stderr)
        out, summary = build(f.data_dir, midi_dir=midi_dir, **kwargs)
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
    print(f"time {seconds:.1f} s ({summary['files_per_second']} files/s)")
    for line in midi_io.InternalReadError.report_lines(
        [(e["path"], e["reason"]) for e in summary["internal_errors"]]
    ):
        print(line, file=sys.stderr)
    print(f"codec: {out / builder_lib.CODEC_FILE}\nmanifest: {out / builder_lib.MANIFEST_FILE}")
    if builder_lib.is_url(out):  # a bucket: no rename to make a write atomic
        (out / "build.json").write_text(json.dumps(summary, indent=1))
    else:
        cli.atomic_write(out / "build.json", json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
