"""What a model is told beside the notes: the condition (genre, key, note density).

A `Condition` holds one row per example: the genre (an index into `codec.genres`),
and for a model with those inputs the Krumhansl-Schmuckler key and the note-density
bin of the notes read so far. The model adds a learned row per value to its first
layers' gates (`models.Seq2Seq`), and sampling holds the primer's values so that a
long sample keeps its primer's key and pace.

Everything about the condition lives here:
- the key estimator: the duration-weighted pitch-class distribution correlated with
  the 24 rotated Krumhansl-Kessler profiles (`key_of`, numpy; `key_of_jax`, its twin
  for compiled code, tested equal), and the density bins (`density_of`);
- `Conditioner`: a model's conditioning as its config asks (which inputs, read over
  the encoder's window or the piece so far, a common key or not), with the codec's
  per-id tables, the keys of every position of a piece (`prefix`), and the condition
  of a batch (`of_batch`) or of a sampling call (`of_tokens`);
- the common key: each key's shift to C major or A minor (`common_shift`), windows
  moved there (`to_common_key`) and written notes moved back (`from_common_key`).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxmusic import codec as codec_lib
from jaxmusic.errors import UsageError

NUM_KEYS = 25  # 0..11 major, 12..23 minor (KEY_NAMES), 24: no key to tell
NO_KEY = NUM_KEYS - 1
KEY_NAMES = tuple(f"{n} {m}" for m in ("major", "minor")
                  for n in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"))  # fmt: skip
# Krumhansl & Kessler's key profiles (probe-tone ratings, C major and C minor).
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Note density bins (notes a second; log-spaced, from a slow chorale to dense pop), and
# one more for fewer than two notes (no pace to tell).
DENSITY_EDGES = (1.5, 2.5, 3.5, 5.0, 7.0, 10.0, 14.0)
NUM_DENSITIES = len(DENSITY_EDGES) + 2
NO_DENSITY = NUM_DENSITIES - 1
CONTEXTS = ("window", "piece")
# Semitones a common-key move takes a window by lie in -6..+5; tables of shifts up to
# this many either way also cover a note moved back an octave further (`from_common_key`).
COMMON_KEY_TABLE_SHIFTS = 12


@flax.struct.dataclass
class Condition:
    """The condition of a batch: int32[B] each; key and density None for a model without them."""

    genre: jax.Array
    key: jax.Array | None = None
    density: jax.Array | None = None


# ---------------------------------------------------------------- the estimator ----


def _profiles() -> np.ndarray:
    """float32[24, 12]: the major then minor profiles rotated to each tonic, centred and
    scaled to unit length (so a dot product with a centred distribution is Pearson's r
    times that distribution's length, the same for every profile: the same argmax)."""
    p = np.stack([np.roll(profile, tonic) for profile in (KK_MAJOR, KK_MINOR) for tonic in range(12)])
    p = p - p.mean(1, keepdims=True)
    return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)


def key_of(hist: np.ndarray) -> np.ndarray:
    """int64[...]: the Krumhansl-Schmuckler key of duration-weighted pitch-class
    distributions float[..., 12] (NO_KEY where fewer than two pitch classes sound)."""
    hist = np.asarray(hist, np.float64)
    score = (hist - hist.mean(-1, keepdims=True)) @ _profiles().astype(np.float64).T
    return np.where((hist > 0).sum(-1) >= 2, score.argmax(-1), NO_KEY)


def key_of_jax(hist: jax.Array) -> jax.Array:
    """`key_of` in JAX, for compiled code: int32[B] of float32[B, 12]."""
    centred = hist - hist.mean(-1, keepdims=True)
    # Pearson's r times |centred| (the same argmax), as a sum rather than a product: an
    # exact float32 reduction, not a matrix product that the precision policy would cast.
    score = (centred[:, None, :] * jnp.asarray(_profiles())[None]).sum(-1)
    return jnp.where((hist > 0).sum(-1) >= 2, score.argmax(-1), NO_KEY).astype(jnp.int32)


def density_of(notes: Any, seconds: Any, xp: Any = np) -> Any:
    """The density bin of `notes` notes over `seconds` of onset gaps (broadcast; xp: numpy
    or jax.numpy): NO_DENSITY for fewer than two notes; all at once is the densest."""
    rate = notes / xp.maximum(seconds, 1e-6)
    bins = xp.searchsorted(xp.asarray(DENSITY_EDGES, dtype=rate.dtype), rate, side="right")
    return xp.where(notes >= 2, bins, NO_DENSITY)


def id_weights(codec: codec_lib.Codec) -> np.ndarray:
    """float32[V, 14]: per id, its duration (seconds) at its pitch class [12], its onset
    gap in seconds (its duration for a codec without onsets) [1] and 1 for a note [1];
    zero rows for the special and genre ids, no pitch class for drums. Summed over ids,
    the first 12 columns are the notes' duration-weighted pitch-class distribution, the
    last two their span and count."""
    table = np.zeros((codec.vocab_size, 14), np.float32)
    rows = np.asarray(codec.vocabulary, np.int64)
    ids = codec.first_note_id + np.arange(rows.shape[0])
    drum = rows[:, 4] == codec.instruments.drums
    durations = np.asarray(codec.duration_values, np.float32)[rows[:, 2]]
    durations = np.where(drum, codec.instruments.drum_duration, durations)
    table[ids, rows[:, 0] % 12] = np.where(drum, 0.0, durations)  # a snare is not an E flat: no key weight
    table[ids, 12] = np.asarray(codec.onset_values, np.float32)[rows[:, 3]] if codec.has_onsets else durations
    table[ids, 13] = 1.0
    return table


# ---------------------------------------------------------------- a model's ----


@dataclasses.dataclass(frozen=True, eq=False)
class Conditioner:
    """A model's conditioning, as its config asks (`from_config`).

    Attributes:
      key: the model has a key input.
      density: the model has a note-density input (with the key).
      context: what the key and density read in training and evaluation: "piece"
        (the piece from its start through the encoder's last note) or "window" (the
        encoder's notes only, estimated in the compiled step).
      weights: `id_weights` of the codec, or None (no codec: no key is ever told).
      common_key: transposition tables int32[2S + 1, V] (`codec.transpose_tables`, S =
        COMMON_KEY_TABLE_SHIFTS) when every window is moved to C major or A minor by its
        key, else None.
    """

    key: bool = False
    density: bool = False
    context: str = "window"
    weights: np.ndarray | None = None
    common_key: np.ndarray | None = None

    def __post_init__(self):
        if self.common_key is not None and self.common_key.shape[0] < 13:
            raise ValueError("a common key needs transposition tables of at least 6 semitones either way")

    @classmethod
    def from_config(cls, config: Any, codec: codec_lib.Codec | None) -> Conditioner:
        """The conditioning of a complete config (`run_config.complete`); codec None: the
        ids have no known notes (synthetic benchmarks), so no key is ever told."""
        m = config.model
        common = None
        if config.common_key and codec is not None:
            common = codec.transpose_tables(COMMON_KEY_TABLE_SHIFTS, nearest=config.transpose_nearest)
        weights = id_weights(codec) if m.key_input and codec is not None else None
        return cls(key=m.key_input, density=m.density_input, context=m.key_context, weights=weights,
                   common_key=common)  # fmt: skip

    @property
    def in_batches(self) -> bool:
        """Whether batches carry each window's key and density of its piece so far."""
        return self.key and self.context == "piece" and self.weights is not None

    def of_batch(self, batch: dict) -> Condition:
        """The condition of a batch (`batching`): its fields, or for the window context the
        key and density of each encoder window (`key_of_jax`, in the compiled step)."""
        if not self.key:
            return Condition(batch["genre"])
        if "key" in batch:
            return Condition(batch["genre"], batch["key"], batch["density"] if self.density else None)
        return self.of_window_jax(batch["encoder_tokens"], batch["genre"])

    def of_window_jax(self, tokens: jax.Array, genre: jax.Array) -> Condition:
        """The condition of int32[B, T] token windows, in compiled code."""
        if not self.key:
            return Condition(genre)
        if self.weights is None:
            fill = jnp.full(tokens.shape[:1], NO_KEY, jnp.int32)
            return Condition(genre, fill, jnp.full_like(fill, NO_DENSITY) if self.density else None)
        sums = jnp.take(jnp.asarray(self.weights), tokens, axis=0, mode="clip").sum(1)  # [B, 14]
        density = density_of(sums[:, 13], sums[:, 12], xp=jnp).astype(jnp.int32) if self.density else None
        return Condition(genre, key_of_jax(sums[:, :12]), density)

    def of_tokens(self, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
        """(key int32[R], density int32[R]) of each row of ids read so far (numpy), or None
        for a model that does not read them from the piece (its condition then comes from
        the window, in compiled code)."""
        if not self.in_batches:
            return None
        sums = np.stack([self.weights[np.asarray(r, np.int64)].astype(np.float64).sum(0) for r in rows])
        return key_of(sums[:, :12]).astype(np.int32), density_of(sums[:, 13], sums[:, 12]).astype(np.int32)

    def prefix(self, flat: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys uint8[N], densities uint8[N]): at each position of `flat` (int32[N], pieces
        laid end to end, piece i from `starts[i]` to the next start), the key and density
        of its piece's notes from the piece's start through that position: what a window's
        last encoder position gives as its condition. Numpy, one piece at a time, so that
        memory follows the longest piece, not the corpus.

        Raises:
          ValueError: an id is outside the vocabulary of the codec.
        """
        weights = self.weights
        if flat.size and (flat.min() < 0 or flat.max() >= weights.shape[0]):
            raise ValueError(
                f"ids {int(flat.min())}..{int(flat.max())} are outside the codec's vocabulary of "
                f"{weights.shape[0]} (a dataset encoded with another codec.json?)"
            )
        keys = np.full(flat.shape[0], NO_KEY, np.uint8)
        densities = np.full(flat.shape[0], NO_DENSITY, np.uint8)
        bounds = np.append(np.asarray(starts, np.int64), flat.shape[0])
        for lo, hi in itertools.pairwise(bounds):
            sums = np.cumsum(weights[flat[lo:hi]], axis=0, dtype=np.float64)  # [n, 14]
            keys[lo:hi] = key_of(sums[:, :12])
            densities[lo:hi] = density_of(sums[:, 13], sums[:, 12])
        return keys, densities


# ---------------------------------------------------------------- keys moved ----


def transposed(keys: Any, shift: Any) -> Any:
    """Keys moved by `shift` semitones (broadcast; numpy), NO_KEY kept: for windows transposed."""
    moved = (keys % 12 + shift) % 12 + (keys // 12) * 12
    return np.where(keys == NO_KEY, keys, moved)


def common_shift(keys: Any) -> Any:
    """The semitones that move each key to C major or A minor (its relative major's
    tonic to C, the nearer way: -6..+5); 0 for NO_KEY."""
    keys = np.asarray(keys)
    tonic = np.where(keys < 12, keys % 12, (keys % 12 + 3) % 12)
    return np.where(keys == NO_KEY, 0, np.where(tonic <= 6, -tonic, 12 - tonic))


def move(windows: np.ndarray, shift: np.ndarray, tables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each window transposed by its shift, a window one of whose ids has no such
    transposition in the vocabulary left where it is: the one transposition of training
    windows, evaluation windows and sampling primers.

    Args:
      windows: int32[R, T] ids.
      shift: int[R] semitones, within the tables' -S..S.
      tables: int32[2S + 1, V] `codec.transpose_tables(S)`.

    Returns:
      (the moved windows int32[R, T], the shift applied int64[R]: 0 where left).
    """
    shift = np.asarray(shift, np.int64)
    moved = tables[tables.shape[0] // 2 + shift[:, None], windows]
    movable = (moved >= 0).all(axis=1)
    return np.where(movable[:, None], moved, windows).astype(np.int32), np.where(movable, shift, 0)


def to_common_key(
    windows: np.ndarray, keys: np.ndarray, tables: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each window moved to the common key of its key (`common_shift`, `move`).

    Args:
      windows: int32[R, T] ids; keys: int[R] each window's key; tables: as `move`, S >= 6.

    Returns:
      (the moved windows int32[R, T], their keys int32[R], the shift applied int64[R]).
    """
    keys = np.asarray(keys, np.int64)
    windows, shift = move(windows, common_shift(keys), tables)
    return windows, np.asarray(transposed(keys, shift), np.int32), shift


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


def check(config: Any) -> None:
    """The cross-field rules of the conditioning in a config (`run_config.validate`).

    Raises:
      UsageError: naming the config fields.
    """
    m = config.model
    if m.key_context not in CONTEXTS:
        raise UsageError(f"config.model.key_context {m.key_context!r} is not one of {', '.join(CONTEXTS)}")
    if m.density_input and not m.key_input:
        raise UsageError(
            "config.model.density_input needs config.model.key_input (the density rides on the key's input)"
        )
    if not config.common_key:
        return
    if not m.key_input or m.key_context != "piece":
        raise UsageError("config.common_key needs model.key_input=True and model.key_context='piece'")
    if config.transpose:
        raise UsageError(
            f"config.common_key moves every window to C major or A minor; config.transpose="
            f"{config.transpose} would move it away again: set transpose=0"
        )
    if config.carried_windows:
        raise UsageError("config.common_key moves each window by its own key: not with carried_windows")
