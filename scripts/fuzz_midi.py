"""Fuzzes `midi_io.read` with byte-level mutants of real MIDI files, at scale.

  .venv/bin/python scripts/fuzz_midi.py DIR --mutants 100000 [--workers 2] \\
      [--timeout 10] [--memory_mb 1024] [--seed 0] [--json fuzz.json]
  .venv/bin/python scripts/fuzz_midi.py --replay FILE --seed S [--out mutant.mid]

Mutant k is `jaxmusic.fuzz.mutate(bytes of file k mod N, seed + k)`, read by both
readers (miditoolkit, and symusic with its fallback). Each read must end in a valid
read or a `MidiError`; anything else is an escape: an `InternalReadError` (an
exception midi_io did not expect), another exception, a read over `--timeout`
seconds (a hang), a `MemoryError` under the worker's `--memory_mb` address-space
limit, or a crashed worker process. Every escape is printed with the file and seed
that reproduce it (`--replay`). Exits 1 when there was an escape.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

from jaxmusic import fuzz, midi_io

READERS = ("miditoolkit", "symusic")
ESCAPES = ("internal", "exception", "hang", "memory", "crash")
BATCH = 100  # mutants per task: few round trips, and a crash costs one batch's re-run

_files: list[Path] = []
_timeout = 10


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def _init_worker(files: list[Path], timeout: int, memory_mb: int) -> None:
    global _files, _timeout
    _files, _timeout = files, timeout
    if memory_mb:
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)


def _read_one(path: Path, reader: str) -> tuple[str, str]:
    """(outcome, detail) of one read of a mutant."""
    signal.alarm(_timeout)
    try:
        midi_io.read(path, reader=reader)
        return "ok", ""
    except midi_io.InternalReadError as e:
        return "internal", e.reason
    except midi_io.MidiError:
        return "midi_error", ""
    except _Hang:
        return "hang", f"over {_timeout} s"
    except MemoryError:
        return "memory", "MemoryError"
    except Exception as e:
        return "exception", f"{type(e).__name__}: {e}"
    finally:
        signal.alarm(0)


def _run_batch(jobs: list[tuple[int, int]]) -> dict:
    """Reads the mutants (file index, seed) with both readers; counts and escapes."""
    counts: collections.Counter = collections.Counter()
    escapes = []
    cache: dict[int, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="fuzz_midi.") as tmp:
        path = Path(tmp) / "mutant.mid"
        for file_index, seed in jobs:
            if file_index not in cache:
                cache = {file_index: _files[file_index].read_bytes()}
            data, applied = fuzz.mutate(cache[file_index], seed)
            path.write_bytes(data)
            for reader in READERS:
                outcome, detail = _read_one(path, reader)
                counts[outcome] += 1
                if outcome in ESCAPES:
                    escapes.append(
                        {"file": str(_files[file_index]), "seed": seed, "reader": reader,
                         "outcome": outcome, "detail": detail[:300], "mutations": applied}
                    )  # fmt: skip
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"counts": counts, "escapes": escapes, "peak_mb": peak_mb}


def _pool(workers: int, files: list[Path], timeout: int, memory_mb: int):
    return concurrent.futures.ProcessPoolExecutor(
        workers, initializer=_init_worker, initargs=(files, timeout, memory_mb)
    )


def _isolate(jobs, files, timeout, memory_mb) -> dict:
    """Re-runs a batch whose worker died, one mutant per process, to name the culprit."""
    counts: collections.Counter = collections.Counter()
    escapes, peak = [], 0.0
    for job in jobs:
        with _pool(1, files, timeout, memory_mb) as pool:
            try:
                r = pool.submit(_run_batch, [job]).result()
            except concurrent.futures.process.BrokenProcessPool:
                counts["crash"] += len(READERS)
                escapes.append(
                    {"file": str(files[job[0]]), "seed": job[1], "reader": "either", "outcome": "crash",
                     "detail": "worker process died", "mutations": []}
                )  # fmt: skip
                continue
        counts.update(r["counts"])
        escapes += r["escapes"]
        peak = max(peak, r["peak_mb"])
    return {"counts": counts, "escapes": escapes, "peak_mb": peak}


def fuzz_directory(midi_dir: Path, *, mutants: int, workers: int, timeout: int, memory_mb: int,
                   seed: int) -> dict:  # fmt: skip
    files = midi_io.find_midi_files(midi_dir)
    if not files:
        raise SystemExit(f"error: {midi_dir}: no MIDI files")
    jobs = [(k % len(files), seed + k) for k in range(mutants)]
    batches = [jobs[i : i + BATCH] for i in range(0, len(jobs), BATCH)]
    counts: collections.Counter = collections.Counter()
    escapes, peak = [], 0.0
    t0 = time.perf_counter()
    done = 0
    while batches:
        with _pool(workers, files, timeout, memory_mb) as pool:
            futures = {pool.submit(_run_batch, b): b for b in batches}
            batches = []
            for future in concurrent.futures.as_completed(futures):
                try:
                    r = future.result()
                except concurrent.futures.process.BrokenProcessPool:
                    # A dead worker breaks the whole pool: isolate this batch, requeue the others.
                    r = _isolate(futures[future], files, timeout, memory_mb)
                counts.update(r["counts"])
                escapes += r["escapes"]
                peak = max(peak, r["peak_mb"])
                done += len(futures[future])
                if done % (BATCH * 50) == 0:
                    print(f"  {done}/{mutants} mutants, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                del futures[future]
            batches = list(futures.values())  # left undone by a broken pool
    return {
        "midi_dir": str(midi_dir), "files": len(files), "mutants": mutants, "reads": sum(counts.values()),
        "counts": dict(counts), "escapes": escapes, "peak_worker_rss_mb": round(peak, 1),
        "timeout_s": timeout, "memory_limit_mb": memory_mb, "workers": workers,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def replay(file: Path, seed: int, out: Path | None) -> int:
    data, applied = fuzz.mutate(file.read_bytes(), seed)
    print(f"{file} seed {seed}: mutations {', '.join(applied)}, {len(data)} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutant.mid"
        path.write_bytes(data)
        for reader in READERS:
            try:
                got = midi_io.read(path, reader=reader)
                print(f"  {reader}: read {got.notes.shape[0]} notes")
            except midi_io.MidiError as e:
                print(f"  {reader}: {type(e).__name__}: {e.reason}")
    if out is not None:
        out.write_bytes(data)
        print(f"wrote {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("midi_dir", nargs="?", type=Path)
    parser.add_argument("--mutants", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=int, default=10, help="seconds a read may take")
    parser.add_argument("--memory_mb", type=int, default=1024, help="address space per worker (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--replay", type=Path, help="a file: print what mutant --seed does to it")
    parser.add_argument("--out", type=Path, help="with --replay: write the mutant here")
    args = parser.parse_args()
    if args.replay is not None:
        return replay(args.replay, args.seed, args.out)
    if args.midi_dir is None or not args.midi_dir.is_dir():
        parser.error(f"{args.midi_dir}: not a directory")
    if args.mutants < 1 or args.workers < 1 or args.timeout < 1:
        parser.error("--mutants, --workers and --timeout must be >= 1")
    r = fuzz_directory(args.midi_dir, mutants=args.mutants, workers=args.workers, timeout=args.timeout,
                       memory_mb=args.memory_mb, seed=args.seed)  # fmt: skip
    print(f"fuzzed {r['files']} files of {r['midi_dir']}: {r['mutants']} mutants, {r['reads']} reads "
          f"in {r['seconds']} s; peak worker RSS {r['peak_worker_rss_mb']} MB "
          f"(limit {r['memory_limit_mb']} MB, timeout {r['timeout_s']} s)")  # fmt: skip
    for outcome in ("ok", "midi_error", *ESCAPES):
        print(f"  {outcome:<11} {r['counts'].get(outcome, 0)}")
    for e in r["escapes"]:
        print(f"escape: {e['outcome']} ({e['reader']}): {e['detail']}\n"
              f"  reproduce: scripts/fuzz_midi.py --replay {e['file']} --seed {e['seed']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    return 1 if r["escapes"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
