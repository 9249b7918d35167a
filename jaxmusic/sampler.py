"""The jitted sampling loop: encode a primer, then write notes phrase by phrase.

One call generates `num_phrases * phrase_len` tokens for a batch of primers:
  for each phrase (an outer lax.scan):
    the encoder reads the last `encoder_len` tokens (primer, then what was written);
    the decoder starts from its states with the last token as input and writes
    `phrase_len` tokens, one `decode_step` at a time (an inner lax.scan).
With `carry_state`, the encoder reads the primer once and the decoder's states go on
from phrase to phrase instead (one decoder step a note, no re-encoding): the memory
of the whole sample, at half the work when encoder_len == phrase_len.
A sampler made with `encode_from` (a model trained on carried windows) re-encodes
as trained: the encoder reads the primer, then each written phrase from where it
stopped, so each phrase starts from the whole sample so far.
Each token is drawn from the logits with greedy, temperature, top-k and top-p
(nucleus) sampling; PAD, BOS, UNK and genre ids are never drawn; after EOS a row
writes only PAD. With `untempered_rhythm`, a note's onset gap (or EOS) is drawn first
from the model's own distribution, and temperature, top-k and top-p then choose only
among the pseudo-notes of that gap (`rhythm_groups`); with `untempered_instruments`, the
note's instrument too (`instrument_groups`). The uniforms that draw the
tokens of a call are drawn at once from its key before the loop (one random-number
program per call, not one per note), so a call is a pure function of its key.
`inference.Generator` drives it: primers in batches, conditions, longer samples.

The sampling mode (greedy or drawn, the top-k count, nucleus filtering on or off) is
static: each mode compiles its own program, with no per-note branch on a setting (a
`lax.cond` on a traced flag at every note is a device-to-host round trip per note on
a GPU). Temperature and top_p are traced: a new value does not recompile; a new
mode, batch, primer length or note count does.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmusic import codec as codec_lib
from jaxmusic import lookback, recent
from jaxmusic.conditioning import Condition
from jaxmusic.errors import UsageError

NEG_INF = -1e30

EncodeFn = Callable[[Any, jax.Array, Condition], Any]  # (params, tokens[B, Te], cond) -> carries
EncodeFromFn = Callable[[Any, Any, jax.Array, Condition], Any]  # (params, carries, tokens, cond) -> carries
# (params, carries, token[B], cond[, lookback (notes[B], buckets[B])]) -> (carries, logits[B, V])
StepFn = Callable[..., tuple[Any, jax.Array]]
# (window int32[B, Te], cond) -> the condition complete (what the window tells, in compiled code)
CompleteFn = Callable[[jax.Array, Condition], Condition]


def filter_logits(logits: jax.Array, top_k: int, top_p: jax.Array | float | None) -> jax.Array:
    """Masks logits outside the top k and outside the nucleus of mass top_p.

    Args:
      logits: float32[B, V] (already divided by the temperature).
      top_k: keep the k largest (0: all); static. Ties at the k-th value are kept.
      top_p: keep the smallest set of largest-probability ids whose mass reaches
        top_p; the most probable id is always kept. None (or a Python number >= 1):
        no nucleus filter.

    Returns:
      float32[B, V], masked entries at NEG_INF.
    """
    v = logits.shape[-1]
    nucleus = top_p is not None and not (isinstance(top_p, int | float) and top_p >= 1.0)
    if top_k > 0:
        # lax.top_k finds the k largest without sorting the vocabulary, and gives
        # them in descending order: a nucleus then needs no sort of its own.
        ordered = lax.top_k(logits, min(top_k, v))[0]
        logits = jnp.where(logits >= ordered[:, -1:], logits, NEG_INF)
        if not nucleus:
            return logits
        # Mass of the ids ranked above each; ids past the top k have no mass.
        probs = jax.nn.softmax(ordered, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs
        n_keep = (before < top_p).sum(-1, keepdims=True)  # rank 0 always kept
        threshold = jnp.take_along_axis(ordered, n_keep - 1, axis=-1)
        return jnp.where(logits >= threshold, logits, NEG_INF)
    if not nucleus:
        return logits
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.where(probs >= nucleus_threshold(probs, top_p), logits, NEG_INF)


def nucleus_threshold(probs: jax.Array, top_p: jax.Array | float, iterations: int = 24) -> jax.Array:
    """float32[B, 1]: the smallest probability (of probs float32[B, V]) the nucleus of mass
    top_p keeps.

    The nucleus is {ids whose probability >= t} for the largest t whose set still
    holds top_p of the mass (that set is the smallest reaching top_p, ties kept). The
    mass above t only falls as t grows, so t is found by bisection over [0, max
    probability]: `iterations` masked sums over the vocabulary instead of a sort of
    it (a sort per note took most of a sampled note's time on a CPU; docs/performance.md).
    Exact but for probabilities within max_prob / 2^iterations of the threshold.
    """
    top = probs.max(-1, keepdims=True)

    def mass_from(t):
        return jnp.where(probs >= t, probs, 0.0).sum(-1, keepdims=True)

    def halve(_, bounds):
        lo, hi = bounds  # mass_from(lo) >= top_p throughout
        mid = (lo + hi) / 2
        ok = mass_from(mid) >= top_p
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = lax.fori_loop(0, iterations, halve, (jnp.zeros_like(top), top))
    # The most probable id alone may hold top_p; otherwise the smallest probability at
    # or above lo is the threshold (lo itself may fall between two probabilities).
    kept_min = jnp.where(probs >= lo, probs, jnp.inf).min(-1, keepdims=True)
    return jnp.where(mass_from(top) >= top_p, top, kept_min)


def uniforms(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """float32[shape] uniform in (0, 1): what `next_token` draws with (0 excluded, so an
    id of probability 0 is never drawn)."""
    return jax.random.uniform(key, shape, minval=jnp.finfo(jnp.float32).tiny)


def next_token(
    logits: jax.Array,
    u: jax.Array,
    *,
    temperature: jax.Array | float,
    top_k: int,
    top_p: jax.Array | float | None,
    greedy: bool,
    banned: jax.Array,
    groups: Sequence[GroupTable] = (),
    copy: jax.Array | None = None,
) -> jax.Array:
    """int32[B] tokens from float32[B, V] logits; banned: bool[V] (or [B, V]) ids never drawn;
    u: float32[B, n] `uniforms` (unused when greedy): n = 1, one more per table of groups,
    one more with copy.

    greedy and top_k are static (Python values); temperature and top_p may be traced
    (top_p None: no nucleus filter).

    groups: `GroupTable`s (of `rhythm_groups`, `instrument_groups`), in turn:
    first a group of each is drawn from the model's own distribution (temperature 1,
    nothing cut) within the groups drawn before, then the token among the ids of every
    drawn group with the temperature, top_k and top_p. Truncation and a temperature below
    1 favour whichever group concentrates its mass on few ids (in music, the notes of a
    chord: a few likely pitches at gap 0; the drums: a few sounds), so drawing every id
    at once crowds the chords and the drums; drawn this way the rhythm and who plays
    keep the model's own frequencies.

    copy: int32[B] each row's lookback note (`jaxmusic.lookback`; -1 where none): first it
    is taken or not with the model's own probability of it (temperature 1, nothing cut),
    and only otherwise is a token drawn among the rest as above. A temperature below 1 and
    truncation sharpen whatever is likely, and a lookback note is likely once a repeat has
    begun, so drawing every id at once turns repeats into loops that never end; drawn this
    way a piece repeats itself as often as the model says.
    """
    logits = jnp.where(banned, NEG_INF, logits.astype(jnp.float32))
    if greedy:
        return logits.argmax(-1).astype(jnp.int32)
    if copy is not None:
        probs = jax.nn.softmax(logits, axis=-1)
        p_copy = jnp.where(
            copy >= 0, jnp.take_along_axis(probs, jnp.maximum(copy, 0)[:, None], -1)[:, 0], 0.0
        )
        taken = u[:, 0] < p_copy
        logits = jnp.where(jnp.arange(logits.shape[-1])[None, :] == copy[:, None], NEG_INF, logits)
        rest = next_token(logits, u[:, 1:], temperature=temperature, top_k=top_k, top_p=top_p, greedy=False,
                          banned=banned, groups=groups)  # fmt: skip
        return jnp.where(taken, copy, rest).astype(jnp.int32)
    for table in groups:
        weights = jnp.exp(logits - logits.max(-1, keepdims=True))
        mass = jnp.matmul(weights, table.onehot, precision=lax.Precision.HIGHEST)  # [B, G], float32
        group = inverse_cdf(mass, u[:, :1], block=8)
        # A compare with each id's group, which fuses into the select (the drawn group's
        # column of the one-hot table is a gather and a transpose over the vocabulary).
        logits = jnp.where(table.index[None, :] == group[:, None], logits, NEG_INF)
        u = u[:, 1:]
    scaled = filter_logits(logits / temperature, top_k, top_p)
    # Inverse-CDF sampling: one uniform per row (categorical draws a Gumbel per id).
    # The weights need no normalizing: the uniform is scaled by their total.
    return inverse_cdf(jnp.exp(scaled - scaled.max(-1, keepdims=True)), u)


def inverse_cdf(weights: jax.Array, u: jax.Array, block: int = 64) -> jax.Array:
    """int32[B]: for each row, the first id whose cumulative weight exceeds u times the
    row's total (u in (0, 1)): a draw from weights float32[B, V] >= 0 for u uniform.

    The cumulative sum runs over blocks of `block` ids, then within the one block the
    draw falls in: two short prefix sums instead of one over the vocabulary (XLA:CPU
    lowers a prefix sum as a reduce_window, quadratic in its length; inside a sampling
    scan at vocabulary 2,048 a draw went from 4 to 2 us at batch 1 and from 44 to 38 us
    at batch 64: docs/performance.md). An id of weight 0 is never drawn (u > 0).
    """
    b, v = weights.shape
    blocks = jnp.pad(weights, ((0, 0), (0, -v % block))).reshape(b, -1, block)
    sums = blocks.sum(-1)  # [B, V / block]
    ends = jnp.cumsum(sums, -1)
    target = u * ends[:, -1:]  # <= the total, so block j holds a non-zero weight
    j = (ends < target).sum(-1, keepdims=True)
    rest = target - jnp.take_along_axis(ends - sums, j, -1)  # the mass to go within block j
    inner = jnp.cumsum(jnp.take_along_axis(blocks, j[:, :, None], 1)[:, 0], -1)  # [B, block]
    # The block's own cumulative sum may round below `rest`: capped at its total, the
    # index stays at or before the block's last non-zero weight. One count of the
    # capped target (counts are monotone in it), not the smaller of two counts: the
    # same index in fewer kernels.
    i = (inner < jnp.minimum(rest, inner[:, -1:])).sum(-1)
    return (j[:, 0] * block + i).astype(jnp.int32)


def banned_ids(vocab_size: int, first_note_id: int) -> jax.Array:
    """bool[V]: every id below the first pseudo-note except EOS."""
    ids = jnp.arange(vocab_size)
    return (ids < first_note_id) & (ids != codec_lib.EOS)


@dataclasses.dataclass(frozen=True, eq=False)
class GroupTable:
    """Groups of ids for an untempered draw (`next_token`): the one-hot table float32[V, G]
    and each id's group int32[V], the same made once in numpy (an argmax of a constant
    table inside a compiled program is folded by XLA at every compile: seconds at a band
    vocabulary of 18,246 ids)."""

    onehot: jax.Array
    index: jax.Array

    @classmethod
    def of(cls, onehot: Any) -> GroupTable:
        table = np.asarray(onehot, np.float32)
        return cls(jnp.asarray(table), jnp.asarray(table.argmax(1).astype(np.int32)))


def rhythm_groups(codec: codec_lib.Codec) -> np.ndarray:
    """float32[V, G] one-hot: each id's group for `untempered_rhythm`: a pseudo-note's
    onset-gap bin (its duration bin for a codec without onsets), EOS a group of its own,
    the other special ids (never drawn) one more."""
    rows = np.asarray(codec.vocabulary, np.int64)
    column = rows[:, 3] if codec.has_onsets else rows[:, 2]
    bins = int(column.max()) + 1 if column.size else 0
    group = np.full(codec.vocab_size, bins + 1)  # special ids
    group[codec_lib.EOS] = bins
    group[codec.first_note_id + np.arange(rows.shape[0])] = column
    return np.eye(bins + 2, dtype=np.float32)[group]


def instrument_groups(instruments: np.ndarray) -> np.ndarray | None:
    """float32[V, K + 1] one-hot: each id's instrument of an `instrument_table` int32[V],
    the special ids (EOS among them) a group of their own; None for one instrument (a
    merged codec: nothing to draw), for `Settings.untempered_instruments`."""
    count = int(np.max(instruments)) + 1
    if count <= 1:
        return None
    return np.eye(count + 1, dtype=np.float32)[np.where(instruments < 0, count, instruments)]


def instrument_table(codec: codec_lib.Codec) -> np.ndarray:
    """int32[V]: each id's instrument index (`codec.Instruments`), -1 for the special and
    genre ids: what `Settings.primer_instruments` reads of a primer."""
    table = np.full(codec.vocab_size, -1, np.int32)
    table[codec.first_note_id :] = codec.vocabulary[:, 4]
    return table


# Which instruments an evaluation's sample plays (`config.sampling.line_up`): as the
# settings say (with `primer_instruments`, the primer's), or every one its piece plays.
LINE_UPS = ("primer", "piece")


def outside_line_up(line_up: jax.Array, table: np.ndarray) -> jax.Array:
    """bool[B, V]: the pseudo-notes of instruments outside each row's line-up.

    Args:
      line_up: bool[B, K] the instruments each row plays (K: the codec's instrument count).
      table: int32[V] `instrument_table` (numpy: its size is static).
    """
    table = jnp.asarray(table)
    return (table >= 0)[None, :] & ~jnp.take(line_up, jnp.maximum(table, 0), axis=1)


def primer_line_up(window: jax.Array, table: np.ndarray) -> jax.Array:
    """bool[B, K]: the instruments some note of each row's window plays, every one for a
    window without notes: `Settings.primer_instruments`'s line-up.

    Args:
      window: int32[B, T] ids; table: int32[V] `instrument_table` (numpy: its size is static).
    """
    count = int(np.max(table)) + 1
    played = jax.nn.one_hot(jnp.asarray(table)[window], count, dtype=jnp.bool_).any(axis=1)  # -1: no class
    return played | ~played.any(axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How notes are drawn; checked when made. `Settings()` draws from the model's own
    distribution; a run's chosen settings are its config's `sampling` (`from_config`).

    temperature: > 0, divides the logits; top_k: draw among the k largest (0: all);
    top_p: nucleus mass in (0, 1] (1: none); greedy: always the most probable id;
    carry_state: the decoder goes on from phrase to phrase instead of starting again
    from a re-encoding of the last notes (`Sampler`); fixed_length: EOS is never
    drawn, so a sample has exactly the notes asked for; min_notes: EOS is not drawn
    before this many notes (1: a continuation is never empty); untempered_rhythm: each
    note's onset gap (or EOS) is drawn from the model's own distribution and the
    temperature, top_k and top_p choose only among the pseudo-notes of that gap
    (`next_token`; a sampler made with `rhythm_groups`); untempered_copy: for a model with
    a lookback, each step's lookback note is taken with the model's own probability of it,
    and the temperature, top_k and top_p choose among the rest (`next_token`);
    primer_instruments: only the instruments that play in a row's primer play on (a codec
    with instruments; `primer_line_up`), as a band keeps its line-up, unless the call
    names each row's line-up (`Sampler`); untempered_instruments:
    each note's instrument (after its onset gap, with untempered_rhythm) is drawn from the
    model's own distribution and the temperature, top_k and top_p choose among that
    instrument's notes (a codec with instruments; `instrument_groups`; none to draw for
    a merged codec).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    carry_state: bool = False
    fixed_length: bool = False
    min_notes: int = 1
    untempered_rhythm: bool = False
    untempered_copy: bool = False
    primer_instruments: bool = False
    untempered_instruments: bool = False

    def __post_init__(self):
        if not self.temperature > 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UsageError(f"top_k must be >= 0, got {self.top_k}")
        if self.min_notes < 0:
            raise UsageError(f"min_notes must be >= 0, got {self.min_notes}")

    @classmethod
    def from_config(cls, sampling: Any, **overrides: Any) -> Settings:
        """The settings of a config's `sampling` fields, with `overrides` (None: kept)."""
        fields = {f.name: sampling[f.name] for f in dataclasses.fields(cls)}
        return cls(**(fields | {k: v for k, v in overrides.items() if v is not None}))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Mode:
    """What a compiled sampler does (static: one program per mode). Everything of
    `Settings` but the temperature and top_p, which are traced (a new value does not
    recompile); nucleus: whether top_p < 1 (filtering on at all)."""

    greedy: bool = False
    top_k: int = 0
    nucleus: bool = False
    carry_state: bool = False
    fixed_length: bool = False
    min_notes: int = 0
    untempered_rhythm: bool = False
    untempered_copy: bool = False
    primer_instruments: bool = False
    untempered_instruments: bool = False

    @classmethod
    def of(cls, settings: Settings) -> Mode:
        rest = dict(carry_state=settings.carry_state, fixed_length=settings.fixed_length,
                    min_notes=0 if settings.fixed_length else settings.min_notes,
                    primer_instruments=settings.primer_instruments)  # fmt: skip
        if settings.greedy:
            return cls(greedy=True, **rest)
        return cls(top_k=settings.top_k, nucleus=settings.top_p < 1.0,
                   untempered_rhythm=settings.untempered_rhythm, untempered_copy=settings.untempered_copy,
                   untempered_instruments=settings.untempered_instruments, **rest)  # fmt: skip


class Sampler:
    """`sampler(params, window, cond, rng, settings, history)` -> int32[B, num_phrases *
    phrase_len] written tokens (PAD after an EOS).

    Args of a call:
      window: int32[B, Te] the encoder's first input (a primer, left-padded with PAD).
      cond: the `Condition` of the rows; fields left None are completed from the window
        in the compiled program (`complete`), and held for the whole call.
      rng: a PRNG key.
      settings: a `Settings`; its `Mode` picks the compiled program.
      history: for a sampler with a lookback (`lookback.Spec`), int32[B, window] the notes
        read so far, the last of them the window's last (left-padded with PAD); the
        lookback of each step follows them and every note written (`lookback.Tracker`).
      line_up: None, or bool[B, K] the instruments each row plays (a sampler made with
        `instrument_table`; K the codec's instruments): notes of the others are never
        drawn, whatever `Settings.primer_instruments` says.

    A sampler with recent counts (`recent.Spec`) counts the window's last notes, then every
    note written (`recent.Counter`), and gives each step its counts.
    """

    def __init__(self, encode: EncodeFn, step: StepFn, complete: CompleteFn | None = None, *,
                 vocab_size: int, first_note_id: int, phrase_len: int, num_phrases: int,
                 encode_from: EncodeFromFn | None = None, groups: Any = None,
                 lookback_spec: lookback.Spec | None = None, instruments: Any = None,
                 recent_spec: recent.Spec | None = None):  # fmt: skip
        self._encode, self._step, self._complete = encode, step, complete
        self._groups = None if groups is None else GroupTable.of(groups)
        self._instruments = None if instruments is None else np.asarray(instruments, np.int32)
        by_instrument = None if instruments is None else instrument_groups(self._instruments)
        self._instrument_groups = None if by_instrument is None else GroupTable.of(by_instrument)
        self._encode_from, self._lookback, self._recent = encode_from, lookback_spec, recent_spec
        self._banned = banned_ids(vocab_size, first_note_id)
        self._phrase_len, self._num_phrases = phrase_len, num_phrases
        self.notes_per_call = phrase_len * num_phrases

    def __call__(self, params, window, cond: Condition, rng, settings: Settings, history=None,
                 line_up=None) -> jax.Array:  # fmt: skip
        if settings.untempered_rhythm and not settings.greedy and self._groups is None:
            raise UsageError("untempered_rhythm needs a sampler made with `sampler.rhythm_groups`")
        for name in ("primer_instruments", "untempered_instruments"):
            if getattr(settings, name) and self._instruments is None:
                raise UsageError(f"{name} needs a sampler made with `sampler.instrument_table`")
        if line_up is not None and self._instruments is None:
            raise UsageError("a line-up needs a sampler made with `sampler.instrument_table`")
        if (history is None) != (self._lookback is None):
            raise ValueError("a sampler with a lookback takes the history, one without none")
        return self.jitted(Mode.of(settings))(params, window, cond, rng, settings.temperature, settings.top_p,
                                              history, line_up)  # fmt: skip

    @functools.cache  # noqa: B019 - one compiled program per mode, for the sampler's lifetime
    def jitted(self, mode: Mode) -> Callable[..., jax.Array]:
        """The jitted `f(params, window, cond, rng, temperature, top_p, history, line_up)` of
        one mode."""

        def sample(params, window, cond, rng, temperature, top_p, history=None, line_up=None):
            if self._complete is not None:  # e.g. the primer's key, held for the whole call
                cond = self._complete(window, cond)
            banned = self._banned.at[codec_lib.EOS].set(True) if mode.fixed_length else self._banned
            if line_up is None and mode.primer_instruments:
                line_up = primer_line_up(window, self._instruments)
            if line_up is not None:  # [B, V] from here: each row's own line-up
                banned = banned[None, :] | outside_line_up(line_up, self._instruments)
            draw = functools.partial(self._draw, mode=mode, banned=banned, temperature=temperature,
                                     top_p=top_p)  # fmt: skip
            carried_encoder = self._encode_from is not None and not mode.carry_state
            tracker = None if self._lookback is None else lookback.Tracker.of(history, self._lookback)
            counter = None if self._recent is None else recent.Counter.of(window, self._recent)

            def phrase(carry, xs):
                p, phrase_uniforms = xs
                window, done, states, (tracker, counter) = carry
                if not mode.carry_state and not carried_encoder:
                    states = self._encode(params, window, cond)
                note = functools.partial(self._note, params, cond, draw, p * self._phrase_len)
                init = (states, window[:, -1], done, (tracker, counter))
                (decoded, _, done, memory), tokens = lax.scan(note, init, (jnp.arange(self._phrase_len),
                                                                           phrase_uniforms))  # fmt: skip
                tokens = tokens.T  # [B, phrase_len]
                window = jnp.concatenate([window, tokens], axis=1)[:, -window.shape[1] :]
                # The next phrase starts from: the decoder's states (carry_state), the
                # encoder's after reading this phrase too (carried encoder), or (else) a
                # re-encoding of the window at its start.
                states = self._encode_from(params, states, tokens, cond) if carried_encoder else decoded
                return (window, done, states, memory), tokens

            if mode.carry_state or carried_encoder:  # the primer's states, read once
                states0 = self._encode(params, window, cond)
            else:  # each phrase encodes its own: a placeholder of their shape
                shapes = jax.eval_shape(self._encode, params, window, cond)
                states0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            b = window.shape[0]
            width = 1 + len(self._groups_of(mode)) + (mode.untempered_copy and self._lookback is not None)
            shape = (self._num_phrases, self._phrase_len, b, width)
            drawn = jnp.zeros(shape, jnp.float32) if mode.greedy else uniforms(rng, shape)
            done0 = jnp.zeros(b, jnp.bool_)
            _, phrases = lax.scan(
                phrase, (window, done0, states0, (tracker, counter)), (jnp.arange(self._num_phrases), drawn)
            )
            return jnp.transpose(phrases, (1, 0, 2)).reshape(b, -1)

        return jax.jit(sample)

    def _note(self, params, cond, draw, written_before, carry, xs):
        """One note of the inner scan: carry (decoder states, previous token, done, (lookback
        tracker or None, recent counter or None)), xs (the note's index in its phrase, its
        uniforms)."""
        t, u = xs
        states, prev, done, (tracker, counter) = carry
        copy, step = None, None
        if tracker is not None:
            note, bucket = tracker.lookback(self._lookback)
            step, copy = (note, bucket), jnp.where(bucket > 0, note, -1)
        extra = {} if counter is None else {"recent_counts": counter.counts}
        args = () if step is None else (step,)
        states, logits = self._step(params, states, prev, cond, *args, **extra)
        token = jnp.where(done, codec_lib.PAD, draw(logits, u, written_before + t, copy))
        done = done | (token == codec_lib.EOS)
        if tracker is not None:
            tracker = tracker.read(token, self._lookback)
        if counter is not None:
            counter = counter.read(token, self._recent)
        return (states, jnp.where(token == codec_lib.PAD, prev, token), done, (tracker, counter)), token

    def _draw(self, logits, u, written, copy, *, mode: Mode, banned, temperature, top_p) -> jax.Array:
        """int32[B] tokens of logits float32[B, V] in a mode (`next_token`; banned: bool[V] or
        [B, V] the call's banned ids; copy: each row's lookback note, -1 where none, or None); EOS
        waits for the first min_notes notes, written counting this one's index (a select,
        not a branch)."""
        if mode.min_notes:
            banned = banned | ((jnp.arange(banned.shape[-1]) == codec_lib.EOS) & (written < mode.min_notes))
        return next_token(logits, u, temperature=temperature, top_k=mode.top_k,
                          top_p=top_p if mode.nucleus else None, greedy=mode.greedy, banned=banned,
                          groups=self._groups_of(mode),
                          copy=copy if mode.untempered_copy else None)  # fmt: skip

    def _groups_of(self, mode: Mode) -> tuple[GroupTable, ...]:
        """The group tables a mode draws from the model's own distribution, in turn (none
        for a greedy mode: `Mode.of` leaves its untempered draws off)."""
        tables = (self._groups if mode.untempered_rhythm else None,
                  self._instrument_groups if mode.untempered_instruments else None)  # fmt: skip
        return tuple(t for t in tables if t is not None)


def make_sampler(
    encode: EncodeFn,
    step: StepFn,
    complete: CompleteFn | None = None,
    *,
    vocab_size: int,
    first_note_id: int,
    phrase_len: int,
    num_phrases: int,
    encode_from: EncodeFromFn | None = None,
    groups: Any = None,
    lookback_spec: lookback.Spec | None = None,
    instruments: Any = None,
    recent_spec: recent.Spec | None = None,
) -> Sampler:
    """A `Sampler`: encode a primer, then write `num_phrases` phrases of `phrase_len` notes.

    complete: (window, cond) -> the condition the model reads, made once from the
    primer's window in the compiled program (None: `cond` as given). encode_from: the
    encoder going on from given states (carried windows: the encoder reads each phrase
    once). groups: `rhythm_groups` float32[V, G], for `Settings.untempered_rhythm`.
    lookback_spec: the model's lookback (`lookback.Spec`): step then takes each note's.
    instruments: `instrument_table` int32[V], for `Settings.primer_instruments`.
    recent_spec: the model's recent counts (`recent.Spec`): step then takes each note's.
    """
    return Sampler(encode, step, complete, vocab_size=vocab_size, first_note_id=first_note_id,
                   phrase_len=phrase_len, num_phrases=num_phrases, encode_from=encode_from,
                   groups=groups, lookback_spec=lookback_spec, instruments=instruments,
                   recent_spec=recent_spec)  # fmt: skip


def model_functions(model: Any, conditioner: Any) -> tuple[EncodeFn, StepFn, CompleteFn, EncodeFromFn]:
    """A `models.Seq2Seq`'s encode, decode_step, the completion of its condition from a
    window (`conditioning.Conditioner.of_window_jax` where a field is not given) and its
    encoder going on from given states, as the plain functions `make_sampler` takes."""

    def encode(params, tokens, cond):
        return model.apply({"params": params}, tokens, cond, method=type(model).encode)

    def step(params, carries, token, cond, lookback_step=None, recent_counts=None):
        return model.apply({"params": params}, carries, token, cond, lookback_step, recent_counts,
                           method=type(model).decode_step)  # fmt: skip

    def complete(window, cond):
        needs = (model.num_keys and cond.key is None) or (model.num_densities and cond.density is None)
        return conditioner.of_window_jax(window, cond.genre) if needs else cond

    def encode_from(params, carries, tokens, cond):
        return model.apply({"params": params}, tokens, cond, initial=carries, method=type(model).encode)

    return encode, step, complete, encode_from


def primer_window(ids: jax.Array | list[int], encoder_len: int) -> list[int]:
    """The encoder input for a primer of note ids: [PAD ...] + [BOS] + ids, last Te kept."""
    seq = [codec_lib.BOS, *(int(i) for i in ids)]
    seq = seq[-encoder_len:]
    return [codec_lib.PAD] * (encoder_len - len(seq)) + seq
