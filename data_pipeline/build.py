"""CLI: build a jaxmusic dataset from a MIDI folder or the bundled music21 corpus.

  python -m data_pipeline.build --midi_dir DIR --data_dir OUT [--name N] [--workers K]
  python -m data_pipeline.build --corpus music21 --data_dir OUT [--corpus_size full]

Writes the TFDS dataset to OUT/midi_pieces/<name>/<version>/, with `codec.json`
and `manifest.jsonl` beside its files, and prints what it found. Point a training
config's `data_dir` at OUT (or at the printed dataset folder).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from data_pipeline import builder as builder_lib
from jaxmusic import cli, midi_io


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
) -> tuple[Path, dict]:
    """Builds the dataset; returns (its folder, a summary of what was found).

    Exactly one of `midi_dir` (a folder of genre folders) and `files`
    ((path, genre) pairs) names the input.

    Raises:
      builder.BuildError: bad input (no MIDI files, a dataset already there, ...).
    """
    import tensorflow_datasets as tfds

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
    config = builder_lib.MidiPiecesConfig(
        name=name,
        files=tuple((str(p), g) for p, g in files),
        label_root=str(midi_dir) if midi_dir is not None else None,
        rejected_sources=tuple(rejected_sources),
        validation_percent=validation_percent,
        test_percent=test_percent,
        codec_kwargs=dict(codec_kwargs or {}),
        workers=workers,
    )
    b = builder_lib.MidiPieces(config=config, data_dir=str(data_dir))
    out = Path(b.data_dir)
    if (out / "dataset_info.json").exists() and not overwrite:
        raise builder_lib.BuildError(f"{out}: a dataset is already there; pass --overwrite to rebuild it")
    download_config = tfds.download.DownloadConfig(
        num_shards=num_shards or default_num_shards(len(files)),
        try_download_gcs=False,
        download_mode=(
            tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
            if not overwrite
            else tfds.download.GenerateMode.FORCE_REDOWNLOAD
        ),
    )
    b.download_and_prepare(download_config=download_config)
    return out, b.build_summary


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
    flags.mark_flag_as_required("data_dir", flag_values=fv)
    flags.mark_flags_as_mutual_exclusive(["midi_dir", "corpus"], required=True, flag_values=fv)


@cli.entry_point
def main(argv: list[str]) -> int:
    f, _ = cli.parse_flags(argv, _define_flags, prog="python -m data_pipeline.build", doc=__doc__)
    for flag in ("workers", "num_shards"):
        if f[flag].value is not None and f[flag].value < 1:
            raise cli.UsageError(f"--{flag} must be >= 1, got {f[flag].value}")
    midi_dir = Path(f.midi_dir) if f.midi_dir else None
    name = f.name or (f.corpus if f.corpus else midi_dir.name if midi_dir else "")
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
    )
    if f.corpus:
        from data_pipeline import corpus

        cache = Path(f.cache_dir) if f.cache_dir else default_cache_dir()
        files, failures = corpus.prepare(cache, size=f.corpus_size, workers=f.workers)
        out, summary = build(f.data_dir, files=files, rejected_sources=failures, **kwargs)
    else:
        if not midi_dir.is_dir():
            raise cli.UsageError(f"--midi_dir {midi_dir}: not a directory")
        for genre in builder_lib.empty_genre_folders(midi_dir):
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
    cli.atomic_write(out / "build.json", json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
