"""What the music played before: at each note, the continuation of its longest earlier
match, a model input that lets a piece come back to its own material.

Music returns to its own material (a motif, a riff, a chorus). At position t of a
piece, the notes read so far end with some run that occurred before: the longest such
run (up to MAX_MATCH notes, the most recent among equals), ending at an earlier
position j, says what came next then: the note at j + 1. That note and the run's
length (in `BUCKETS`) are the lookback of position t, a generalization of Magenta's
Lookback RNN (which looks one and two bars back) to any distance within `window` notes;
where the next note would complete a loop, or inside one, there is none (`LOOP_PERIOD`).
The model reads it beside the note (`models.Seq2Seq`) and may copy it.

Both sides compute the same thing:
- `prefix` (numpy): the lookback of every position of pieces laid end to end, for the
  windows of training and evaluation (`windows`);
- `Tracker` (JAX, for compiled code): a fixed-size carry (the last `window` notes and
  the run length ending at each) that the sampler updates note by note.
They are tested equal.
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

MAX_MATCH = 32  # runs are counted up to this many notes
# Where the next note would complete a loop (a figure of at most LOOP_PERIOD notes played
# LOOP_REPEATS times in a row, as `evaluation.form` counts one) or the notes so far are in
# one, there is no lookback: its match would be the loop itself, and a model that copies
# it writes the loop (`loop_run`).
LOOP_PERIOD, LOOP_REPEATS = 8, 4
# Run-length buckets: 0 (no earlier match), then 1, 2, 3-4, 5-8, 9-16, 17-32 notes.
BUCKET_EDGES = (1, 2, 3, 5, 9, 17)
NUM_BUCKETS = len(BUCKET_EDGES) + 1


@dataclasses.dataclass(frozen=True)
class Spec:
    """A model's lookback: matches end up to `window` notes back; only pseudo-notes (ids
    from `first_note_id` on) match."""

    window: int
    first_note_id: int

    @classmethod
    def of(cls, config: Any, first_note_id: int) -> Spec | None:
        """The lookback of a complete config (`run_config.complete`), None without one."""
        return cls(config.model.lookback_window, first_note_id) if config.model.lookback else None


def loop_run(lag):
    """The run of notes equal to the note `lag` before (int or array of lags <= LOOP_PERIOD)
    from which the next note may complete a loop: LOOP_REPEATS periods less one note."""
    return (LOOP_REPEATS - 1) * lag - 1


def bucket(length, xp=np):
    """The bucket of run lengths (any int array; xp: numpy or jax.numpy)."""
    return xp.searchsorted(xp.asarray(BUCKET_EDGES), length, side="right")


def moved(ids: np.ndarray, shift: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """int32[R, T] ids (lookback notes, or the notes read so far) transposed by each row's
    shift int[R] (`codec.transpose_tables` as `tables`), PAD where the move leaves the
    vocabulary: such a note matches nothing."""
    out = tables[tables.shape[0] // 2 + np.asarray(shift, np.int64)[:, None], ids]
    return np.maximum(out, codec_lib.PAD).astype(np.int32)


def prefix(
    flat: np.ndarray, starts: np.ndarray, window: int, first_note_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """The lookback of every position of pieces laid end to end.

    Args:
      flat: int32[N] pieces laid end to end, piece i from starts[i] to the next start
        (PADs and BOS around each piece match nothing).
      starts: int[P] where each piece starts in `flat`.
      window: how many notes back a match may end (the sampler's carry).
      first_note_id: the codec's first pseudo-note id (only notes match).

    Returns:
      (tokens int32[N]: at position t, the note that followed the longest earlier run
      ending at t (PAD where none), buckets uint8[N]: that run's length bucket).
    """
    out_tokens = np.zeros(flat.shape[0], np.int32)
    out_buckets = np.zeros(flat.shape[0], np.uint8)
    bounds = np.append(np.asarray(starts, np.int64), flat.shape[0])
    for lo, hi in itertools.pairwise(bounds):
        tokens, buckets = _piece(flat[lo:hi], window, first_note_id)
        out_tokens[lo:hi], out_buckets[lo:hi] = tokens, buckets
    return out_tokens, out_buckets


def _piece(x: np.ndarray, window: int, first_note_id: int) -> tuple[np.ndarray, np.ndarray]:
    """`prefix` of one piece: for each lag d (1..window), the run of equal notes ending at
    each position t between x[..t] and x[..t-d]; the longest run wins, the smallest lag
    (the most recent) among equals."""
    n = x.shape[0]
    note = x >= first_note_id  # a match runs over notes only
    best_len = np.zeros(n, np.int64)
    best_lag = np.zeros(n, np.int64)
    in_loop = np.zeros(n, bool)
    index = np.arange(n)
    for d in range(1, min(window, n - 1) + 1):
        eq = (x[d:] == x[:-d]) & note[d:]  # position t = d.. compared with t - d
        # The run of consecutive equal pairs ending at each t: t minus the last break before it.
        breaks = np.where(eq, -1, index[: n - d])
        run = index[: n - d] - np.maximum.accumulate(breaks)
        run = np.minimum(np.concatenate([np.zeros(d, np.int64), run]), MAX_MATCH)
        if d <= LOOP_PERIOD:  # the next note may make the last LOOP_REPEATS periods of d notes alike
            in_loop |= run >= loop_run(d)
        longer = run > best_len
        best_len = np.where(longer, run, best_len)
        best_lag = np.where(longer, d, best_lag)
    tokens = x[np.minimum(index - best_lag + 1, n - 1)]  # what followed the earlier run (unused for none)
    found = (best_len > 0) & (tokens >= first_note_id) & ~in_loop  # a note (not EOS), out of a loop
    length = np.where(found, best_len, 0)
    return np.where(found, tokens, codec_lib.PAD).astype(np.int32), bucket(length).astype(np.uint8)


@flax.struct.dataclass
class Tracker:
    """The sampler's carry: the last window + 1 notes read, oldest first (PAD before a
    piece's start), and at each position k the length of the run of equal notes ending
    there against the newest note, window - k notes later; int32[B, window + 1] each."""

    history: jax.Array
    runs: jax.Array

    @classmethod
    def of(cls, tokens: jax.Array, spec: Spec) -> Tracker:
        """The carry after reading tokens int32[B, T] (PAD-padded on the left)."""
        zeros = jnp.zeros((tokens.shape[0], spec.window + 1), jnp.int32)
        tracker, _ = jax.lax.scan(lambda t, x: (t.read(x, spec), None), cls(zeros, zeros), tokens.T)
        return tracker

    def read(self, token: jax.Array, spec: Spec) -> Tracker:
        """The carry after one more note, token int32[B]."""
        # Position k of the new history holds the note before position k of the old one's
        # successor: the run ending at it grows where it equals the new note.
        eq = (self.history == token[:, None]) & (token[:, None] >= spec.first_note_id)
        grown = jnp.where(eq, jnp.minimum(jnp.pad(self.runs[:, :-1], ((0, 0), (1, 0))) + 1, MAX_MATCH), 0)

        history = jnp.concatenate([self.history[:, 1:], token[:, None]], axis=1)
        return Tracker(history, jnp.concatenate([grown[:, 1:], jnp.zeros_like(grown[:, :1])], axis=1))

    def lookback(self, spec: Spec) -> tuple[jax.Array, jax.Array]:
        """(the note that followed the longest earlier run ending at the newest note, PAD
        where none: int32[B]; its length bucket int32[B])."""
        size = self.runs.shape[1]
        # runs[k] is the run ending at history[k] against the newest note; its continuation
        # is history[k + 1], which exists for k < size - 1.
        runs = self.runs[:, :-1]
        lag_order = jnp.arange(size - 1)  # larger k: more recent; argmax of (run, k) picks both
        score = runs * size + lag_order
        k = jnp.argmax(score, axis=1)
        length = jnp.take_along_axis(runs, k[:, None], axis=1)[:, 0]
        token = jnp.take_along_axis(self.history, (k + 1)[:, None], axis=1)[:, 0]
        # Lag d is position size - 1 - d: the loop rule reads the runs of lags 1 .. LOOP_PERIOD.
        lags = jnp.arange(1, LOOP_PERIOD + 1)
        in_loop = (self.runs[:, size - 1 - lags] >= loop_run(lags)).any(axis=1)
        found = (length > 0) & (token >= spec.first_note_id) & ~in_loop
        return jnp.where(found, token, codec_lib.PAD), bucket(jnp.where(found, length, 0), xp=jnp).astype(
            jnp.int32
        )
