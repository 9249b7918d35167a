"""The dataset build as an Apache Beam pipeline, through TFDS's Beam support.

`python -m data_pipeline.build ... --beam_runner R` runs the build of
`data_pipeline.builder` as one Beam pipeline, for corpora beyond one machine
(DataflowRunner, FlinkRunner, SparkRunner) or on every core of this one
(DirectRunner). It does the same work on each file with the same functions
(`sources.read_source`, `codec.NoteStats`, `codec.fit_bins`, `Codec.quantize`,
`codec.with_vocabulary`, `sources.example`), so it writes the same codec, manifest
and examples as the local build:

  sources -> read (each file: its manifest row, notes and note statistics)
          -> group by content hash: the first by source order is kept, the rest
             are duplicates
          -> the train pieces' statistics combined -> the codec's bins
          -> the train pieces' tuples counted with the bins -> the vocabulary
          -> per split: each kept piece encoded with the codec (a side input)
  and manifest.jsonl and codec.json written beside the dataset.

Only this module imports apache_beam (the `beam` extra).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import apache_beam as beam
import numpy as np
from etils import epath

from data_pipeline import sources
from jaxmusic import codec as codec_lib
from jaxmusic import codec_fit
from jaxmusic.errors import Error


def split_transforms(
    jobs: list[sources.ReadJob],
    *,
    data_dir: str,
    codec_kwargs: dict[str, Any],
    split_shares: tuple[int, int, int] = (90, 5, 5),
    rejected_sources: tuple[tuple[str, str, str], ...] = (),
) -> dict[str, beam.PTransform]:
    """One PTransform per split (what `_split_generators` returns to TFDS), over
    stages that read and fit once per pipeline, whichever split's transform TFDS
    expands first.

    Args:
      jobs: the sources, with spill None (the notes travel in the pipeline).
      data_dir: the dataset's folder being written (local or a bucket).
      codec_kwargs: `codec.fit_bins`'s settings.
      split_shares: percent of train, validation and test: a split of 0 is not
        written (Beam cannot write an empty split; the local build leaves out one
        that no piece fell in).
      rejected_sources: manifest rows of inputs rejected before the build.
    """
    quiet = logging.getLogger("apache_beam.runners.common")  # where Beam logs a failed step
    if not any(isinstance(f, _WithoutBadInputTraceback) for f in quiet.filters):
        quiet.addFilter(_WithoutBadInputTraceback())
    shared: dict[int, tuple[beam.PCollection, beam.PCollection]] = {}

    def stages(pipeline: beam.Pipeline) -> tuple[beam.PCollection, beam.PCollection]:
        if id(pipeline) not in shared:
            shared[id(pipeline)] = _shared_stages(pipeline, jobs, data_dir, codec_kwargs, rejected_sources)
        return shared[id(pipeline)]

    splits = [s for s, share in zip(sources.SPLITS, split_shares, strict=True) if share > 0]
    return {split: _Split(split, stages) for split in splits}


class _Split(beam.PTransform):
    """(sha1, example) of one split's kept pieces."""

    def __init__(self, split: str, stages):
        super().__init__()
        self._split, self._stages = split, stages

    def expand(self, pbegin):
        kept, codec = self._stages(pbegin.pipeline)
        return (
            kept
            | "Select" >> beam.Filter(lambda piece, split: piece[0]["split"] == split, self._split)
            | "Encode" >> beam.Map(_encode, codec=beam.pvalue.AsSingleton(codec))
        )


def _shared_stages(pipeline, jobs, data_dir, codec_kwargs, rejected_sources):
    """(kept pieces as (row, stats), the codec as a one-element PCollection)."""
    read = (
        pipeline
        | "Sources" >> beam.Create(jobs)
        | "Spread" >> beam.Reshuffle()  # so that reading is spread over the workers
        | "Read" >> beam.Map(sources.read_source)
    )
    by_hash = (
        read
        | "Readable" >> beam.Filter(lambda piece: piece[0]["status"] == "ok")
        | "KeyByHash" >> beam.Map(lambda piece: (piece[0]["sha1"], piece))
        | "GroupByHash" >> beam.GroupByKey()
    )
    kept = by_hash | "FirstOfHash" >> beam.Map(lambda kv: min(kv[1], key=lambda piece: piece[0]["index"]))
    rows = (
        (
            kept | "KeptRows" >> beam.Map(lambda piece: _row(piece[0])),
            by_hash | "DuplicateRows" >> beam.FlatMap(_duplicates),
            read
            | "Unreadable" >> beam.Filter(lambda piece: piece[0]["status"] != "ok")
            | "RejectedRows" >> beam.Map(lambda piece: piece[0]),
        )
        | "AllRows" >> beam.Flatten()
        | "RowList" >> beam.combiners.ToList()
    )
    _ = rows | "WriteManifest" >> beam.Map(
        _write_manifest, data_dir=data_dir, rejected_sources=rejected_sources
    )
    fit_input = kept | "GenreAndStats" >> beam.Map(
        lambda piece: (piece[0]["genre"], piece[1] if piece[0]["split"] == "train" else None)
    )
    bins = (
        fit_input
        | "CombineStats" >> beam.CombineGlobally(_StatsCombine())
        | "FitBins" >> beam.Map(_fit_bins, codec_kwargs=codec_kwargs)
    )
    counts = (
        kept
        | "Train" >> beam.Filter(lambda piece: piece[0]["split"] == "train")
        | "CountTuples" >> beam.Map(_tuple_counts, bins=beam.pvalue.AsSingleton(bins))
        | "CombineCounts" >> beam.CombineGlobally(_CountsCombine())
    )
    codec = counts | "Vocabulary" >> beam.Map(_with_vocabulary, bins=beam.pvalue.AsSingleton(bins))
    _ = codec | "WriteCodec" >> beam.Map(_write_codec, data_dir=data_dir)
    _ = counts | "WriteInstruments" >> beam.Map(_write_instruments, codec=beam.pvalue.AsSingleton(codec),
                                                data_dir=data_dir)  # fmt: skip
    return kept, codec


def _row(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "notes_array"}


def _duplicates(kv) -> list[dict]:
    pieces = sorted(kv[1], key=lambda piece: piece[0]["index"])
    first = pieces[0][0]["path"]
    return [{**_row(p[0]), **sources.duplicate_of(first)} for p in pieces[1:]]


def _write_manifest(rows: list[dict], data_dir: str, rejected_sources) -> None:
    """manifest.jsonl in source order, as the local build writes it."""
    lines = []
    for row in sorted(rows, key=lambda r: r["index"]):
        row = dict(row)
        row.pop("index")
        lines.append(json.dumps(row))
    lines += [json.dumps(sources.rejected_source_row(*source)) for source in rejected_sources]
    epath.Path(data_dir, sources.MANIFEST_FILE).write_text("".join(line + "\n" for line in lines))


class _StatsCombine(beam.CombineFn):
    """(genres of the kept pieces, how many, `NoteStats` of the train pieces)."""

    def create_accumulator(self):
        return set(), 0, codec_fit.NoteStats()

    def add_input(self, acc, element):
        genre, stats = element
        if stats is not None:
            acc[2].merge(stats)
        return acc[0] | {genre}, acc[1] + 1, acc[2]

    def merge_accumulators(self, accumulators):
        genres, kept, stats = set(), 0, codec_fit.NoteStats()
        for g, k, s in accumulators:
            genres, kept = genres | g, kept + k
            stats.merge(s)
        return genres, kept, stats

    def extract_output(self, acc):
        return acc


def _fit_bins(acc, codec_kwargs: dict) -> codec_lib.Codec:
    genres, kept, stats = acc
    if not stats.notes:
        raise sources.no_train_piece(kept)
    return codec_fit.fit_bins(stats, genres=sorted(genres), **codec_kwargs)


class _WithoutBadInputTraceback(logging.Filter):
    """Drops Beam's log of a failed step when its error is bad input (a `cli.Error`):
    the build reports that as its one line, and a traceback would bury it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Error))


def _tuple_counts(piece, bins: codec_lib.Codec) -> dict[int, int]:
    cells, counts = codec_fit.tuple_cells(bins, bins.quantize(piece[0]["notes_array"]))
    return dict(zip(cells.tolist(), counts.tolist(), strict=True))


class _CountsCombine(beam.CombineFn):
    """Tuple counts, sparse ({grid cell: count})."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, counts):
        for cell, n in counts.items():
            acc[cell] = acc.get(cell, 0) + n
        return acc

    def merge_accumulators(self, accumulators):
        out: dict[int, int] = {}
        for acc in accumulators:
            self.add_input(out, acc)
        return out

    def extract_output(self, acc):
        return acc


def _dense(counts: dict[int, int], bins: codec_lib.Codec) -> np.ndarray:
    dense = np.zeros(codec_fit.grid_size(bins), np.int64)
    dense[list(counts)] = list(counts.values())
    return dense


def _with_vocabulary(counts: dict[int, int], bins: codec_lib.Codec) -> codec_lib.Codec:
    return codec_fit.with_vocabulary(bins, _dense(counts, bins))


def _write_instruments(counts: dict[int, int], codec: codec_lib.Codec, data_dir: str) -> None:
    sources.write_instrument_report(data_dir, codec, _dense(counts, codec))


def _write_codec(codec: codec_lib.Codec, data_dir: str) -> None:
    epath.Path(data_dir, sources.CODEC_FILE).write_text(codec.to_json())


def _encode(piece, codec: codec_lib.Codec) -> tuple[str, dict]:
    row = piece[0]
    tuples = codec.quantize(row["notes_array"])
    return row["sha1"], sources.example(codec, tuples, row["genre"], row["path"], row["sha1"])
