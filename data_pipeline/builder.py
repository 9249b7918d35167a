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
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
import tqdm

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
    """

    files: tuple[tuple[str, str], ...] = ()
    label_root: str | None = None
    rejected_sources: tuple[tuple[str, str, str], ...] = ()
    validation_percent: int = 5
    test_percent: int = 5
    codec_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    reader: str = "symusic"
    workers: int | None = None


def split_of(sha1: str, validation_percent: int, test_percent: int) -> str:
    """The split of a piece, from its content hash alone."""
    bucket = int(sha1[:8], 16) % 100
    if bucket < validation_percent:
        return "validation"
    if bucket < validation_percent + test_percent:
        return "test"
    return "train"


def find_sources(midi_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """(path, genre) of every MIDI file under midi_dir; genre = first subfolder.

    Raises:
      BuildError: midi_dir is not a folder, or holds no MIDI files.
    """
    midi_dir = Path(midi_dir)
    if not midi_dir.is_dir():
        raise BuildError(f"{midi_dir}: not a directory")
    files = midi_io.find_midi_files(midi_dir)
    if not files:
        raise BuildError(f"{midi_dir}: no MIDI files (*.mid, *.midi, *.kar) in it or its subfolders")
    sources = []
    for path in files:
        parts = path.relative_to(midi_dir).parts
        sources.append((path, parts[0] if len(parts) > 1 else UNKNOWN_GENRE))
    return sources


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
        sources = [(Path(p), g) for p, g in config.files]
        root = Path(config.label_root) if config.label_root else None
        pieces, manifest = self._read_all(sources, root)
        train = [p for p in pieces if p["split"] == "train"]
        if not train:
            raise BuildError(f"no readable piece fell in the train split ({len(pieces)} readable in all)")
        genres = sorted({p["genre"] for p in pieces})
        codec = codec_lib.fit([p["notes"] for p in train], genres=genres, **config.codec_kwargs)
        data_dir = Path(self.data_dir)
        codec.save(data_dir / CODEC_FILE)
        with open(data_dir / MANIFEST_FILE, "w") as f:
            for row in manifest:
                f.write(json.dumps(row) + "\n")
        self.build_summary = _summary(manifest, codec)
        return {
            split: self._generate_examples([p for p in pieces if p["split"] == split], codec)
            for split in SPLITS
            if any(p["split"] == split for p in pieces)
        }

    def _read_all(self, sources: list[tuple[Path, str]], root: Path | None) -> tuple[list[dict], list[dict]]:
        """Reads every source in parallel; returns (readable unique pieces, manifest rows)."""
        config: MidiPiecesConfig = self.builder_config
        workers = config.workers or os.cpu_count() or 1
        read = functools.partial(midi_io.read_hashed, reader=config.reader)
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            results = list(
                tqdm.tqdm(
                    pool.map(read, [p for p, _ in sources], chunksize=16),
                    total=len(sources),
                    desc="read MIDI",
                    unit="file",
                )
            )
        pieces, manifest, first_of = [], [], {}
        for (path, genre), (sha1, result) in zip(sources, results, strict=True):
            label = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
            row = {
                "path": label,
                "sha1": sha1,
                "genre": genre,
                "split": split_of(sha1, config.validation_percent, config.test_percent) if sha1 else "",
                "status": "ok",
                "reason": "",
                "notes": 0,
            }
            if isinstance(result, midi_io.MidiError):
                row.update(status="rejected", reason=result.reason)
            elif sha1 in first_of:
                row.update(status="duplicate", reason=f"same bytes as {first_of[sha1]}")
            else:
                first_of[sha1] = label
                row.update(notes=int(result.notes.shape[0]))
                if result.recovered:
                    row["reason"] = "recovered: " + "; ".join(result.recovered)
                pieces.append({**row, "notes": result.notes})
            manifest.append(row)
        for label, genre, reason in config.rejected_sources:
            manifest.append(
                {"path": label, "sha1": "", "genre": genre, "split": "", "status": "rejected",
                 "reason": reason, "notes": 0}
            )  # fmt: skip
        return pieces, manifest

    def _generate_examples(self, pieces: list[dict], codec: codec_lib.Codec):
        for p in pieces:
            yield (
                p["sha1"],
                {
                    "ids": codec.encode(p["notes"]).astype(np.int32),
                    "genre": p["genre"],
                    "genre_id": np.int32(codec.genre_id(p["genre"])),
                    "path": p["path"],
                    "sha1": p["sha1"],
                },
            )


def _summary(manifest: list[dict], codec: codec_lib.Codec) -> dict:
    count = {s: sum(r["status"] == s for r in manifest) for s in ("ok", "rejected", "duplicate")}
    pieces = {s: sum(r["status"] == "ok" and r["split"] == s for r in manifest) for s in SPLITS}
    internal = [r for r in manifest if r["reason"].startswith(midi_io.InternalReadError.PREFIX)]
    return {
        "files_found": len(manifest),
        **count,
        # Rejected by a bug rather than by the file: counted apart so that it is seen.
        "internal_errors": [{"path": r["path"], "reason": r["reason"]} for r in internal],
        "pieces": pieces,
        "notes": sum(r["notes"] for r in manifest if r["status"] == "ok"),
        "vocab_size": codec.vocab_size,
        "genres": list(codec.genres),
        "codec_fingerprint": codec.fingerprint,
    }
