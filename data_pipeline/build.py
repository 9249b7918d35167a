"""CLI: build a jaxmusic dataset from a MIDI folder or the bundled music21 corpus.

  python -m data_pipeline.build --midi_dir DIR --data_dir OUT [--name N] [--workers K]
  python -m data_pipeline.build --corpus music21 --data_dir OUT [--corpus_size full]

Writes the TFDS dataset to OUT/midi_pieces/<name>/<version>/, with `codec.json`
and `manifest.jsonl` beside its files, and prints what it found. Point a training
config's `data_dir` at OUT (or at the printed dataset folder).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from data_pipeline import builder as builder_lib
from jaxmusic import codec as codec_lib
from jaxmusic import midi_io


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_pipeline.build", description=__doc__.split("\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--midi_dir", type=Path, help="a folder of genre subfolders of MIDI files")
    src.add_argument("--corpus", choices=("music21",), help="the bundled corpus")
    parser.add_argument("--data_dir", type=Path, required=True, help="where datasets are written")
    parser.add_argument("--name", help="the dataset's name (default: the folder's name, or the corpus)")
    parser.add_argument("--corpus_size", choices=("small", "full"), default="small")
    parser.add_argument("--cache_dir", type=Path, default=None, help="converted corpus cache")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    parser.add_argument(
        "--num_shards", type=int, default=None, help="shards a split (default: a power of two)"
    )
    parser.add_argument("--validation_percent", type=int, default=5)
    parser.add_argument("--test_percent", type=int, default=5)
    parser.add_argument("--onset_bins", type=int, default=8)
    parser.add_argument("--min_count", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true", help="rebuild a dataset that exists")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    for flag in ("workers", "num_shards"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            return fail(f"--{flag} must be >= 1, got {value}")
    name = args.name or (args.corpus if args.corpus else args.midi_dir.name if args.midi_dir else "")
    if not name or not name.replace("_", "").isalnum():
        return fail(f"--name {name!r}: use letters, digits and underscores")
    t0 = time.perf_counter()
    try:
        kwargs = dict(
            name=name.lower(),
            workers=args.workers,
            num_shards=args.num_shards,
            overwrite=args.overwrite,
            codec_kwargs={"onset_bins": args.onset_bins, "min_count": args.min_count},
            validation_percent=args.validation_percent,
            test_percent=args.test_percent,
        )
        if args.corpus:
            from data_pipeline import corpus

            files, failures = corpus.prepare(
                args.cache_dir or default_cache_dir(), size=args.corpus_size, workers=args.workers
            )
            out, summary = build(args.data_dir, files=files, rejected_sources=failures, **kwargs)
        else:
            if not args.midi_dir.is_dir():
                return fail(f"--midi_dir {args.midi_dir}: not a directory")
            for genre in builder_lib.empty_genre_folders(args.midi_dir):
                print(f"warning: genre folder {args.midi_dir / genre} holds no MIDI files", file=sys.stderr)
            out, summary = build(args.data_dir, midi_dir=args.midi_dir, **kwargs)
    except (builder_lib.BuildError, codec_lib.CodecError) as e:
        return fail(str(e))
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
    (out / "build.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
