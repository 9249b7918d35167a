"""What the piece played lately: at each note, how often each pitch (on its instrument)
sounded in the last notes read, a model input that keeps a part on its own pitches.

A band's part keeps to a few pitches (a bass line, a riff, a drum kit's few sounds). At
each decoder step the model reads, for every pitch on every instrument (`codec.factors`
part 0: its group), how many of the last `notes` notes read (the step's input the last
of them) were of it, and adds to each id's logit a learned amount of its group's count
(`models.Seq2Seq`): a neural cache (Grave et al., 2017) over pitches, within each
instrument (each instrument's share of the next note stays the model's own: a cache that
raised the ids of a part that plays much, the drums, made that part play more). Only notes count;
a non-note id is in a group of its own that never counts. Where the next note could
complete a loop (`lookback.loop_run`: a figure of up to LOOP_PERIOD notes on its
LOOP_REPEATS-th playing), the model reads no counts, as it reads no lookback there: a
model that raises what it just played, fed its own notes, would otherwise play a figure
over and over.

Both sides compute the same thing:
- `counts` (JAX): every decoder step's counts of a teacher-forced window at once (one
  product), for training and evaluation;
- `Counter` (JAX): the sampler's fixed-size carry (the last `notes` groups read and their
  counts), updated note by note.
They are tested equal.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxmusic import lookback

# The notes the loop rule reads: LOOP_REPEATS playings of a figure of LOOP_PERIOD, less one.
LOOP_SPAN = lookback.LOOP_REPEATS * lookback.LOOP_PERIOD - 1


@dataclasses.dataclass(frozen=True, eq=False)  # an array field: compared by identity
class Spec:
    """A model's recent counts: over the last `notes` notes read, in `num_groups` groups,
    each id's group int32[V] in `groups` (`num_groups` for a non-note)."""

    notes: int
    groups: np.ndarray

    @property
    def num_groups(self) -> int:
        return int(self.groups.max())


def groups(factors: np.ndarray, first_note_id: int) -> np.ndarray:
    """int32[V, 2]: of each id, its group (column 0: a note's pitch on its instrument, part 0
    of `codec.factors` int32[V, 5]; one group past them for every other id) and its
    instrument, numbered from 0 (column 1, from part 4; the non-notes one of their own)."""
    rows = np.asarray(factors, np.int64)
    notes = np.arange(rows.shape[0]) >= first_note_id
    size = int(rows[notes, 0].max()) + 1 if notes.any() else 0
    instrument = np.unique(rows[:, 4], return_inverse=True)[1].reshape(-1)
    return np.stack([np.where(notes, rows[:, 0], size), instrument], axis=1).astype(np.int32)


def _onehot(group: jax.Array, num_groups: int) -> jax.Array:
    """float32[..., G] of int group ids (num_groups, a non-note's: all zeros)."""
    return (group[..., None] == jnp.arange(num_groups)).astype(jnp.float32)


def loop_ahead(read: jax.Array, spec: Spec) -> jax.Array:
    """bool[B, S]: at each position of the notes read int32[B, S], whether they end
    `lookback.loop_run(d)` notes equal to the notes d before, for some lag d <= LOOP_PERIOD
    (the next note could complete a loop; `lookback.prefix` counts the same runs)."""
    note = jnp.take(jnp.asarray(spec.groups), read) < spec.num_groups
    ahead = jnp.zeros(read.shape, bool)
    for d in range(1, lookback.LOOP_PERIOD + 1):
        length = lookback.loop_run(d)
        if length > read.shape[1] - d:
            break
        equal = jnp.pad((read[:, d:] == read[:, :-d]) & note[:, d:], ((0, 0), (d, 0)))  # against d before
        breaks = jnp.cumsum(~equal, axis=1)
        before = jnp.pad(breaks, ((0, 0), (length, 0)))[:, : read.shape[1]]  # breaks up to `length` back
        ahead = ahead | (breaks == before)  # no break in the last `length` (one before d: a break)
    return ahead


def counts(encoder_tokens: jax.Array, decoder_inputs: jax.Array, spec: Spec, dtype: Any = jnp.float32
           ) -> jax.Array:  # fmt: skip
    """float32[B, Td, G]: at each decoder step, each group's count over the last
    `spec.notes` notes read (<= Te: a window holds them all), of a window's tokens
    (int32[B, Te] and int32[B, Td], the decoder's first input the encoder's last token);
    zeros where the next note could complete a loop (`loop_ahead`).
    dtype: the product's input type (zeros and ones, exact in bfloat16; summed in float32)."""
    te, td = encoder_tokens.shape[1], decoder_inputs.shape[1]
    read = jnp.concatenate([encoder_tokens, decoder_inputs[:, 1:]], axis=1)  # [B, Te + Td - 1]
    position, newest = np.arange(te + td - 1), te - 1 + np.arange(td)
    window = (position <= newest[:, None]) & (position > newest[:, None] - spec.notes)  # [Td, S]
    onehot = _onehot(jnp.take(jnp.asarray(spec.groups), read), spec.num_groups).astype(dtype)
    out = jnp.einsum("ts,bsg->btg", jnp.asarray(window, dtype), onehot, preferred_element_type=jnp.float32)
    return jnp.where(loop_ahead(read, spec)[:, newest, None], 0.0, out)


@flax.struct.dataclass
class Counter:
    """The sampler's carry: the groups of the last `notes` notes read, oldest first
    (int32[B, notes]; a non-note's group before a piece's start), each group's count
    among them (float32[B, G]), the last LOOP_SPAN ids read (int32[B, LOOP_SPAN], PAD
    before a piece's start) and whether the next note could complete a loop (bool[B])."""

    last: jax.Array
    all_counts: jax.Array
    tail: jax.Array
    looping: jax.Array

    @property
    def counts(self) -> jax.Array:
        """float32[B, G]: what the model reads, `counts`' at this step (zeros where the next
        note could complete a loop)."""
        return jnp.where(self.looping[:, None], 0.0, self.all_counts)

    @classmethod
    def of(cls, tokens: jax.Array, spec: Spec) -> Counter:
        """The carry after reading tokens int32[B, T] (PAD-padded on the left)."""
        group = jnp.take(jnp.asarray(spec.groups), tokens[:, -spec.notes :])
        last = jnp.pad(group, ((0, 0), (spec.notes - group.shape[1], 0)), constant_values=spec.num_groups)
        tail = tokens[:, -LOOP_SPAN:]
        tail = jnp.pad(tail, ((0, 0), (LOOP_SPAN - tail.shape[1], 0)), constant_values=0)  # PAD
        return cls(last, _onehot(last, spec.num_groups).sum(axis=1), tail, loop_ahead(tail, spec)[:, -1])

    def read(self, token: jax.Array, spec: Spec) -> Counter:
        """The carry after one more note, token int32[B]."""
        group = jnp.take(jnp.asarray(spec.groups), token)
        counts = self.all_counts + _onehot(group, spec.num_groups) - _onehot(self.last[:, 0], spec.num_groups)
        tail = jnp.concatenate([self.tail[:, 1:], token[:, None]], axis=1)
        last = jnp.concatenate([self.last[:, 1:], group[:, None]], axis=1)
        return Counter(last, counts, tail, loop_ahead(tail, spec)[:, -1])
