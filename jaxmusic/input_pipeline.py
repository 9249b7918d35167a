"""The read side of the data: a TFDS dataset -> this host's pieces -> batches of int32 ids.

`load_pieces` reads a split (this host's share, `tfds.split_for_jax_process`),
`load_train_shards` the train split's fixed data shards this host owns
(`tfds.even_splits`), and `train_batches` serves `windows.TrainWindows` batches through
tf.data, which prepares the next ones on its own threads while a step runs.

Only this module and data_pipeline import TensorFlow.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from jaxmusic import batching, conditioning, fileio, lookback, windows
from jaxmusic import codec as codec_lib
from jaxmusic.errors import Error
from jaxmusic.windows import Pieces

DATASET_INFO = "dataset_info.json"


class DataError(Error, ValueError):
    """A dataset, split or window setting that cannot serve batches: says which and why."""


def dataset_dir(data_dir: str | os.PathLike) -> Path:
    """The built dataset under `data_dir` (what `data_pipeline.build` wrote), a local
    folder: a dataset in a bucket is read from its local copy (`fileio.local_copy`;
    TFDS reads records through TensorFlow, whose GCS client no emulator stands in for).

    `data_dir` may be the dataset's own folder or any folder above it holding
    exactly one dataset.

    Raises:
      DataError: no dataset there, or several.
      fileio.StorageError: a bucket that cannot be read.
    """
    if fileio.is_url(data_dir):
        return _remote_dataset_dir(os.fspath(data_dir))
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"data_dir {data_dir}: not a directory (build one with python -m data_pipeline.build)"
        )
    if (data_dir / DATASET_INFO).exists():
        return data_dir
    found = sorted(p.parent for p in data_dir.glob(f"**/{DATASET_INFO}"))
    if not found:
        raise DataError(
            f"data_dir {data_dir}: no dataset in it (build one with python -m data_pipeline.build)"
        )
    if len(found) > 1:
        raise DataError(f"data_dir {data_dir} holds {len(found)} datasets; point it at one of: "
                        + ", ".join(str(p) for p in found))  # fmt: skip
    return found[0]


@functools.cache
def _remote_dataset_dir(url: str) -> Path:
    """`dataset_dir` of a URL: the one dataset under it, copied once a process."""
    try:
        found = fileio.files(fileio.path(url), DATASET_INFO, max_depth=3)
    except Exception as e:  # the client's own kinds: no bucket, no credentials, ...
        raise fileio.StorageError(f"data_dir {url}: cannot read it ({fileio.reason(e)})") from None
    if len(found) != 1:
        what = "no dataset in it" if not found else f"{len(found)} datasets in it; point it at one"
        raise DataError(f"data_dir {url}: {what} (build one with python -m data_pipeline.build)")
    return fileio.local_copy(found[0].parent)


def load_codec(data_dir: str | os.PathLike, *, expected_fingerprint: str | None = None) -> codec_lib.Codec:
    """The codec the dataset was encoded with (codec.json beside its files); with
    `expected_fingerprint` (a model's codec), a CodecError for any other codec."""
    return codec_lib.load(dataset_dir(data_dir) / "codec.json", expected_fingerprint=expected_fingerprint)


def load_pieces(
    data_dir: str | os.PathLike,
    split: str,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Pieces:
    """Reads this host's share of a split (`tfds.split_for_jax_process`).

    Raises:
      DataError: no such split, or this host's share is empty.
    """
    import tensorflow_datasets as tfds

    builder = _builder_with(data_dir, split)
    share = tfds.split_for_jax_process(split, process_index=process_index, process_count=process_count)
    pieces = _read_pieces(builder, share)
    if not len(pieces):
        raise DataError(f"split {split!r} gives process {process_index} of {process_count} no pieces")
    return pieces


def load_train_shards(
    data_dir: str | os.PathLike,
    *,
    num_shards: int,
    process_index: int = 0,
    process_count: int = 1,
    split: str = "train",
) -> tuple[list[Pieces], list[int]]:
    """This host's shards of the train split: (pieces per shard, global shard indices).

    Raises:
      UsageError: num_shards does not divide among the processes.
      DataError: a shard would be empty.
    """
    import tensorflow_datasets as tfds

    per_host = batching.shards_per_host(num_shards, process_count)
    builder = _builder_with(data_dir, split)
    if builder.info.splits[split].num_examples < num_shards:
        raise DataError(
            f"data_shards {num_shards} is more than the {builder.info.splits[split].num_examples} pieces "
            f"of split {split!r}"
        )
    mine = list(range(process_index * per_host, (process_index + 1) * per_host))
    subsplits = tfds.even_splits(split, n=num_shards)
    return [_read_pieces(builder, subsplits[v]) for v in mine], mine


def _builder_with(data_dir: str | os.PathLike, split: str):
    """The dataset's TFDS reader, checked to hold `split`."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(dataset_dir(data_dir)))
    if split not in builder.info.splits:
        raise DataError(f"split {split!r} is not in the dataset; it has: {', '.join(builder.info.splits)}")
    return builder


def _read_pieces(builder, split_arg) -> Pieces:
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(
        split=split_arg, shuffle_files=False, read_config=tfds.ReadConfig(try_autocache=False)
    )
    ds = ds.map(lambda x: {"ids": x["ids"], "genre_id": x["genre_id"]})
    sequences, genres = [], []
    for ex in iter(tfds.as_numpy(ds)):
        sequences.append(np.concatenate([[codec_lib.BOS], ex["ids"], [codec_lib.EOS]]).astype(np.int32))
        genres.append(ex["genre_id"] - codec_lib.NUM_SPECIAL)
    return Pieces(sequences, np.asarray(genres, np.int32))


def train_batches(
    shards: list[Pieces],
    *,
    shard_ids: list[int],
    batch_size: int,
    encoder_len: int,
    decoder_len: int,
    seed: int,
    start_step: int = 0,
    transpose: np.ndarray | None = None,
    carried: bool = False,
    conditioner: conditioning.Conditioner | None = None,
    lookback_spec: lookback.Spec | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches for steps start_step, start_step + 1, ... (`windows.TrainWindows`
    with these arguments), prepared ahead by tf.data."""
    import tensorflow as tf

    source = windows.TrainWindows(shards, shard_ids=shard_ids, batch_size=batch_size, encoder_len=encoder_len,
                                  decoder_len=decoder_len, seed=seed, transpose=transpose, carried=carried,
                                  conditioner=conditioner, lookback_spec=lookback_spec)  # fmt: skip
    names = sorted(source(start_step))

    def make(step):
        batch = source(int(step))
        return [batch[name] for name in names]

    dtypes = [tf.as_dtype(source(start_step)[name].dtype) for name in names]
    ds = tf.data.Dataset.range(start_step, 2**62).map(
        lambda step: tf.numpy_function(make, [step], dtypes, stateful=False),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    )  # fmt: skip
    for fields in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        yield dict(zip(names, fields, strict=True))
