"""The batch the steps take, and how a global batch splits over processes, devices and
data shards: one place for both, with no TensorFlow.

A batch is a dict of arrays, examples on the first axis:

  encoder_tokens  int32[B, Te]    the encoder's window
  decoder_inputs  int32[B, Td]    the encoder's last token, then the targets but the last
  targets         int32[B, Td]
  weights         float32[B, Td]  1 for a target to learn, 0 for PAD and BOS
  genre           int32[B]        an index into codec.genres
  reset           float32[B]      carried windows only: 1 where a row starts a piece
                                  (its carried state is zeroed), else 0
  key, density    int32[B]        a model reading the piece so far only: the key and the
                                  density bin of the row's piece from its start through
                                  the encoder's last note (`conditioning`)
  lookback,       int32[B, Td]    a model with a lookback only: at each decoder step, the
  lookback_bucket                 note that followed the longest earlier match of the
                                  notes so far, and that match's length bucket (`lookback`)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxmusic import codec as codec_lib
from jaxmusic.errors import UsageError

# name: (dtype, whether it has a time axis of the encoder (Te) or decoder (Td), or none)
FIELDS: dict[str, tuple[Any, str | None]] = {
    "encoder_tokens": (np.int32, "encoder"),
    "decoder_inputs": (np.int32, "decoder"),
    "targets": (np.int32, "decoder"),
    "weights": (np.float32, "decoder"),
    "genre": (np.int32, None),
}


def from_windows(
    windows: np.ndarray,
    genre: np.ndarray,
    encoder_len: int,
    *,
    reset: np.ndarray | None = None,
    key: np.ndarray | None = None,
    density: np.ndarray | None = None,
    lookback: np.ndarray | None = None,
    lookback_bucket: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """A batch from int32[B, Te + Td] windows of `[PAD...] [BOS] ids [EOS] [PAD...]` and
    their genres int32[B]; with `reset` (bool or 0/1 [B]), a batch of carried windows;
    with `key` and `density` (int[B]), each row's condition of its piece so far; with
    `lookback` and `lookback_bucket` (int[B, Td]), each decoder step's lookback."""
    targets = windows[:, encoder_len:]
    extra = {} if reset is None else {"reset": np.asarray(reset, np.float32)}
    given = (("key", key), ("density", density), ("lookback", lookback), ("lookback_bucket", lookback_bucket))
    extra |= {k: np.asarray(v, np.int32) for k, v in given if v is not None}
    return extra | {
        "encoder_tokens": windows[:, :encoder_len],
        "decoder_inputs": windows[:, encoder_len - 1 : -1],
        "targets": targets,
        # BOS is never a target (it is given, not predicted): a window that starts
        # early enough to hold a piece's first notes as targets holds its BOS there too.
        "weights": ((targets != codec_lib.PAD) & (targets != codec_lib.BOS)).astype(np.float32),
        "genre": genre,
    }


def abstract(
    batch_size: int,
    encoder_len: int,
    decoder_len: int,
    sharding: Any = None,
    *,
    carried: bool = False,
    conditioned: bool = False,
    lookback: bool = False,
) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch's shapes and dtypes (for lowering and compiling without data); carried:
    with `reset`; conditioned: with the `key` and `density` of the piece so far;
    lookback: with the decoder steps' `lookback` and `lookback_bucket`."""
    lengths = {"encoder": (encoder_len,), "decoder": (decoder_len,), None: ()}
    fields = FIELDS | ({"reset": (np.float32, None)} if carried else {})
    fields |= {"key": (np.int32, None), "density": (np.int32, None)} if conditioned else {}
    fields |= (
        {"lookback": (np.int32, "decoder"), "lookback_bucket": (np.int32, "decoder")} if lookback else {}
    )
    return {
        name: jax.ShapeDtypeStruct((batch_size, *lengths[axis]), dtype, sharding=sharding)
        for name, (dtype, axis) in fields.items()
    }


@dataclasses.dataclass(frozen=True)
class Layout:
    """A global batch's split: every process feeds `host_size` rows, `shard_rows` from each
    of its `shards_per_host` data shards (`shards` in all); every device runs
    `device_size` rows."""

    global_size: int
    shards: int
    host_size: int
    device_size: int
    shards_per_host: int
    shard_rows: int


def layout(global_size: int, *, devices: int, processes: int, data_shards: int | None = None) -> Layout:
    """Checks that a global batch splits evenly; data_shards None: one shard a process.

    Every process holds the same number of devices, so a batch that divides among the
    devices divides among the processes too.

    Raises:
      UsageError: naming the numbers that do not divide.
    """
    shards = processes if data_shards is None else data_shards
    if global_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {global_size}")
    if global_size % devices:
        raise UsageError(f"batch_size {global_size} does not divide among {devices} devices")
    per_host = shards_per_host(shards, processes)
    if global_size % shards:
        raise UsageError(f"batch_size {global_size} does not divide among data_shards {shards}")
    return Layout(
        global_size=global_size,
        shards=shards,
        host_size=global_size // processes,
        device_size=global_size // devices,
        shards_per_host=per_host,
        shard_rows=global_size // shards,
    )


def shards_per_host(shards: int, processes: int) -> int:
    """Data shards each process reads.

    Raises:
      UsageError: they do not divide evenly.
    """
    if shards < 1 or shards % processes:
        raise UsageError(f"data_shards {shards} does not divide among {processes} processes (hosts)")
    return shards // processes
