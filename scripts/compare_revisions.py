"""Train-step time of two git revisions, side by side in one run (medians of rounds).

  .venv/bin/python scripts/compare_revisions.py OLD [NEW] [--hidden 256 1024] \\
      [--rounds 3] [--steps 5] [--dtype float32] [--set model.lookback=False ...]

Checks OLD (and NEW; default: the working tree) out into temporary git worktrees and
times `jaxmusic.benchmarks.bench_train` of configs/default.py (batch 32, 64 + 64 notes,
vocabulary 2,048, as scripts/compare_peers.py) in a fresh process per measurement,
alternating the revisions in each round so that a noisy machine slows both alike.
`--set` changes a config field in both (a field a revision does not have is added there
and read by nothing).
Prints each revision's median step time per hidden size and the ratio NEW / OLD.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_MEASURE = """
import json, os, sys
from configs import default
# The library of jaxmusic.bench is jaxmusic.benchmarks from 2026-12-07 on. Asked by file,
# not by a failed import: the editable install would find the working tree's instead.
if os.path.exists("jaxmusic/benchmarks.py"):
    from jaxmusic import benchmarks as bench
else:
    from jaxmusic import bench
c = default.get_config()
c.batch_size, c.encoder_len, c.decoder_len = 32, 64, 64
c.model.hidden, c.model.dtype = {hidden}, {dtype!r}
c.model.decoder_dropout = 0.0  # the same work in every revision (0.2 in the default since 2026-12-01)
for name, value in {sets!r}:
    parent = c
    for part in name.split(".")[:-1]:
        parent = parent[part]
    parent[name.split(".")[-1]] = value
r = bench.bench_train(c, vocab_size=2048, num_genres=4, steps={steps})
r = r[0] if isinstance(r, tuple) else r  # (figures, ...) from 21275d5 on
print(json.dumps(r["step_seconds_median"]))
"""


def _time(tree: Path, hidden: int, steps: int, dtype: str, sets: list[tuple[str, object]]) -> float:
    code = _MEASURE.format(hidden=hidden, steps=steps, dtype=dtype, sets=sets)
    env = {"PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"error: measuring {tree} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _field(text: str) -> tuple[str, object]:
    """FIELD=VALUE -> (FIELD, the value as Python reads it, or the text)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"error: --set {text}: expected FIELD=VALUE")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", help="a git revision (commit, tag, branch)")
    parser.add_argument("new", nargs="?", help="a git revision (default: the working tree)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a config field for both revisions, e.g. model.lookback=False")  # fmt: skip
    args = parser.parse_args()
    sets = [_field(text) for text in args.set]
    with tempfile.TemporaryDirectory(prefix="compare_revisions.") as tmp:
        trees = {}
        for label, rev in (("old", args.old), ("new", args.new)):
            if rev is None:
                trees[label] = ROOT
                continue
            path = Path(tmp) / label
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                           check=True, capture_output=True)  # fmt: skip
            trees[label] = path
        try:
            times = {(h, k): [] for h in args.hidden for k in trees}
            for r in range(args.rounds):
                for h in args.hidden:
                    for label in ("old", "new") if r % 2 == 0 else ("new", "old"):
                        times[h, label].append(_time(trees[label], h, args.steps, args.dtype, sets))
                        print(f"round {r + 1}, hidden {h}, {label}: {times[h, label][-1] * 1e3:.1f} ms",
                              file=sys.stderr)  # fmt: skip
        finally:
            for path in trees.values():
                if path != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                                   check=False, capture_output=True)  # fmt: skip
    print(f"train step, default model, batch 32, 64+64 notes, vocabulary 2048, {args.dtype}; "
          f"median of {args.rounds} rounds ({args.steps} timed steps each)")  # fmt: skip
    print(f"  old = {args.old}, new = {args.new or 'working tree'}" + "".join(f", {t}" for t in args.set))
    for h in args.hidden:
        old, new = statistics.median(times[h, "old"]), statistics.median(times[h, "new"])
        print(f"  hidden {h:>5}: old {old * 1e3:8.1f} ms  new {new * 1e3:8.1f} ms  new/old {new / old:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
