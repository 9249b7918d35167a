"""The work on one source file or piece, the same in the local and the Beam build:
finding MIDI files, reading one (its manifest row, its notes' statistics), quantizing
one, making its dataset example; and the build's names and rules (splits by content
hash, the files beside the dataset, the manifest's summary).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from etils import epath

from jaxmusic import codec as codec_lib
from jaxmusic import codec_fit, midi_io
from jaxmusic.errors import Error

SPLITS = ("train", "validation", "test")
UNKNOWN_GENRE = "unknown"
CODEC_FILE = "codec.json"
MANIFEST_FILE = "manifest.jsonl"
INSTRUMENTS_FILE = "instruments.json"  # per instrument: training notes, pseudo-notes, fallback share


class BuildError(Error):
    """A build that cannot start or finish: names the folder or setting and why."""


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
    include_drums: bool = False  # a codec with instruments reads drum tracks too


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


def label(path: str, root: str | None) -> str:
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


def read_source(job: ReadJob) -> tuple[dict, codec_fit.NoteStats | None]:
    """Reads one source: (its manifest row with its source index, its notes' statistics
    or None). A readable piece's notes go to `<job.spill>/<index>.npy` (None: the
    notes come back as row["notes_array"] instead, for Beam)."""
    try:
        data = _read_url(job.path)
    except Exception as e:  # any failure to fetch a remote file rejects that file alone
        sha1, result = "", midi_io.MidiError(job.path, f"cannot open: {e}")
    else:
        sha1, result = midi_io.read_hashed(job.path, reader=job.reader, data=data,
                                           include_drums=job.include_drums)  # fmt: skip
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
    return row, codec_fit.NoteStats().add(result.notes)


def quantize_piece(job: QuantizeJob) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2 on one spilled piece: its notes become their tuples (int16[n, 5], in the
    same file); returns the (cells, counts) of the tuples (empty unless job.count)."""
    path = Path(job.spill, f"{job.index}.npy")
    tuples = job.bins.quantize(np.load(path))
    np.save(path, tuples.astype(np.int16))
    if not job.count:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return codec_fit.tuple_cells(job.bins, tuples)


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


def write_instrument_report(data_dir: str | os.PathLike, codec: codec_lib.Codec, counts: np.ndarray) -> None:
    """INSTRUMENTS_FILE beside the dataset: `codec_fit.instrument_report` of the train tuples' counts."""
    report = codec_fit.instrument_report(codec, counts)
    epath.Path(data_dir, INSTRUMENTS_FILE).write_text(json.dumps(report, indent=1))


def summary_of(manifest_path: str | os.PathLike, codec: codec_lib.Codec) -> dict:
    """What a build found, counted from its manifest (read a line at a time), with the
    per-instrument report beside it (local builds)."""
    report = epath.Path(manifest_path).parent / INSTRUMENTS_FILE
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
        "instruments": codec.instruments.mode,
        **({"per_instrument": json.loads(report.read_text())} if report.exists() else {}),
    }
