"""Peak memory and speed of dataset builds at several corpus sizes.

  python scripts/bench_build.py --work /tmp/bench_build --files 2000,10000,50000 [--workers 2]
      [--source_tree DIR] [--beam_runner DirectRunner]

Writes a synthetic corpus of the largest size with scripts/make_corpus.py (once; the
smaller corpora are its first files, linked), then builds each size with
`python -m data_pipeline.build` in a process of its own, sampling every 50 ms the
resident memory of the build's main process (RSS) and of all its processes together
(the sum of their proportional set sizes: forked workers share pages). It prints,
per size: files/s (files found over the command's wall time, and as the build itself
reports it, from its start to its end, without the interpreter's start-up), the two
peaks, and the
main process's RSS once its imports are done (the floor every build pays), and
writes them to
`<work>/bench_build.json`. `--source_tree` builds with another checkout's code (for a
before/after comparison with the same interpreter).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent


def _rss(proc: psutil.Process) -> tuple[int, int]:
    """(main process RSS, PSS of it and all its descendants), bytes.

    The whole build's figure is proportional set size: forked workers share the
    main process's pages, which RSS would count once per process.
    """
    main = proc.memory_info().rss
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error, OSError):  # a worker may end while it is measured
            total += _pss(p.pid)
    return main, total


def _pss(pid: int) -> int:
    """Proportional set size from /proc/PID/smaps_rollup (Linux): the kernel's sum, cheap
    enough to sample every 50 ms, unlike a walk of every mapping (psutil's full info)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no Pss in /proc/{pid}/smaps_rollup")


def measure(cmd: list[str], cwd: Path) -> dict:
    """Runs cmd, sampling its memory; returns wall seconds and peak RSS (MB)."""
    with tempfile.TemporaryFile("w+") as log:  # not a pipe: a full pipe would stop the build mid-way
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
        ps = psutil.Process(proc.pid)
        peak_main = peak_total = 0
        while proc.poll() is None:
            try:
                main, total = _rss(ps)
            except psutil.Error:
                break
            peak_main, peak_total = max(peak_main, main), max(peak_total, total)
            time.sleep(0.05)
        proc.wait()
        seconds = time.perf_counter() - t0
        log.seek(0)
        out = log.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return {"seconds": round(seconds, 1), "peak_main_mb": round(peak_main / 2**20),
            "peak_all_pss_mb": round(peak_total / 2**20), "output": out}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="corpora and datasets go here")
    parser.add_argument("--files", default="2000,10000,50000", help="corpus sizes, comma-separated")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source_tree", default=str(HERE.parent), help="the checkout whose build runs")
    parser.add_argument("--beam_runner", default=None)
    a = parser.parse_args()
    sizes = sorted(int(n) for n in a.files.split(","))
    work = Path(a.work)
    full = work / f"corpus_{sizes[-1]}"
    if not full.exists():
        make = [sys.executable, str(HERE / "make_corpus.py"), "--out", str(full), "--files", str(sizes[-1])]
        subprocess.run([*make, "--seed", str(a.seed), "--workers", str(a.workers)], check=True)
    imports = "import time, tensorflow, tensorflow_datasets, data_pipeline.build; time.sleep(1)"
    floor = measure([sys.executable, "-c", imports], Path(a.source_tree))
    results = {"import_floor_mb": floor["peak_main_mb"], "source_tree": a.source_tree, "builds": []}
    print(f"imports alone: {floor['peak_main_mb']} MB")
    for n in sizes:
        corpus = full if n == sizes[-1] else work / f"corpus_{n}"
        if not corpus.exists():  # the first n files of the largest corpus
            for src in sorted(full.rglob("*.mid"), key=lambda p: p.name)[:n]:
                dst = corpus / src.parent.name / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(src, dst)
        data = work / f"data_{n}"
        shutil.rmtree(data, ignore_errors=True)
        cmd = [sys.executable, "-m", "data_pipeline.build", "--midi_dir", str(corpus),
               "--data_dir", str(data), "--name", "bench", "--workers", str(a.workers)]  # fmt: skip
        if a.beam_runner:
            cmd += ["--beam_runner", a.beam_runner]
        r = measure(cmd, Path(a.source_tree))
        summary = json.loads(next(data.glob("midi_pieces/bench/*/build.json")).read_text())
        row = {"files": n, "notes": summary["notes"], "files_per_second": round(n / r["seconds"], 1),
               "files_per_second_in_build": summary["files_per_second"],
               **{k: v for k, v in r.items() if k != "output"}}  # fmt: skip
        results["builds"].append(row)
        print(f"{n} files ({summary['notes']} notes): {row['files_per_second']} files/s "
              f"({summary['files_per_second']} inside the build), peak RSS of the "
              f"main process {row['peak_main_mb']} MB, PSS of all {row['peak_all_pss_mb']} MB")  # fmt: skip
        shutil.rmtree(data, ignore_errors=True)
    (work / "bench_build.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
