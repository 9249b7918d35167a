"""The bundled default corpus: music21's own works, written to MIDI by genre.

music21 (installed from PyPI) ships a corpus of public-domain scores. `prepare`
converts a selection of it to MIDI files in genre folders, in parallel, caching
every result (a converted file, or the reason music21 could not convert a work),
so a second build converts nothing.

Selections (`size`):
- "small", the default, converts in about two minutes on two cores: every Bach
  work (chorales, mostly), Mozart and Haydn quartet movements, a sample of
  Palestrina and Monteverdi (`classical`); a sample of the Essen and O'Neill folk
  collections (`folk`).
- "full": every work of those composers plus Beethoven, every Essen, O'Neill and
  Ryan's Mammoth tune (about 12,000 works; tens of minutes).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import warnings
from pathlib import Path

import tqdm

from jaxmusic.errors import UsageError
from jaxmusic.fileio import atomic_path, atomic_write

SIZES = ("small", "full")
SCORE_SUFFIXES = (".mxl", ".xml", ".krn", ".abc")  # in order of preference


@dataclasses.dataclass(frozen=True)
class Work:
    """One score to convert.

    Attributes:
      genre: the genre folder it goes to.
      source: the corpus file, relative to music21's corpus folder.
      number: the tune's reference number (X:) inside an ABC collection, or 0.
    """

    genre: str
    source: str
    number: int = 0

    @property
    def name(self) -> str:
        """The MIDI file name: the source path flattened, with the tune number."""
        stem = re.sub(r"[^A-Za-z0-9.]+", "_", str(Path(self.source).with_suffix("")))
        return f"{stem}_{self.number}.mid" if self.number else f"{stem}.mid"

    @property
    def label(self) -> str:
        """How the manifest names the work."""
        return f"music21:{self.source}" + (f"#{self.number}" if self.number else "")


# (genre, composer folder, works to take in the small selection: None = all)
_SELECTION = [
    ("classical", "bach", None),
    ("classical", "mozart", None),
    ("classical", "haydn", None),
    ("classical", "palestrina", 40),
    ("classical", "monteverdi", 20),
    ("classical", "beethoven", 0),
    ("folk", "essenFolksong", 500),
    ("folk", "oneills1850", 200),
    ("folk", "ryansMammoth", 0),
]


def _corpus_root() -> Path:
    from music21 import common

    return Path(common.getCorpusFilePath())


def list_works(size: str = "small") -> list[Work]:
    """The works of a selection, in a fixed order (samples evenly spaced)."""
    if size not in SIZES:
        raise UsageError(f"corpus size must be one of {SIZES}, got {size!r}")
    root = _corpus_root()
    works: list[Work] = []
    for genre, folder, small_count in _SELECTION:
        files = [p for p in (root / folder).rglob("*") if p.suffix in SCORE_SUFFIXES and p.is_file()]
        # A work in two encodings (bwv277.krn and bwv277.mxl) is taken once, in the
        # first encoding of SCORE_SUFFIXES.
        best: dict[Path, Path] = {}
        for path in sorted(files, key=lambda p: (SCORE_SUFFIXES.index(p.suffix), p)):
            best.setdefault(path.with_suffix(""), path)
        files = sorted(best.values())
        found: list[Work] = []
        for path in files:
            rel = path.relative_to(root).as_posix()
            if path.suffix == ".abc":
                numbers = re.findall(r"^X:\s*(\d+)", path.read_text(errors="replace"), re.M)
                found += [Work(genre, rel, int(n)) for n in dict.fromkeys(numbers)]
            else:
                found.append(Work(genre, rel))
        if size == "small" and small_count is not None:
            stride = max(1, len(found) // small_count) if small_count else 0
            found = found[::stride][:small_count] if stride else []
        works += found
    return works


def _convert(args: tuple[Work, str, str]) -> tuple[Work, str | None]:
    """Converts one work to MIDI; returns (work, None) or (work, reason it failed)."""
    work, root, out = args
    warnings.simplefilter("ignore")  # music21 warns about every odd score element
    from music21 import converter

    path = Path(root) / work.source
    try:
        score = converter.parse(path, number=work.number) if work.number else converter.parse(path)
        with atomic_path(out) as tmp:
            score.write("midi", fp=str(tmp))
        return work, None
    except Exception as e:  # music21 raises many kinds; each is a rejection, not a crash
        reason = f"music21 could not convert: {type(e).__name__}: {e}".splitlines()[0]
        # Memory addresses in music21's messages would differ from run to run.
        reason = re.sub(r"id\(\)=\d+|0x[0-9a-f]+", "...", reason)[:300]
        return work, reason


def prepare(
    cache_dir: str | os.PathLike, *, size: str = "small", workers: int | None = None
) -> tuple[list[tuple[Path, str]], list[tuple[str, str, str]]]:
    """Converts the selection to MIDI under cache_dir/<genre>/, reusing cached results.

    Args:
      cache_dir: where converted files and `failures.json` live.
      size: "small" or "full".
      workers: processes (default: every core).

    Returns:
      (files, failures): files as (path, genre) for every converted work;
      failures as (label, genre, reason) for every work music21 could not convert.
    """
    import music21

    cache = Path(cache_dir) / f"music21-{music21.__version__}"
    cache.mkdir(parents=True, exist_ok=True)
    failures_path = cache / "failures.json"
    failed: dict[str, str] = json.loads(failures_path.read_text()) if failures_path.exists() else {}
    works = list_works(size)
    root = str(_corpus_root())
    todo = []
    for work in works:
        out = cache / work.genre / work.name
        if not out.exists() and work.label not in failed:
            out.parent.mkdir(parents=True, exist_ok=True)
            todo.append((work, root, str(out)))
    if todo:
        workers = workers or os.cpu_count() or 1
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            results = pool.map(_convert, todo, chunksize=4)
            for work, reason in tqdm.tqdm(results, total=len(todo), desc="music21 -> MIDI", unit="work"):
                if reason is not None:
                    failed[work.label] = reason
        atomic_write(failures_path, json.dumps(failed, indent=1, sort_keys=True))
    files = [(cache / w.genre / w.name, w.genre) for w in works if w.label not in failed]
    failures = [(w.label, w.genre, failed[w.label]) for w in works if w.label in failed]
    return files, failures
