"""Training metrics to `metrics.jsonl` and TensorBoard, from process 0 only.

`metrics.jsonl` holds one JSON object a line: {"step": N, "name": value, ...}.
TensorBoard event files go to the same folder when TensorFlow is importable
(it is wherever the input pipeline runs); without it only the JSON is written.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class MetricWriter:
    """Appends metrics; a no-op on every process but 0."""

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                import tensorboard  # noqa: F401 - tf.summary's ops live there
                import tensorflow as tf

                self._tb = tf.summary.create_file_writer(str(Path(workdir) / "tensorboard"))
            except ImportError:
                self._tb = None

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Writes scalars for `step` (non-finite values are written as strings)."""
        if not self.enabled:
            return
        row = {"step": int(step)}
        for k, v in metrics.items():
            v = float(v)
            row[k] = v if math.isfinite(v) else str(v)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default():
                for k, v in metrics.items():
                    tf.summary.scalar(k, float(v), step=int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of `metrics.jsonl`, in order."""
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
