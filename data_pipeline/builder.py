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
With `MidiPiecesConfig.beam` the same per-file functions run as an Apache Beam
pipeline instead (`data_pipeline.beam_build`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from etils import epath

from jaxmusic import codec as codec_lib
from jaxmusic import midi_io
from jaxmusic.cli import Error

SPLITS = ("train", "validation", "test")
UNKNOWN_GENRE = "unknown"
CODEC_FILE = "codec.json"
MANIFEST_FILE = "manifest.jsonl"


class BuildError(Error):
    """A build that cannot start or finish: names the folder or setting and why."""


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


def split_of(sha1: str, validation_percent: int, test_percent: int) -> str:
    """The split of a piece, from its content hash alone."""
    bucket = int(sha1[:8], 16) % 100
    if bucket < validation_percent:
        return "validation"
    if bucket < validation_percent + test_percent:
        return "test"
    return "train"


def is_url(path: str | os.PathLike) -> bool:
    """A path of a remote file system (gs://, s3://, ...), read through tf.io.gfile."""
    return "://" in str(path)


def find_sources(midi_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, genre) of every MIDI file under midi_dir (a folder, or a bucket's URL),
    sorted by path; genre = first subfolder.

    Raises:
      BuildError: midi_dir is not a folder, or holds no MIDI files.
    """
    if is_url(midi_dir):
        root = str(midi_dir).rstrip("/")
        relative = _find_midi_urls(root)
        files = [f"{root}/{r}" for r in relative]
    else:
        root = Path(midi_dir)
        if not root.is_dir():
            raise BuildError(f"{midi_dir}: not a directory")
        found = midi_io.find_midi_files(root)
        files, relative = [str(p) for p in found], [p.relative_to(root).as_posix() for p in found]
    if not files:
        raise BuildError(f"{midi_dir}: no MIDI files (*.mid, *.midi, *.kar) in it or its subfolders")
    return [
        (path, r.split("/")[0] if "/" in r else UNKNOWN_GENRE)
        for path, r in zip(files, relative, strict=True)
    ]


def _find_midi_urls(root: str) -> list[str]:
    """Paths, relative to root, of the MIDI files under a bucket's folder, sorted."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(root):
        raise BuildError(f"{root}: not a directory")
    found = []
    for folder, _, names in tf.io.gfile.walk(root):
        inside = folder.rstrip("/")[len(root) :].strip("/")
        found += [
            f"{inside}/{n}" if inside else n for n in names if Path(n).suffix.lower() in midi_io.MIDI_SUFFIXES
        ]
    return sorted(found)


def empty_genre_folders(midi_dir: str | os.PathLike) -> list[str]:
    """Subfolders of midi_dir without a MIDI file (a likely mistake worth a warning)."""
    midi_dir = Path(midi_dir)
    return sorted(p.name for p in midi_dir.iterdir() if p.is_dir() and not midi_io.find_midi_files(p))


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

    def _read_all(self, spill: Path) -> tuple[codec_lib.NoteStats, list[Kept]]:
        """Pass 1: reads every source in parallel, writes the manifest row by row and
        each kept piece's notes to `spill`; returns (statistics of the train
        pieces' notes, the kept pieces in source order).

        Memory: the statistics (distinct durations and gaps) and a short record per
        kept piece, whatever the number of notes.
        """
        config: MidiPiecesConfig = self.builder_config
        spill.mkdir(parents=True, exist_ok=True)
        jobs = self._read_jobs(spill)
        stats, kept, first_of = codec_lib.NoteStats(), [], {}
        with open(Path(self.data_dir) / MANIFEST_FILE, "w") as manifest:
            results = ordered_map(read_source, jobs, config.workers)
            for row, piece_stats in tqdm.tqdm(results, total=len(jobs), desc="read MIDI", unit="file"):
                if row["status"] == "ok" and row["sha1"] in first_of:
                    row.update(duplicate_of(first_of[row["sha1"]]))
                    Path(spill, f"{row['index']}.npy").unlink(missing_ok=True)
                elif row["status"] == "ok":
                    first_of[row["sha1"]] = row["path"]
                    kept.append(Kept(row["index"], row["sha1"], row["split"], row["genre"], row["path"]))
                    if row["split"] == "train":
                        stats.merge(piece_stats)
                row.pop("index")
                manifest.write(json.dumps(row) + "\n")
            for source in config.rejected_sources:
                manifest.write(json.dumps(rejected_source_row(*source)) + "\n")
        return stats, kept

    def _read_jobs(self, spill: Path | None) -> list[ReadJob]:
        config: MidiPiecesConfig = self.builder_config
        root = config.label_root
        split_percents = (config.validation_percent, config.test_percent)
        spill_dir = None if spill is None else str(spill)
        return [
            ReadJob(i, path, genre, _label(path, root), spill_dir, config.reader, *split_percents)
            for i, (path, genre) in enumerate(config.files)
        ]

    def _fit_codec(self, stats: codec_lib.NoteStats, kept: list[Kept], spill: Path) -> codec_lib.Codec:
        """The codec of the train pieces (`codec.fit`'s steps): bins from the statistics,
        then pass 2, which quantizes every kept piece in parallel (its tuples replace
        its notes in `spill`) and counts the train pieces' tuples."""
        config: MidiPiecesConfig = self.builder_config
        if not any(k.split == "train" for k in kept):
            raise no_train_piece(len(kept))
        genres = sorted({k.genre for k in kept})
        bins = codec_lib.fit_bins(stats, genres=genres, **config.codec_kwargs)
        counts = np.zeros(bins.grid_size, np.int64)
        jobs = [QuantizeJob(str(spill), k.index, k.split == "train", bins) for k in kept]
        for cells, n in tqdm.tqdm(ordered_map(quantize_piece, jobs, config.workers), total=len(jobs),
                                  desc="quantize", unit="piece"):  # fmt: skip
            np.add.at(counts, cells, n)
        return codec_lib.with_vocabulary(bins, counts)

    def _generate_examples(self, kept: list[Kept], codec: codec_lib.Codec, spill: Path):
        """Pass 3: each piece's ids from its spilled tuples (the spill file then goes)."""
        for k in kept:
            path = spill / f"{k.index}.npy"
            yield k.sha1, example(codec, np.load(path), k.genre, k.path, k.sha1)
            path.unlink()


# ----------------------------------------------------------------------------
# The work on one file or piece: the same functions in the local and the Beam build.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ReadJob:
    """One source to read (pass 1): its index in the source order, where it is, its
    genre and manifest label, where its notes go, and how it is read and split."""

    index: int
    path: str
    genre: str
    label: str
    spill: str | None
    reader: str
    validation_percent: int
    test_percent: int


@dataclasses.dataclass(frozen=True, slots=True)
class Kept:
    """A readable, first-of-its-bytes piece: what pass 2 and 3 need of it."""

    index: int
    sha1: str
    split: str
    genre: str
    path: str


@dataclasses.dataclass(frozen=True, slots=True)
class QuantizeJob:
    spill: str
    index: int
    count: bool  # a train piece: its tuples are counted for the vocabulary
    bins: codec_lib.Codec


def _label(path: str, root: str | None) -> str:
    """A source's manifest path: relative to the corpus folder when inside it."""
    if root is None:
        return path
    if is_url(root):
        prefix = root.rstrip("/") + "/"
        return path[len(prefix) :] if path.startswith(prefix) else path
    return str(Path(path).relative_to(root)) if Path(path).is_relative_to(root) else path


def _read_url(path: str) -> bytes | None:
    """A remote file's bytes (None for a local path: `midi_io` reads it itself)."""
    if not is_url(path):
        return None
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def read_source(job: ReadJob) -> tuple[dict, codec_lib.NoteStats | None]:
    """Reads one source: (its manifest row with its source index, its notes' statistics
    or None). A readable piece's notes go to `<job.spill>/<index>.npy` (None: the
    notes come back as row["notes_array"] instead, for Beam)."""
    try:
        data = _read_url(job.path)
    except Exception as e:  # any failure to fetch a remote file rejects that file alone
        sha1, result = "", midi_io.MidiError(job.path, f"cannot open: {e}")
    else:
        sha1, result = midi_io.read_hashed(job.path, reader=job.reader, data=data)
    row = {
        "index": job.index,
        "path": job.label,
        "sha1": sha1,
        "genre": job.genre,
        "split": split_of(sha1, job.validation_percent, job.test_percent) if sha1 else "",
        "status": "ok",
        "reason": "",
        "notes": 0,
    }
    if isinstance(result, midi_io.MidiError):
        row.update(status="rejected", reason=result.reason)
        return row, None
    row["notes"] = int(result.notes.shape[0])
    if result.recovered:
        row["reason"] = "recovered: " + "; ".join(result.recovered)
    if job.spill is None:
        row["notes_array"] = result.notes
    else:
        np.save(Path(job.spill, f"{job.index}.npy"), result.notes)
    return row, codec_lib.NoteStats().add(result.notes)


def quantize_piece(job: QuantizeJob) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2 on one spilled piece: its notes become their tuples (int16[n, 4], in the
    same file); returns the (cells, counts) of the tuples (empty unless job.count)."""
    path = Path(job.spill, f"{job.index}.npy")
    tuples = job.bins.quantize(np.load(path))
    np.save(path, tuples.astype(np.int16))
    if not job.count:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return job.bins.tuple_cells(tuples)


def duplicate_of(first: str) -> dict:
    """What a manifest row of a file with the same bytes as `first` (its label) changes."""
    return {"status": "duplicate", "reason": f"same bytes as {first}", "notes": 0}


def rejected_source_row(label: str, genre: str, reason: str) -> dict:
    """The manifest row of an input rejected before the build (`rejected_sources`)."""
    return {"path": label, "sha1": "", "genre": genre, "split": "", "status": "rejected", "reason": reason,
            "notes": 0}  # fmt: skip


def no_train_piece(readable: int) -> BuildError:
    return BuildError(f"no readable piece fell in the train split ({readable} readable in all)")


def example(codec: codec_lib.Codec, tuples: np.ndarray, genre: str, path: str, sha1: str) -> dict:
    """A dataset example from a piece's tuples (`Codec.quantize`'s rows)."""
    return {
        "ids": codec.ids_of(tuples).astype(np.int32),
        "genre": genre,
        "genre_id": np.int32(codec.genre_id(genre)),
        "path": path,
        "sha1": sha1,
    }


def ordered_map(fn, jobs: list, workers: int | None, chunksize: int = 16) -> Iterator:
    """fn over jobs in worker processes, results in job order, with at most a few
    chunks per worker in flight (so results never pile up in memory)."""
    workers = workers or os.cpu_count() or 1
    chunks = [jobs[i : i + chunksize] for i in range(0, len(jobs), chunksize)]
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            pending.append(pool.submit(_run_chunk, fn, chunk))
            if len(pending) >= 3 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _run_chunk(fn, chunk: list) -> list:
    return [fn(job) for job in chunk]


def summary_of(manifest_path: str | os.PathLike, codec: codec_lib.Codec) -> dict:
    """What a build found, counted from its manifest (read a line at a time)."""
    count = dict.fromkeys(("ok", "rejected", "duplicate"), 0)
    pieces = dict.fromkeys(SPLITS, 0)
    internal, notes, files = [], 0, 0
    with epath.Path(manifest_path).open() as f:
        for line in f:
            r = json.loads(line)
            files += 1
            count[r["status"]] += 1
            if r["status"] == "ok":
                pieces[r["split"]] += 1
                notes += r["notes"]
            if r["reason"].startswith(midi_io.InternalReadError.PREFIX):
                internal.append({"path": r["path"], "reason": r["reason"]})
    return {
        "files_found": files,
        **count,
        # Rejected by a bug rather than by the file: counted apart so that it is seen.
        "internal_errors": internal,
        "pieces": pieces,
        "notes": notes,
        "vocab_size": codec.vocab_size,
        "genres": list(codec.genres),
        "codec_fingerprint": codec.fingerprint,
    }
