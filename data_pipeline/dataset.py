"""Building a jaxmusic dataset (the library of `python -m data_pipeline.build`): a MIDI
folder, a list of files or the bundled corpus -> the TFDS dataset with `codec.json` and
`manifest.jsonl` beside its files, locally in worker processes or as an Apache Beam
pipeline (`builder.MidiPieces`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from etils import epath

from data_pipeline import builder, sources
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

    runner = beam_runner_of(beam_runner, beam_options) if beam_runner else None
    config = _config(name, midi_dir, files, rejected_sources, workers, codec_kwargs, validation_percent,
                     test_percent, beam=runner is not None)  # fmt: skip
    if sources.is_url(data_dir) and not runner:
        raise sources.BuildError(
            f"data_dir {data_dir}: the local build writes to a local folder (it spills pieces beside "
            "the dataset); build into a bucket with a Beam runner, or into a mounted folder"
        )
    b = builder.MidiPieces(config=config, data_dir=str(data_dir))
    out = epath.Path(b.data_dir)
    if (out / "dataset_info.json").exists() and not overwrite:
        raise sources.BuildError(f"{out}: a dataset is already there; build with overwrite to replace it")
    download_config = tfds.download.DownloadConfig(
        num_shards=num_shards or default_num_shards(len(config.files)),
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
            raise sources.BuildError(
                f"no piece fell in the {empty[1]} split, and Beam cannot write an empty split: build a "
                "corpus this small without a Beam runner"
            ) from None
    codec = codec_lib.load(out / sources.CODEC_FILE)
    return out, sources.summary_of(out / sources.MANIFEST_FILE, codec)


def _config(name, midi_dir, files, rejected_sources, workers, codec_kwargs, validation_percent, test_percent,
            *, beam: bool) -> builder.MidiPiecesConfig:  # fmt: skip
    """The builder's config of `build`'s arguments, checked."""
    if (midi_dir is None) == (files is None):
        raise sources.BuildError("give exactly one of midi_dir and files")
    if midi_dir is not None:
        files = sources.find_sources(midi_dir)
    if not files:
        raise sources.BuildError("no MIDI files to build from")
    if not 0 <= validation_percent <= 100 or not 0 <= test_percent <= 100 - validation_percent:
        raise sources.BuildError(
            f"split percents must leave a train share: validation {validation_percent}, test {test_percent}"
        )
    return builder.MidiPiecesConfig(
        name=name,
        # Path objects take hundreds of bytes a file: the config keeps the paths as text.
        files=tuple((str(p), g) for p, g in files),
        label_root=str(midi_dir) if midi_dir is not None else None,
        rejected_sources=tuple(rejected_sources),
        validation_percent=validation_percent,
        test_percent=test_percent,
        codec_kwargs=dict(codec_kwargs or {}),
        workers=workers,
        beam=beam,
    )


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


def beam_runner_of(name: str, options: Sequence[str]):
    """(Beam runner, PipelineOptions) of a runner's name and Beam's pipeline flags.

    Raises:
      builder.BuildError: Beam is not installed, or does not know the runner or an option.
    """
    try:
        import apache_beam as beam
    except ImportError:
        raise sources.BuildError(
            f"beam_runner {name}: Apache Beam is not installed (pip install -e '.[beam]')"
        ) from None
    try:
        runner = beam.runners.create_runner(name)
    except ValueError:
        raise sources.BuildError(
            f"beam_runner {name}: not a runner Beam knows (DirectRunner, DataflowRunner, FlinkRunner, "
            "SparkRunner, ...)"
        ) from None
    except ImportError as e:
        raise sources.BuildError(f"beam_runner {name}: needs what is not installed ({e})") from None
    pipeline_options = beam.options.pipeline_options.PipelineOptions(list(options))
    said = io.StringIO()
    try:  # Beam parses its flags with argparse, which prints its usage and exits on a bad one
        with contextlib.redirect_stderr(said):
            known = pipeline_options.get_all_options(retain_unknown_options=False)
            given = pipeline_options.get_all_options(retain_unknown_options=True)
    except SystemExit:
        reason = said.getvalue().strip().splitlines()[-1].split("error: ", 1)[-1]
        raise sources.BuildError(f"beam_options {' '.join(options)!r}: {reason}") from None
    unknown = sorted(set(given) - set(known))
    if unknown:  # Beam would drop them with a warning: a typo in --temp_location would go unseen
        raise sources.BuildError(
            f"beam_options: not options Beam knows: {', '.join('--' + u for u in unknown)}"
        )
    return runner, pipeline_options
