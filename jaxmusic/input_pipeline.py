"""The read side of the data: TFDS pieces -> batches of int32 ids for one host.

Framing (DESIGN.md, "Training framing"): a piece is the sequence
`[BOS] + ids + [EOS]`, conceptually preceded by `Te + Td - 2` PADs and followed by
`Td - 1` (so windows start before the piece and end after it: every target of a
piece, its first note and its EOS included, is a target of exactly `Td` training
windows, as a note in its middle is; with PADs on one side only, EOS was a target of
one window where a mid-piece note was of `Td`). A window of `Te + Td` tokens gives

  encoder_tokens = w[:Te]             int32[B, Te]
  decoder_inputs = w[Te - 1 : -1]     int32[B, Td]  (the encoder's last note first)
  targets        = w[Te:]             int32[B, Td]
  weights        = targets not PAD or BOS   float32[B, Td]
  genre          = the piece's genre, an index into codec.genres, int32[B]

Training batches are a pure function of (seed, step), whatever the number of
hosts. The train split is cut into `num_shards` fixed shards (`tfds.even_splits`);
row r of the global batch always draws, uniformly over the windows of shard
floor(r * num_shards / batch), with a stateless key of (seed, step, shard). A host
owns a contiguous block of shards, which is exactly the block of rows it feeds, so
it reads only its share and 1 or N hosts give the same global batches; a run
resumed at step N sees exactly the batches of a run that never stopped, with no
iterator state to save. Transposition (training only) moves a
whole window by the same number of semitones through a fixed id -> id table from
the codec; a window holding a note whose transposition is not in the vocabulary
stays untransposed.

Evaluation windows tile every piece so each note (and each EOS) is a target exactly
once. They are dealt to hosts window by window, padded with empty windows
(weight 0) so every host runs the same number of batches.

Only this module and data_pipeline import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from jaxmusic import batching, key_input
from jaxmusic import codec as codec_lib
from jaxmusic.cli import Error

DATASET_INFO = "dataset_info.json"


class DataError(Error, ValueError):
    """A dataset, split or window setting that cannot serve batches: says which and why."""


def dataset_dir(data_dir: str | os.PathLike) -> Path:
    """The built dataset under `data_dir` (what `data_pipeline.build` wrote).

    `data_dir` may be the dataset's own folder or any folder above it holding
    exactly one dataset.
    """
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


def load_codec(data_dir: str | os.PathLike, *, expected_fingerprint: str | None = None) -> codec_lib.Codec:
    """The codec the dataset was encoded with (codec.json beside its files); with
    `expected_fingerprint` (a model's codec), a CodecError for any other codec."""
    return codec_lib.load(dataset_dir(data_dir) / "codec.json", expected_fingerprint=expected_fingerprint)


@dataclasses.dataclass(frozen=True)
class Pieces:
    """Pieces of one split (or one host's share of it), as BOS + ids + EOS.

    Attributes:
      sequences: int32[n_i] per piece, each [BOS, ids..., EOS].
      genres: int32[P] genre indices into codec.genres.
    """

    sequences: list[np.ndarray]
    genres: np.ndarray

    def __len__(self) -> int:
        return len(self.sequences)


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


# ----------------------------------------------------------------------------
# Training: windows drawn as a pure function of (seed, step).
# ----------------------------------------------------------------------------


def _flat_windows(
    pieces: Pieces, encoder_len: int, decoder_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lays the padded pieces end to end.

    Returns:
      flat: int32[N] every piece as (Te + Td - 2) PADs + sequence + (Td - 1) PADs.
      first: int64[P] where each piece's first window starts in `flat`.
      count: int64[P] how many windows each piece has: every window with at least
        one target of the piece (len + Td - 2).
    """
    window = encoder_len + decoder_len
    before, after = encoder_len + decoder_len - 2, decoder_len - 1
    parts, first, count, offset = [], [], [], 0
    for seq in pieces.sequences:
        padded_len = before + seq.shape[0] + after
        part = np.zeros(padded_len, np.int32)
        part[before : before + seq.shape[0]] = seq
        parts.append(part)
        first.append(offset)
        count.append(padded_len - window + 1)
        offset += padded_len
    return np.concatenate(parts), np.asarray(first, np.int64), np.asarray(count, np.int64)


def train_batches(
    shards: Pieces | list[Pieces],
    *,
    batch_size: int,
    encoder_len: int,
    decoder_len: int,
    seed: int,
    start_step: int = 0,
    transpose: np.ndarray | None = None,
    shard_ids: list[int] | None = None,
    carried: bool = False,
    key_weights: np.ndarray | None = None,
    common_key: np.ndarray | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches for steps start_step, start_step + 1, ...

    Args:
      shards: this host's shards (`load_train_shards`), or one Pieces (one shard).
      batch_size: this host's batch (the global batch / process count); each
        shard feeds batch_size / len(shards) rows.
      encoder_len, decoder_len: Te and Td.
      seed: the run's seed; a batch depends only on (seed, step, shard ids).
      start_step: the first step to give (a resumed run's step).
      transpose: int32[S, vocab] id tables, one per shift (`transpose_tables`);
        each window takes one uniformly. None: no transposition.
      shard_ids: the global index of each shard (keys its random draws).
      carried: carried windows (truncated BPTT; `_carried_windows`) instead of
        windows drawn anywhere; the batches then have a `reset` field.
      key_weights: `key_input.pitch_class_weights` of the codec: the batches then
        have a `key` field, the key of each window's piece from its start through the
        encoder's last note (`key_input.prefix_keys`), moved with the window's
        transposition. None: no such field (a key input reads the encoder's notes only).
      common_key: transposition tables (`transpose_tables`, at least 6 semitones either
        way), as `eval_batches`: each window moved by them to C major or A minor by its
        key (`key_input.common_shift`) instead of by a random shift (so no `transpose`);
        needs key_weights, not carried.

    Yields:
      dicts of numpy arrays as the module doc describes, prefetched by tf.data.
    """
    import tensorflow as tf

    shards = [shards] if isinstance(shards, Pieces) else list(shards)
    shard_ids = list(range(len(shards))) if shard_ids is None else list(shard_ids)
    if encoder_len < 1 or decoder_len < 1:
        raise DataError(f"encoder_len and decoder_len must be >= 1, got {encoder_len}, {decoder_len}")
    rows = batching.layout(batch_size, devices=1, processes=1, data_shards=len(shards)).shard_rows
    tables = None if transpose is None else np.asarray(transpose, np.int32)
    if common_key is not None:
        if tables is not None:
            raise DataError("common_key moves each window by its key: pass no random transpose with it")
        tables = np.asarray(common_key, np.int32)
        _check_common_key(tables, key_weights, carried)
    drawn = functools.partial(_drawn_windows, common_key=common_key is not None)
    make_batch = (_carried_windows if carried else drawn)(
        shards, shard_ids, rows, encoder_len, decoder_len, seed, tables, key_weights
    )
    ds = tf.data.Dataset.range(start_step, 2**62).map(
        make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    for batch in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        yield batching.from_windows(batch["windows"], batch["genre"], encoder_len, batch.get("reset"),
                                    key=batch.get("key"))  # fmt: skip


def _check_common_key(tables: np.ndarray | None, key_weights, carried: bool) -> None:
    """A DataError unless a common-key transposition can be made: tables of at least
    6 semitones either way, the windows' keys, windows drawn anywhere."""
    if tables is None or tables.shape[0] < 13:
        raise DataError("common_key needs transposition tables of at least 6 semitones either way")
    if key_weights is None:
        raise DataError("common_key needs each window's key: pass key_weights")
    if carried:
        raise DataError("common_key moves each window by its own key, which carried windows cannot follow")


def _window_keys(flat, first, key_weights):
    """int8[N] `key_input.prefix_keys` of a shard's flat pieces, as a tf constant (None
    without key_weights): a window starting at i takes the key at i + Te - 1."""
    import tensorflow as tf

    return None if key_weights is None else tf.constant(_prefix_keys(flat, first, key_weights))


def _prefix_keys(flat, first, key_weights) -> np.ndarray:
    """`key_input.prefix_keys`, its complaint about ids a DataError."""
    try:
        return key_input.prefix_keys(flat, first, np.asarray(key_weights, np.float32))
    except ValueError as e:
        raise DataError(str(e)) from None


def _no_shift(tables: np.ndarray | None) -> int:
    """The index of the shift by 0 semitones in transposition tables (0 without them)."""
    return 0 if tables is None else tables.shape[0] // 2


def _window_keys_at(keys_t, start, encoder_len: int, shift, identity: int):
    """tf int32[R]: the key of each window's piece so far (`_window_keys` at the window's
    last encoder position, for windows starting at `start` int64[R]), moved by its
    transposition tables' index `shift` int64[R] (identity: `_no_shift`)."""
    import tensorflow as tf

    keys = tf.cast(tf.gather(keys_t, start + encoder_len - 1), tf.int64)
    return tf.cast(key_input.transposed(keys, tf.cast(shift, tf.int64) - identity, xp=tf), tf.int32)


def _drawn_windows(shards, shard_ids, rows, encoder_len, decoder_len, seed, tables, key_weights=None,
                   common_key: bool = False):  # fmt: skip
    """make_batch(step) of windows drawn anywhere: row r of a shard's rows draws,
    uniformly over every window of the shard, with a stateless key of (seed, shard, step);
    with key_weights, each window's key of its piece so far; common_key: each window
    moved by its key's `key_input.common_shift` instead of a random one."""
    import tensorflow as tf

    window = encoder_len + decoder_len
    longest = max(seq.shape[0] for p in shards for seq in p.sequences)
    if window > longest:
        raise DataError(
            f"a window of {encoder_len} + {decoder_len} tokens is longer than every piece "
            f"(the longest has {longest} with BOS and EOS): lower encoder_len or decoder_len"
        )
    identity = _no_shift(tables)
    tables = None if tables is None else tf.constant(tables)
    offsets = tf.range(window, dtype=tf.int64)
    draws = [_shard_sampler(p, encoder_len, decoder_len, key_weights) for p in shards]

    def make_batch(step):
        windows, genres, keys = [], [], []
        for (flat_t, first_t, cum_t, genres_t, total, keys_t), shard in zip(draws, shard_ids, strict=True):
            key = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + shard, step])
            u = tf.random.stateless_uniform([rows], key, minval=0, maxval=total, dtype=tf.int64)
            piece = tf.searchsorted(cum_t, u, side="right")
            before = tf.where(piece > 0, tf.gather(cum_t, tf.maximum(piece - 1, 0)), tf.zeros_like(u))
            start = tf.gather(first_t, piece) + u - before
            w = tf.gather(flat_t, start[:, None] + offsets[None, :])
            shift = tf.fill([rows], tf.constant(identity, tf.int64))
            if common_key:
                raw = tf.cast(tf.gather(keys_t, start + encoder_len - 1), tf.int64)
                drawn = identity + tf.cast(key_input.common_shift(raw, xp=tf.experimental.numpy), tf.int64)
            elif tables is not None:
                drawn = tf.random.stateless_uniform(
                    [rows], key + tf.constant([0, 1 << 40], tf.int64), minval=0, maxval=tables.shape[0],
                    dtype=tf.int64,
                )  # fmt: skip
            if tables is not None:
                shift_rows = tf.broadcast_to(tf.cast(drawn[:, None], tf.int32), tf.shape(w))
                moved = tf.gather_nd(tables, tf.stack([shift_rows, w], -1))  # tables[shift, id]
                movable = tf.reduce_all(moved >= 0, axis=1)
                w = tf.where(movable[:, None], moved, w)
                shift = tf.where(movable, drawn, shift)
            windows.append(w)
            genres.append(tf.gather(genres_t, piece))
            if keys_t is not None:
                keys.append(_window_keys_at(keys_t, start, encoder_len, shift, identity))
        out = {"windows": tf.concat(windows, 0), "genre": tf.concat(genres, 0)}
        return out | ({"key": tf.concat(keys, 0)} if keys else {})

    return make_batch


def _carried_windows(shards, shard_ids, rows, encoder_len, decoder_len, seed, tables, key_weights=None):
    """make_batch(step) of carried windows (truncated BPTT).

    Each batch row reads its own stream: the pieces of its shard in an order drawn
    anew every epoch, each piece as its windows in order (`_tiling`: every target,
    a piece's first note and its EOS included, once an epoch), so that row r of step
    s + 1 continues row r of step s. `reset` is 1 where a row starts a piece (its
    carried state is zeroed there). A row's window is a pure function of (seed,
    shard, row, step); a piece keeps one transposition over all its windows (none if
    a note of it would leave the vocabulary). encoder_len must equal decoder_len, so
    that a window's encoder reads exactly the notes after those the carried state
    has read.
    """
    import tensorflow as tf

    if encoder_len != decoder_len:
        raise DataError(
            f"carried windows need encoder_len == decoder_len (each window's encoder reads the "
            f"notes after the last window's), got {encoder_len} and {decoder_len}"
        )
    offsets = tf.range(encoder_len + decoder_len, dtype=tf.int64)
    streams = []
    for p in shards:
        flat, first, count = _tiling(p, encoder_len, decoder_len)
        movable = None  # movable[piece, shift]: every id of the piece has a transposition
        if tables is not None:
            movable = tf.constant(np.stack([(tables[:, np.unique(s)] >= 0).all(1) for s in p.sequences]))
        arrays = [tf.constant(a) for a in (flat, first, count, p.genres)]
        streams.append((*arrays, movable, int(count.sum()), _window_keys(flat, first, key_weights)))
    tables_t = None if tables is None else tf.constant(tables)
    identity = _no_shift(tables)

    def make_batch(step):
        windows, genres, resets, keys = [], [], [], []
        for stream, shard in zip(streams, shard_ids, strict=True):
            flat, first, count, genre, movable, total, keys_t = stream
            epoch, q = step // total, step % total
            base = tf.constant(seed, tf.int64) * 1_000_003 + shard
            order = tf.argsort(tf.random.stateless_uniform([rows, count.shape[0]], tf.stack([base, epoch])),
                               axis=1)  # fmt: skip
            counts = tf.gather(count, order)
            ends = tf.cumsum(counts, axis=1)
            at = tf.searchsorted(ends, tf.fill([rows, 1], q), side="right")
            piece = tf.cast(tf.gather(order, at, batch_dims=1)[:, 0], tf.int64)
            within = q - (tf.gather(ends, at, batch_dims=1) - tf.gather(counts, at, batch_dims=1))[:, 0]
            start = tf.gather(first, piece) + within * decoder_len
            w = tf.gather(flat, start[:, None] + offsets[None, :])
            shift = tf.fill([rows], tf.constant(identity, tf.int64))
            if tables_t is not None:
                shifts = tf.random.stateless_uniform(
                    [rows, count.shape[0]], tf.stack([base, epoch + (1 << 40)]), minval=0,
                    maxval=tables.shape[0], dtype=tf.int64,
                )  # fmt: skip
                shift = tf.gather(shifts, piece[:, None], batch_dims=1)[:, 0]
                shift = tf.where(tf.gather_nd(movable, tf.stack([piece, shift], -1)), shift, identity)
                shift_rows = tf.broadcast_to(tf.cast(shift[:, None], tf.int32), tf.shape(w))
                w = tf.gather_nd(tables_t, tf.stack([shift_rows, w], -1))
            windows.append(w)
            genres.append(tf.gather(genre, piece))
            resets.append(within == 0)
            if keys_t is not None:
                keys.append(_window_keys_at(keys_t, start, encoder_len, shift, identity))
        fields = (("windows", windows), ("genre", genres), ("reset", resets), ("key", keys))
        return {name: tf.concat(parts, 0) for name, parts in fields if parts}

    return make_batch


def _shard_sampler(pieces: Pieces, encoder_len: int, decoder_len: int, key_weights=None):
    """Constants for drawing windows of one shard: (flat, first, cum, genres, total,
    keys or None)."""
    import tensorflow as tf

    flat, first, count = _flat_windows(pieces, encoder_len, decoder_len)
    cum = np.cumsum(count)
    keys = _window_keys(flat, first, key_weights)
    return (tf.constant(flat), tf.constant(first), tf.constant(cum), tf.constant(pieces.genres), int(cum[-1]),
            keys)  # fmt: skip


def transpose_tables(codec: codec_lib.Codec, max_semitones: int) -> np.ndarray | None:
    """int32[2k + 1, vocab] tables for shifts -k..k (None for k = 0)."""
    if max_semitones < 0:
        raise DataError(f"transpose semitones must be >= 0, got {max_semitones}")
    if max_semitones == 0:
        return None
    return np.stack([codec.transpose_table(s) for s in range(-max_semitones, max_semitones + 1)])


# ----------------------------------------------------------------------------
# Evaluation: windows tiling every piece once, dealt evenly to hosts.
# ----------------------------------------------------------------------------


def _tiling(pieces: Pieces, encoder_len: int, decoder_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each piece as `Te - 1` PADs + sequence + PADs to whole windows, laid end to end.

    Returns:
      flat: int32[N] the padded pieces.
      first: int64[P] where each piece starts in `flat`.
      count: int64[P] its windows: window i starts at first + i * Td and is
        Te + Td long; across them every token after BOS is a target exactly once, and
        with Te == Td window i + 1's encoder reads exactly window i's targets.
    """
    window = encoder_len + decoder_len
    parts, first, count, offset = [], [], [], 0
    for seq in pieces.sequences:
        k = -(-(seq.shape[0] - 1) // decoder_len)
        padded = np.zeros(encoder_len - 1 + (k - 1) * decoder_len + window, np.int32)
        padded[encoder_len - 1 : encoder_len - 1 + seq.shape[0]] = seq
        parts.append(padded)
        first.append(offset)
        count.append(k)
        offset += padded.shape[0]
    return np.concatenate(parts), np.asarray(first, np.int64), np.asarray(count, np.int64)


def eval_windows(
    pieces: Pieces, encoder_len: int, decoder_len: int, key_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Every window of the tiling, in piece order.

    Returns:
      (windows int32[W, Te + Td], genres int32[W], keys int32[W] or None); across the
      windows every token of every sequence after its BOS is a target exactly once.
      keys (with key_weights, as `train_batches`): each window's key of its piece so far.
    """
    windows, count, keys = _tiled_windows(pieces, encoder_len, decoder_len, key_weights)
    return windows, np.repeat(pieces.genres, count).astype(np.int32), keys


def _tiled_windows(
    pieces: Pieces, encoder_len: int, decoder_len: int, key_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(int32[W, Te + Td] every window of `_tiling`, piece after piece; int64[P] each
    piece's window count; with key_weights, int32[W] each window's key of its piece
    through the encoder's last note, else None)."""
    flat, first, count = _tiling(pieces, encoder_len, decoder_len)
    starts = np.concatenate([f + np.arange(k) * decoder_len for f, k in zip(first, count, strict=True)])
    windows = flat[starts[:, None] + np.arange(encoder_len + decoder_len)[None, :]]
    if key_weights is None:
        return windows, count, None
    keys = _prefix_keys(flat, first, key_weights)
    return windows, count, keys[starts + encoder_len - 1].astype(np.int32)


def eval_batches(
    pieces: Pieces,
    *,
    batch_size: int,
    encoder_len: int,
    decoder_len: int,
    process_index: int = 0,
    process_count: int = 1,
    carried: bool = False,
    key_weights: np.ndarray | None = None,
    common_key: np.ndarray | None = None,
) -> list[dict[str, np.ndarray]]:
    """This host's evaluation batches: the same count on every host.

    `pieces` is the whole split (every host reads it: evaluation splits are small
    and dealing windows, not pieces, keeps hosts in step). carried: batches of
    carried windows (`_carried_eval_batches`). key_weights: batches with a `key`
    field, as `train_batches`. common_key: transposition tables (`transpose_tables`,
    at least 6 semitones either way): each window moved to C major or A minor by its
    key, as `train_batches` with common_key.
    """
    if common_key is not None:
        _check_common_key(np.asarray(common_key), key_weights, carried)
    if carried:
        lanes = (batch_size, process_index, process_count)
        return _carried_eval_batches(pieces, encoder_len, decoder_len, *lanes, key_weights)
    windows, genres, keys = eval_windows(pieces, encoder_len, decoder_len, key_weights)
    if common_key is not None:
        windows, keys, _ = key_input.to_common_key(windows, keys, np.asarray(common_key, np.int32))
    per_host = -(-windows.shape[0] // process_count)
    n_batches = -(-per_host // batch_size)
    mine = np.arange(process_index, windows.shape[0], process_count)
    w = np.zeros((n_batches * batch_size, windows.shape[1]), np.int32)
    g = np.zeros(n_batches * batch_size, np.int32)
    k = np.full(n_batches * batch_size, key_input.NO_KEY, np.int32)
    w[: mine.shape[0]], g[: mine.shape[0]] = windows[mine], genres[mine]
    if keys is not None:
        k[: mine.shape[0]] = keys[mine]
    rows = [slice(i, i + batch_size) for i in range(0, w.shape[0], batch_size)]
    return [batching.from_windows(w[r], g[r], encoder_len, key=None if keys is None else k[r]) for r in rows]


def _carried_eval_batches(
    pieces: Pieces,
    encoder_len: int,
    decoder_len: int,
    batch_size: int,
    process_index: int,
    process_count: int,
    key_weights: np.ndarray | None = None,
) -> list[dict[str, np.ndarray]]:
    """This host's evaluation batches of carried windows: the same count on every host.

    The split's pieces are dealt to `batch_size * process_count` lanes (longest
    first, each to the lane with the fewest windows so far); a lane is its pieces'
    windows in order (`_tiling`), `reset` at each piece's first, so that every
    target is read once with the whole of its piece before it, as in training. Row r
    of batch t is window t of lane r (an empty window, weight 0, once the lane ends).
    Host i feeds lanes i * batch_size to (i + 1) * batch_size - 1.
    """
    import heapq

    windows, count, keys = _tiled_windows(pieces, encoder_len, decoder_len, key_weights)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])  # each piece's first window
    lanes_total = batch_size * process_count
    lanes: list[list[int]] = [[] for _ in range(lanes_total)]
    heap = [(0, lane) for lane in range(lanes_total)]
    for piece in sorted(range(len(pieces)), key=lambda p: (-count[p], p)):
        load, lane = heapq.heappop(heap)
        lanes[lane].append(piece)
        heapq.heappush(heap, (load + int(count[piece]), lane))
    steps = max(int(sum(count[p] for p in lane)) for lane in lanes)
    mine = lanes[process_index * batch_size : (process_index + 1) * batch_size]
    w = np.zeros((steps, batch_size, windows.shape[1]), np.int32)
    g = np.zeros((steps, batch_size), np.int32)
    reset = np.ones((steps, batch_size), np.float32)
    key = np.full((steps, batch_size), key_input.NO_KEY, np.int32)
    for r, lane in enumerate(mine):
        t = 0
        for piece in lane:
            k = int(count[piece])
            w[t : t + k, r] = windows[first[piece] : first[piece] + k]
            g[t : t + k, r] = pieces.genres[piece]
            if keys is not None:
                key[t : t + k, r] = keys[first[piece] : first[piece] + k]
            reset[t + 1 : t + k, r] = 0
            t += k
    return [batching.from_windows(w[t], g[t], encoder_len, reset[t], key=None if keys is None else key[t])
            for t in range(steps)]  # fmt: skip
