"""The key of a window of notes, as a model input (Krumhansl-Schmuckler, in JAX).

The encoder's notes give a key the way `music_stats.estimate_key` finds one in a
piece: the duration-weighted pitch-class distribution correlated with the 24 rotated
Krumhansl-Kessler profiles. A model with a key input (`models.Seq2Seq.num_keys`)
adds a learned row per key to its first layers' gates, as it does for the genre.
Training and evaluation read the key of each encoder window; sampling reads the
primer's once and holds it, so that a long sample keeps its primer's key in view.

With a density input (`models.Seq2Seq.num_densities`), the same index also carries the
note density (notes a second) of those notes in one of `NUM_DENSITIES` bins: index =
key + NUM_KEYS x density bin, so that every path a key travels (the batches, their
transposition, the sampler's held condition) carries the density with it, and a long
sample holds its primer's pace as it holds its key. Its weights then have two more
columns: each id's onset gap in seconds, and 1 for a note.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmusic import codec as codec_lib
from jaxmusic import music_stats

NUM_KEYS = 25  # 0..11 major, 12..23 minor (music_stats.KEY_NAMES), 24: no key to tell
NO_KEY = NUM_KEYS - 1
# Note density bins (notes a second; log-spaced, from a slow chorale to dense pop), and
# one more for fewer than two notes (no pace to tell).
DENSITY_EDGES = (1.5, 2.5, 3.5, 5.0, 7.0, 10.0, 14.0)
NUM_DENSITIES = len(DENSITY_EDGES) + 2
NO_DENSITY = NUM_DENSITIES - 1


def pitch_class_weights(codec: codec_lib.Codec) -> np.ndarray:
    """float32[V, 12]: for each pseudo-note id, its duration (seconds) at its pitch class;
    zero rows for the special and genre ids."""
    table = np.zeros((codec.vocab_size, 12), np.float32)
    rows = np.asarray(codec.vocabulary, np.int64)
    ids = codec.first_note_id + np.arange(rows.shape[0])
    table[ids, rows[:, 0] % 12] = np.asarray(codec.duration_values, np.float32)[rows[:, 2]]
    return table


def density_weights(codec: codec_lib.Codec) -> np.ndarray:
    """float32[V, 14]: `pitch_class_weights`, then each pseudo-note's onset gap (seconds
    after the note before; its duration for a codec without onsets), then 1 for a note."""
    table = np.zeros((codec.vocab_size, 14), np.float32)
    table[:, :12] = pitch_class_weights(codec)
    rows = np.asarray(codec.vocabulary, np.int64)
    ids = codec.first_note_id + np.arange(rows.shape[0])
    if codec.has_onsets:
        table[ids, 12] = np.asarray(codec.onset_values, np.float32)[rows[:, 3]]
    else:
        table[ids, 12] = np.asarray(codec.duration_values, np.float32)[rows[:, 2]]
    table[ids, 13] = 1.0
    return table


def weights_for(model: Any, codec: codec_lib.Codec) -> np.ndarray | None:
    """What a model's key input reads: `pitch_class_weights` of the codec for a model
    with a key input (`num_keys` > 0), `density_weights` with a density input as well,
    else None."""
    if not model.num_keys:
        return None
    return density_weights(codec) if model.num_densities else pitch_class_weights(codec)


def density_bin(notes: Any, seconds: Any, xp: Any = np) -> Any:
    """The density bin of `notes` notes over `seconds` of onset gaps (broadcast):
    NO_DENSITY for fewer than two notes; all at once counts as the densest."""
    rate = notes / xp.maximum(seconds, 1e-6)
    bins = xp.searchsorted(xp.asarray(DENSITY_EDGES, dtype=rate.dtype), rate, side="right")
    return xp.where(notes >= 2, bins, NO_DENSITY)


def split(index: Any) -> tuple[Any, Any]:
    """(key, density bin) of a conditioning index (density 0 for a key-only index)."""
    return index % NUM_KEYS, index // NUM_KEYS


CONTEXTS = ("window", "piece")


def context(config: Any) -> str:
    """config.model.key_context: what a key input reads in training and evaluation,
    "window" (the encoder's notes; configs from before it, which lack it) or "piece"
    (the piece from its start through the encoder's last note)."""
    return config.model.get("key_context", "window")


def piece_weights(config: Any, key_weights: np.ndarray | None) -> np.ndarray | None:
    """What the input pipeline's and `sampler.generate`'s key weights take: a model's
    `weights_for` (None without a key input) when its key context is "piece", else None
    (no key in the batches; the key, if any, is the encoder window's)."""
    return key_weights if context(config) == "piece" else None


def _profiles() -> np.ndarray:
    """float32[24, 12]: the major then minor profiles rotated to each tonic, centred and
    scaled to unit length (so a dot product with a centred distribution is Pearson's r
    times that distribution's length, the same for every profile)."""
    p = np.stack([np.roll(profile, tonic) for profile in (music_stats.KK_MAJOR, music_stats.KK_MINOR)
                  for tonic in range(12)])  # fmt: skip
    p = p - p.mean(1, keepdims=True)
    return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)


def estimate(tokens: jax.Array, weights: jax.Array | np.ndarray | None) -> jax.Array:
    """int32[B]: the key of each row of tokens int32[B, T] (NO_KEY with fewer than two
    pitch classes), given `pitch_class_weights` (None: no key known, NO_KEY for all);
    given `density_weights`, the index key + NUM_KEYS x the rows' density bin."""
    if weights is None:
        return jnp.full(tokens.shape[:1], NO_KEY, jnp.int32)
    sums = jnp.take(jnp.asarray(weights), tokens, axis=0, mode="clip").sum(1)  # [B, 12 or 14]
    hist = sums[:, :12]
    centred = hist - hist.mean(-1, keepdims=True)
    profiles = jnp.asarray(_profiles())
    # Pearson's r times |centred| (the same argmax), as a sum rather than a product: an
    # exact float32 reduction, not a matrix product that the precision policy would cast.
    score = (centred[:, None, :] * profiles[None]).sum(-1)
    told = (hist > 0).sum(-1) >= 2
    key = jnp.where(told, score.argmax(-1), NO_KEY).astype(jnp.int32)
    if sums.shape[1] == 12:
        return key
    return key + NUM_KEYS * density_bin(sums[:, 13], sums[:, 12], xp=jnp).astype(jnp.int32)


def prefix_keys(flat: np.ndarray, starts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """uint8[N]: at each position of `flat` (int32[N], pieces laid end to end, piece i
    from `starts[i]` to the next start), the key of its piece's notes from the piece's
    start through that position (NO_KEY while fewer than two pitch classes have sounded):
    the key of the piece so far, which a window's last encoder position gives as its
    key input (`config.model.key_context = "piece"`); with `density_weights`, the
    index of that key and of the piece's density so far.

    Numpy, one piece at a time, so that memory follows the longest piece, not the corpus.

    Raises:
      ValueError: an id is outside the vocabulary of `weights`.
    """
    if flat.size and (flat.min() < 0 or flat.max() >= weights.shape[0]):
        raise ValueError(
            f"ids {int(flat.min())}..{int(flat.max())} are outside the codec's vocabulary of "
            f"{weights.shape[0]} (a dataset encoded with another codec.json?)"
        )
    out = np.full(flat.shape[0], NO_KEY, np.uint8)
    profiles = _profiles().astype(np.float64)
    bounds = np.append(np.asarray(starts, np.int64), flat.shape[0])
    for lo, hi in itertools.pairwise(bounds):
        sums = np.cumsum(weights[flat[lo:hi]], axis=0, dtype=np.float64)  # [n, 12 or 14]
        hist = sums[:, :12]
        score = (hist - hist.mean(-1, keepdims=True)) @ profiles.T  # [n, 24]
        told = (hist > 0).sum(-1) >= 2
        key = np.where(told, score.argmax(-1), NO_KEY)
        if sums.shape[1] != 12:
            key = key + NUM_KEYS * density_bin(sums[:, 13], sums[:, 12])
        out[lo:hi] = key
    return out


def transposed(keys: Any, shift: Any, xp: Any = np) -> Any:
    """Keys moved by `shift` semitones (broadcast), NO_KEY kept, a density bin kept: for
    windows transposed in training. xp: the array module (numpy, jax.numpy, or
    tf.experimental.numpy)."""
    key, density = keys % NUM_KEYS, keys // NUM_KEYS
    moved = (key % 12 + shift) % 12 + (key // 12) * 12
    return xp.where(key == NO_KEY, key, moved) + NUM_KEYS * density


# Semitones a common-key transposition moves a window by lie in -6..+5; tables of
# shifts up to this many semitones either way also cover a note moved back an octave
# further when its own move back is not in the vocabulary (`from_common_key`).
COMMON_KEY_TABLE_SHIFTS = 12


def common_key_tables(config: Any, codec: codec_lib.Codec) -> np.ndarray | None:
    """int32[2 x COMMON_KEY_TABLE_SHIFTS + 1, V]: a config's common-key transposition
    tables (`input_pipeline.transpose_tables`), None without `common_key`.

    Raises:
      cli.UsageError: common_key without what it stands on (the key input of the piece
        so far, no random transposition, windows drawn anywhere).
    """
    from jaxmusic import input_pipeline  # it imports this module: imported here, not above
    from jaxmusic.cli import UsageError

    if not config.get("common_key", False):
        return None
    if not config.model.get("key_input", False) or context(config) != "piece":
        raise UsageError("config.common_key needs model.key_input=True and model.key_context='piece'")
    if config.transpose:
        raise UsageError(
            f"config.common_key moves every window to C major or A minor; config.transpose="
            f"{config.transpose} would move it away again: set transpose=0"
        )
    if config.get("carried_windows", False):
        raise UsageError("config.common_key moves each window by its own key: not with carried_windows")
    return input_pipeline.transpose_tables(codec, COMMON_KEY_TABLE_SHIFTS)


def common_shift(keys: Any, xp: Any = np) -> Any:
    """The semitones that move each key to C major or A minor (its relative major's
    tonic to C, the nearer way: -6..+5); 0 for NO_KEY. keys: key indices, a density
    bin folded in or not. xp: the array module (numpy, jax.numpy, tf.experimental.numpy)."""
    key = keys % NUM_KEYS
    tonic = xp.where(key < 12, key % 12, (key % 12 + 3) % 12)
    return xp.where(key == NO_KEY, 0, xp.where(tonic <= 6, -tonic, 12 - tonic))


def to_common_key(
    windows: np.ndarray, keys: np.ndarray, tables: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each window moved to the common key of its key (`common_shift`), a window one of
    whose ids has no such transposition in the vocabulary left where it is.

    Args:
      windows: int32[R, T] ids.
      keys: int32[R] each window's key index (as the batches hold it).
      tables: int32[2S + 1, V] `codec.transpose_table` of shifts -S..S (S >= 6).

    Returns:
      (the moved windows int32[R, T], their keys int32[R], the shift applied int64[R]).
    """
    center = tables.shape[0] // 2
    shift = np.asarray(common_shift(np.asarray(keys, np.int64)), np.int64)
    moved = tables[center + shift[:, None], windows]
    movable = (moved >= 0).all(axis=1)
    shift = np.where(movable, shift, 0)
    windows = np.where(movable[:, None], moved, windows).astype(np.int32)
    return windows, np.asarray(transposed(np.asarray(keys, np.int64), shift), np.int32), shift


def from_common_key(tokens: np.ndarray, shift: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Written ids moved back from the common key (`to_common_key`'s shift undone): a
    pseudo-note whose move back is not in the vocabulary goes an octave further the
    nearer way (down for a move up, up for a move down), and stays as written if that
    is not in it either.

    Args:
      tokens: int32[R, T] ids written in the common key.
      shift: int64[R] the shift each row was moved by.
      tables: int32[2S + 1, V] as `to_common_key`, S >= 12.
    """
    center = tables.shape[0] // 2
    back = -np.asarray(shift, np.int64)[:, None]
    out = tables[center + back, tokens]
    octave = tables[center + back - 12 * np.sign(back + (back == 0)), tokens]
    out = np.where(out >= 0, out, np.where(octave >= 0, octave, tokens))
    return out.astype(np.int32)
