"""The TFDS builder: a folder of genre subfolders of MIDI files -> pseudo-note pieces.

`MidiPieces` reads `DIR/<genre>/**/*.mid|*.midi|*.kar` (files directly in DIR get
genre `unknown`), in parallel, and writes one example per piece:

  ids:      int32[n] pseudo-note ids (the codec below)
  genre:    the genre folder's name
  genre_id: int32, the codec's id of that genre
  path:     the source file, relative to DIR
  sha1:     the source file's content hash

Order of work, chosen so that a rebuild gives identical splits, codec and ids:
1. each file's split comes from its content hash, before anything else
   (train / validation / test, default 90 / 5 / 5), so a piece never moves;
2. byte-identical files count once (the first by path; the rest are `duplicate`);
3. the codec is fitted on the train split only;
4. `codec.json` and `manifest.jsonl` (one line per file found) are written
   beside the dataset's own files, in the same folder.

Memory does not grow with the corpus: the build runs in three passes and holds
statistics, not pieces, in between.
- Pass 1 (worker processes): each file is read and hashed, its notes spilled to
  disk (`.spill/` inside TFDS's incomplete folder), its manifest row written as it
  comes; the main process merges the train pieces' `codec.NoteStats` (exact counts
  of velocities, durations and onset gaps).
- Pass 2 (worker processes): the bins are fitted from those statistics
  (`codec.fit_bins`), every piece's notes become their tuples, and the train
  tuples are counted for the vocabulary (`codec.with_vocabulary`).
- Pass 3: each piece's ids, from its tuples, go to TFDS's writer.
The codec equals `codec.fit` on all the train pieces at once, to the bit.
The per-file work is `data_pipeline.sources`; with `MidiPiecesConfig.beam` the same
functions run as an Apache Beam pipeline instead (`data_pipeline.beam_build`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from data_pipeline import sources
from data_pipeline.sources import CODEC_FILE, MANIFEST_FILE, SPLITS, Kept, QuantizeJob, ReadJob
from jaxmusic import codec as codec_lib
from jaxmusic import codec_fit


@dataclasses.dataclass
class MidiPiecesConfig(tfds.core.BuilderConfig):
    """What to build.

    Attributes:
      files: (path, genre) pairs to read (`find_sources` of a folder, or a corpus's).
      label_root: paths in the manifest and examples are relative to it.
      rejected_sources: (label, genre, reason) of inputs that failed before
        becoming MIDI files (the music21 corpus); they go in the manifest.
      validation_percent, test_percent: the share of pieces, by content hash.
      codec_kwargs: passed to `codec.fit` (bins, min_count, ...).
      reader: `midi_io.read`'s reader ("symusic", with miditoolkit as fallback).
      workers: processes that read files (None: every core).
      beam: build as an Apache Beam pipeline (`data_pipeline.beam_build`; the
        runner is the download config's).
    """

    # repr=False: TFDS logs the config, and a corpus has up to hundreds of thousands of files.
    files: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    label_root: str | None = None
    rejected_sources: tuple[tuple[str, str, str], ...] = dataclasses.field(default=(), repr=False)
    validation_percent: int = 5
    test_percent: int = 5
    codec_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    reader: str = "symusic"
    workers: int | None = None
    beam: bool = False


class MidiPieces(tfds.core.GeneratorBasedBuilder):
    """Pieces of MIDI music as pseudo-note ids, one example per piece."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "genre": tfds.features.Text(),
                    "genre_id": tfds.features.Tensor(shape=(), dtype=np.int32),
                    "path": tfds.features.Text(),
                    "sha1": tfds.features.Text(),
                }
            ),
            description="MIDI pieces as jaxmusic pseudo-note ids (see codec.json beside the data).",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config: MidiPiecesConfig = self.builder_config
        if config.beam:
            from data_pipeline import beam_build

            shares = (100 - config.validation_percent - config.test_percent, config.validation_percent,
                      config.test_percent)  # fmt: skip
            return beam_build.split_transforms(self._read_jobs(None), data_dir=str(self.data_dir),
                                               codec_kwargs=config.codec_kwargs, split_shares=shares,
                                               rejected_sources=config.rejected_sources)  # fmt: skip
        spill = self._spill_dir()
        stats, kept = self._read_all(spill)
        codec = self._fit_codec(stats, kept, spill)
        codec.save(Path(self.data_dir) / CODEC_FILE)
        return {
            split: self._generate_examples([k for k in kept if k.split == split], codec, spill)
            for split in SPLITS
            if any(k.split == split for k in kept)
        }

    def _download_and_prepare(self, dl_manager, download_config=None):
        try:
            super()._download_and_prepare(dl_manager, download_config=download_config)
        finally:
            shutil.rmtree(self._spill_dir(), ignore_errors=True)

    def _spill_dir(self) -> Path:
        """Where a build keeps each piece's notes between its passes: inside the
        dataset's incomplete folder (TFDS deletes it should the build fail)."""
        return Path(self.data_dir) / ".spill"

    def _read_all(self, spill: Path) -> tuple[codec_fit.NoteStats, list[Kept]]:
        """Pass 1: reads every source in parallel, writes the manifest row by row and
        each kept piece's notes to `spill`; returns (statistics of the train
        pieces' notes, the kept pieces in source order).

        Memory: the statistics (distinct durations and gaps) and a short record per
        kept piece, whatever the number of notes.
        """
        config: MidiPiecesConfig = self.builder_config
        spill.mkdir(parents=True, exist_ok=True)
        jobs = self._read_jobs(spill)
        stats, kept, first_of = codec_fit.NoteStats(), [], {}
        with open(Path(self.data_dir) / MANIFEST_FILE, "w") as manifest:
            results = sources.ordered_map(sources.read_source, jobs, config.workers)
            for row, piece_stats in tqdm.tqdm(results, total=len(jobs), desc="read MIDI", unit="file"):
                if row["status"] == "ok" and row["sha1"] in first_of:
                    row.update(sources.duplicate_of(first_of[row["sha1"]]))
                    Path(spill, f"{row['index']}.npy").unlink(missing_ok=True)
                elif row["status"] == "ok":
                    first_of[row["sha1"]] = row["path"]
                    kept.append(Kept(row["index"], row["sha1"], row["split"], row["genre"], row["path"]))
                    if row["split"] == "train":
                        stats.merge(piece_stats)
                row.pop("index")
                manifest.write(json.dumps(row) + "\n")
            for source in config.rejected_sources:
                manifest.write(json.dumps(sources.rejected_source_row(*source)) + "\n")
        return stats, kept

    def _read_jobs(self, spill: Path | None) -> list[ReadJob]:
        config: MidiPiecesConfig = self.builder_config
        root = config.label_root
        split_percents = (config.validation_percent, config.test_percent)
        spill_dir = None if spill is None else str(spill)
        drums = config.codec_kwargs.get("instruments", "merged") != "merged"
        at = (spill_dir, config.reader, *split_percents, drums)
        return [ReadJob(i, p, g, sources.label(p, root), *at) for i, (p, g) in enumerate(config.files)]

    def _fit_codec(self, stats: codec_fit.NoteStats, kept: list[Kept], spill: Path) -> codec_lib.Codec:
        """The codec of the train pieces (`codec.fit`'s steps): bins from the statistics,
        then pass 2, which quantizes every kept piece in parallel (its tuples replace
        its notes in `spill`) and counts the train pieces' tuples."""
        config: MidiPiecesConfig = self.builder_config
        if not any(k.split == "train" for k in kept):
            raise sources.no_train_piece(len(kept))
        genres = sorted({k.genre for k in kept})
        bins = codec_fit.fit_bins(stats, genres=genres, **config.codec_kwargs)
        counts = np.zeros(codec_fit.grid_size(bins), np.int64)
        jobs = [QuantizeJob(str(spill), k.index, k.split == "train", bins) for k in kept]
        quantized = sources.ordered_map(sources.quantize_piece, jobs, config.workers)
        for cells, n in tqdm.tqdm(quantized, total=len(jobs), desc="quantize", unit="piece"):
            np.add.at(counts, cells, n)
        codec = codec_fit.with_vocabulary(bins, counts)
        sources.write_instrument_report(self.data_dir, codec, counts)
        return codec

    def _generate_examples(self, kept: list[Kept], codec: codec_lib.Codec, spill: Path):
        """Pass 3: each piece's ids from its spilled tuples (the spill file then goes)."""
        for k in kept:
            path = spill / f"{k.index}.npy"
            yield k.sha1, sources.example(codec, np.load(path), k.genre, k.path, k.sha1)
            path.unlink()
