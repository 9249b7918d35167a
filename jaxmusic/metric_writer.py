"""Training metrics to `metrics.jsonl` and TensorBoard, from process 0 only, in a workdir
on local disk or in a bucket.

`metrics.jsonl` holds one JSON object a line: {"step": N, "name": value, ...}. An object
in a bucket cannot be appended to: there the whole file is written again at each write
(it stays small: a line per logged step). TensorBoard event files go to
`W/tensorboard` through TensorFlow's summary writer (TensorFlow is there wherever the
input pipeline runs; without it only the JSON is written); for a bucket, each flush is
written to a local event file that is then uploaded whole as a file of its own, so every
object is written once and TensorBoard reads them in order. Uploads run in order on a
thread of their own, so training does not wait on the bucket; `close` waits for them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from concurrent import futures
from typing import Any

from jaxmusic import fileio


class MetricWriter:
    """Appends metrics (scalars; audio and images, `media`); a no-op on every process but 0."""

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True):
        self.path = fileio.path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._remote = fileio.is_url(os.fspath(self.path))
        self._lines: list[str] = []
        self._tb_dir = fileio.path(workdir) / "tensorboard"
        self._staging = None
        self._tb = None
        self._flushes = 0
        self._uploads: futures.ThreadPoolExecutor | None = None
        self._pending: list[futures.Future] = []
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._remote:
            self._uploads = futures.ThreadPoolExecutor(1, thread_name_prefix="metric-upload")
            if self.path.exists():
                self._lines = self.path.read_text().splitlines()
        try:
            import tensorboard  # noqa: F401 - tf.summary's ops live there
            import tensorflow as tf
        except ImportError:
            return
        if self._remote:
            self._staging = tempfile.mkdtemp(prefix="jaxmusic-tensorboard-")
        else:
            self._tb = tf.summary.create_file_writer(os.fspath(self._tb_dir))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Writes scalars for `step` (non-finite values are written as strings)."""
        if not self.enabled:
            return
        row = {"step": int(step)}
        for k, v in metrics.items():
            v = float(v)
            row[k] = v if math.isfinite(v) else str(v)
        self._append(json.dumps(row))
        self._summaries(
            step, lambda tf: [tf.summary.scalar(k, float(v), step=int(step)) for k, v in metrics.items()]
        )

    def media(self, step: int, audio: dict[str, Any] | None = None, images: dict[str, Any] | None = None,
              sample_rate: int = 44_100) -> None:  # fmt: skip
        """TensorBoard audio (name: float32[frames, channels] in [-1, 1]) and images (name:
        uint8[height, width, 3 or 4]) for `step`."""
        if not self.enabled:
            return

        def emit(tf):
            for name, clip in (audio or {}).items():
                tf.summary.audio(
                    name, tf.constant(clip, tf.float32)[None], sample_rate, step=int(step), max_outputs=1
                )
            for name, image in (images or {}).items():
                tf.summary.image(name, tf.constant(image)[None], step=int(step), max_outputs=1)

        self._summaries(step, emit)

    def _append(self, line: str) -> None:
        if self._remote:
            self._lines.append(line)
            self._upload(self.path, "".join(x + "\n" for x in self._lines))
        else:
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def _summaries(self, step: int, emit) -> None:
        """Runs `emit(tf)` under the event writer and flushes (for a bucket: a new event
        file, uploaded once)."""
        if self._tb is None and self._staging is None:
            return
        import tensorflow as tf

        writer = self._tb
        if self._staging is not None:
            folder = os.path.join(self._staging, str(self._flushes))
            writer = tf.summary.create_file_writer(folder, filename_suffix=f".{self._flushes:06d}")
        with writer.as_default():
            emit(tf)
        writer.flush()
        if self._staging is not None:
            writer.close()
            for name in os.listdir(folder):
                with open(os.path.join(folder, name), "rb") as f:
                    self._upload(self._tb_dir / name, f.read())
            shutil.rmtree(folder, ignore_errors=True)
            self._flushes += 1

    def _upload(self, path, data: str | bytes) -> None:
        """Writes `data` to `path` (an object, whole) after every upload before it; the
        first failure is raised here, at the next write, or at `close`."""
        self._raise_failed()
        self._pending.append(self._uploads.submit(fileio.atomic_write, path, data))

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for f in done:
            f.result()

    def close(self) -> None:
        """Flushes TensorBoard and waits for every upload."""
        if self._tb is not None:
            self._tb.close()
        if self._uploads is not None:
            self._uploads.shutdown(wait=True)
            self._raise_failed()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of `metrics.jsonl`, in order."""
    path = fileio.path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
