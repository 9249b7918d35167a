"""Writes a synthetic MIDI corpus in genre folders, for measuring builds at any size.

  python scripts/make_corpus.py --out /tmp/corpus --files 10000 [--seed 0] [--workers K]

File i is `<out>/<genre>/<i:07d>.mid` and depends only on (seed, i), so a corpus is
the same whatever the worker count, and a larger one holds a smaller one of the same
seed. Each piece has 1 to 4 tracks (a melody over a key, chords, a bass line, and
drums on channel 9 in some), 150 to 4,000 notes in all, drums included (log-uniform),
a tempo of 60 to 180 BPM with a tempo change in some, and velocities, durations and
rests that vary. A share of the files is broken on purpose (`--broken_percent`: cut
off in its first track, an HTML page, empty, or a MIDI file without notes) and a
share is a byte copy of an earlier whole file (`--duplicate_percent`), so a build
meets what real scrapes hold.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import symusic

GENRES = ("classical", "jazz", "rock", "pop")
TPQ = 480
MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
BROKEN_KINDS = ("truncated", "html", "empty", "no_notes")


def path_of(out: Path, i: int, genres: tuple[str, ...]) -> Path:
    return out / genres[i % len(genres)] / f"{i:07d}.mid"


def _track(rng: np.random.Generator, name: str, program: int, times: np.ndarray, durations: np.ndarray,
           pitches: np.ndarray, velocity: int, drum: bool = False) -> symusic.Track:  # fmt: skip
    track = symusic.Track(name=name, program=program, is_drum=drum)
    vel = np.clip(velocity + rng.integers(-12, 13, times.shape[0]), 1, 127)
    track.notes = symusic.Note.from_numpy(
        time=times.astype(np.int32), duration=np.maximum(durations, 1).astype(np.int32),
        pitch=pitches.astype(np.int8), velocity=vel.astype(np.int8),
    )  # fmt: skip
    return track


def piece(seed: int, i: int) -> symusic.Score:
    """The score of file i: tracks whose note counts add up to a log-uniform total."""
    rng = np.random.default_rng([seed, i])
    total = int(np.exp(rng.uniform(np.log(150), np.log(4000))))
    tonic = int(rng.integers(0, 12))
    scale = (MAJOR if rng.random() < 0.6 else MINOR) + tonic
    step = TPQ // int(rng.choice([1, 2, 4]))  # the melody's grid: quarters, eighths or sixteenths
    score = symusic.Score(TPQ)
    score.tempos.append(symusic.Tempo(0, float(rng.uniform(60, 180))))
    kinds = ["melody", *rng.choice(["chords", "bass", "drums"], int(rng.integers(0, 4)), replace=False)]
    shares = rng.dirichlet(np.ones(len(kinds)))
    length = 0
    for kind, share in zip(kinds, shares, strict=True):
        n = max(1, int(total * share))
        if kind == "melody":
            gaps = step * rng.choice([1, 1, 1, 2, 2, 3, 4], n)
            times = np.cumsum(gaps) - gaps[0]
            degrees = np.cumsum(rng.choice([-2, -1, -1, 0, 1, 1, 2, 4, -4], n)) % 14 + 7
            pitches = 12 * (degrees // 7) + scale[degrees % 7] + 48
            track = _track(rng, "melody", int(rng.integers(0, 80)), times, gaps * rng.uniform(0.5, 1.0, n),
                           pitches, 90)  # fmt: skip
        elif kind == "chords":
            m = max(1, n // 3)
            times = np.repeat(np.arange(m) * 2 * TPQ, 3)[:n]
            roots = rng.integers(0, 7, m)
            degrees = (np.repeat(roots, 3) + np.tile([0, 2, 4], m))[:n]
            pitches = 12 * (degrees // 7) + scale[degrees % 7] + 48
            track = _track(rng, "chords", int(rng.integers(0, 8)), times, np.full(times.shape, 2 * TPQ - 20),
                           pitches, 70)  # fmt: skip
        elif kind == "bass":
            times = np.arange(n) * TPQ
            pitches = scale[rng.integers(0, 7, n)] + 36
            track = _track(rng, "bass", 33, times, np.full(n, TPQ - 40), pitches, 85)
        else:
            times = np.arange(n) * (TPQ // 2)
            pitches = rng.choice([36, 38, 42, 46], n)
            track = _track(rng, "drums", 0, times, np.full(n, 60), pitches, 100, drum=True)
        length = max(length, int(times[-1]))
        score.tracks.append(track)
    if rng.random() < 0.2:  # a tempo change half way
        score.tempos.append(symusic.Tempo(length // 2, float(rng.uniform(60, 180))))
    return score


def kind_of(seed: int, i: int, broken: float, duplicate: float) -> str:
    """What file i is: "ok", "duplicate" or one of BROKEN_KINDS (a function of (seed, i))."""
    rng = np.random.default_rng([seed, i, 1])
    draw = rng.random()
    if draw < broken:
        return BROKEN_KINDS[int(rng.integers(len(BROKEN_KINDS)))]
    if i > 0 and draw < broken + duplicate:
        return "duplicate"
    return "ok"


def write_file(out: Path, seed: int, i: int, genres: tuple[str, ...], broken: float, duplicate: float) -> str:
    """Writes file i; returns what it is (`kind_of`)."""
    rng = np.random.default_rng([seed, i, 2])
    path = path_of(out, i, genres)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = kind_of(seed, i, broken, duplicate)
    if kind == "truncated":  # cut inside its first track: no note survives
        data = piece(seed, i).dumps_midi()
        path.write_bytes(data[: int(rng.integers(14, 30))])
    elif kind == "html":
        path.write_bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no_notes":
        symusic.Score(TPQ).dump_midi(str(path))
    elif kind == "duplicate":  # the bytes of an earlier whole file
        earlier = [j for j in rng.integers(0, i, 64).tolist() if kind_of(seed, j, broken, duplicate) == "ok"]
        if not earlier:
            kind = "ok"
        path.write_bytes(piece(seed, earlier[0] if earlier else i).dumps_midi())
    else:
        piece(seed, i).dump_midi(str(path))
    return kind


def _write_range(out: Path, seed: int, start: int, stop: int, genres: tuple[str, ...], broken: float,
                 duplicate: float) -> list[str]:  # fmt: skip
    return [write_file(out, seed, i, genres, broken, duplicate) for i in range(start, stop)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the corpus folder (created; must not hold files)")
    parser.add_argument("--files", type=int, required=True, help="how many MIDI files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--genres", default=",".join(GENRES), help="genre folder names, comma-separated")
    parser.add_argument("--broken_percent", type=float, default=1.0, help="files broken on purpose")
    parser.add_argument("--duplicate_percent", type=float, default=0.5, help="byte copies of earlier files")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overwrite", action="store_true", help="delete what --out holds first")
    a = parser.parse_args(argv)
    out = Path(a.out)
    genres = tuple(g for g in a.genres.split(",") if g)
    problems = [
        (a.files < 1, f"--files must be >= 1, got {a.files}"),
        (a.workers < 1, f"--workers must be >= 1, got {a.workers}"),
        (not genres, "--genres names no genre"),
        (not 0 <= a.broken_percent + a.duplicate_percent <= 100,
         "--broken_percent and --duplicate_percent must add up to 0..100"),
        (out.exists() and any(out.iterdir()) and not a.overwrite,
         f"--out {out}: holds files already (pass --overwrite to replace them)"),
    ]  # fmt: skip
    for bad, message in problems:
        if bad:
            print(f"error: {message}", file=sys.stderr)
            return 2
    if a.overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    chunk = 256
    kinds: dict[str, int] = {}
    shares = (a.broken_percent / 100, a.duplicate_percent / 100)
    with concurrent.futures.ProcessPoolExecutor(a.workers) as pool:
        futures = [
            pool.submit(_write_range, out, a.seed, s, min(s + chunk, a.files), genres, *shares)
            for s in range(0, a.files, chunk)
        ]
        for f in futures:
            for kind in f.result():
                kinds[kind] = kinds.get(kind, 0) + 1
    seconds = time.perf_counter() - t0
    what = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    print(f"{a.files} files in {out} ({seconds:.1f} s): {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
