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
among the pseudo-notes of that gap (`rhythm_groups`). The uniforms that draw the
tokens of a call are drawn at once from its key before the loop (one random-number
program per call, not one per note), so a call is a pure function of its key.

The sampling mode (greedy or drawn, the top-k count, nucleus filtering on or off) is
static: each mode compiles its own program, with no per-note branch on a setting (a
`lax.cond` on a traced flag at every note is a device-to-host round trip per note on
a GPU). Temperature and top_p are traced: a new value does not recompile; a new
mode, batch, primer length or note count does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmusic import codec as codec_lib
from jaxmusic import key_input
from jaxmusic.cli import UsageError

NEG_INF = -1e30

EncodeFn = Callable[[Any, jax.Array, Any], Any]  # (params, tokens[B, Te], genre[B]) -> carries
EncodeFromFn = Callable[[Any, Any, jax.Array, Any], Any]  # (params, carries, tokens, genre) -> carries
StepFn = Callable[[Any, Any, jax.Array, Any], tuple[Any, jax.Array]]  # -> (carries, logits[B, V])
# (window[B, Te], genre[B], known key int32[B] or None) -> encode/step's `genre`
ConditionFn = Callable[[jax.Array, jax.Array, jax.Array | None], Any]


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
    groups: jax.Array | None = None,
) -> jax.Array:
    """int32[B] tokens from float32[B, V] logits; banned: bool[V] ids never drawn;
    u: float32[B, 1] `uniforms` (unused when greedy), float32[B, 2] with groups.

    greedy and top_k are static (Python values); temperature and top_p may be traced
    (top_p None: no nucleus filter).

    groups: float32[V, G] one-hot (`rhythm_groups`): first a group is drawn from the
    model's own distribution (temperature 1, nothing cut), then the token among that
    group's ids with the temperature, top_k and top_p. Truncation and a temperature
    below 1 favour whichever group concentrates its mass on few ids (in music, the
    notes of a chord: a few likely pitches at gap 0), so drawing every id at once
    crowds the chords; drawn this way the rhythm keeps the model's own frequencies.
    """
    logits = jnp.where(banned[None, :], NEG_INF, logits.astype(jnp.float32))
    if greedy:
        return logits.argmax(-1).astype(jnp.int32)
    if groups is not None:
        weights = jnp.exp(logits - logits.max(-1, keepdims=True))
        mass = jnp.matmul(weights, groups, precision=lax.Precision.HIGHEST)  # [B, G], float32
        group = inverse_cdf(mass, u[:, :1], block=8)
        logits = jnp.where(groups.argmax(-1)[None, :] == group[:, None], logits, NEG_INF)
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


@dataclasses.dataclass(frozen=True)
class Settings:
    """How notes are drawn; checked when made (a `cli.UsageError` names the flag of the
    same name).

    temperature: > 0, divides the logits; top_k: draw among the k largest (0: all);
    top_p: nucleus mass in (0, 1] (1: none); greedy: always the most probable id;
    carry_state: the decoder goes on from phrase to phrase instead of starting again
    from a re-encoding of the last notes (`Sampler`); fixed_length: EOS is never
    drawn, so a sample has exactly the notes asked for; min_notes: EOS is not drawn
    before this many notes (1: a continuation is never empty); untempered_rhythm: each
    note's onset gap (or EOS) is drawn from the model's own distribution and the
    temperature, top_k and top_p choose only among the pseudo-notes of that gap
    (`next_token`; a sampler made with `rhythm_groups`).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    carry_state: bool = False
    fixed_length: bool = False
    min_notes: int = 1
    untempered_rhythm: bool = False

    def __post_init__(self):
        if not self.temperature > 0:
            raise UsageError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UsageError(f"--top_k must be >= 0, got {self.top_k}")
        if self.min_notes < 0:
            raise UsageError(f"--min_notes must be >= 0, got {self.min_notes}")

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

    @classmethod
    def of(cls, settings: Settings) -> Mode:
        rest = dict(carry_state=settings.carry_state, fixed_length=settings.fixed_length,
                    min_notes=0 if settings.fixed_length else settings.min_notes)  # fmt: skip
        if settings.greedy:
            return cls(greedy=True, **rest)
        return cls(top_k=settings.top_k, nucleus=settings.top_p < 1.0,
                   untempered_rhythm=settings.untempered_rhythm, **rest)  # fmt: skip


class Sampler:
    """`sampler(params, window, genre, key, settings)`.

    Args of a call:
      window: int32[B, Te] the encoder's first input (a primer, left-padded with PAD).
      genre: int32[B] genre indices.
      key: a PRNG key.
      settings: a `Settings`; its `Mode` picks the compiled program.
      known_key: int32[B] the key each row has held so far (`key_input`), for the
        condition (a model of key_context "piece": its primer's whole and what it wrote
        before); None: the condition finds it in the window.

    Returns:
      int32[B, num_phrases * phrase_len] written tokens (PAD after an EOS).
    """

    def __init__(self, encode: EncodeFn, step: StepFn, condition: ConditionFn | None = None, *,
                 vocab_size: int, first_note_id: int, phrase_len: int, num_phrases: int,
                 encode_from: EncodeFromFn | None = None, groups: Any = None):  # fmt: skip
        self._encode, self._step, self._condition = encode, step, condition
        self._groups = None if groups is None else jnp.asarray(groups, jnp.float32)
        self._encode_from = encode_from
        self._banned = banned_ids(vocab_size, first_note_id)
        self._phrase_len, self._num_phrases = phrase_len, num_phrases
        self.notes_per_call = phrase_len * num_phrases

    def __call__(self, params, window, genre, key, settings: Settings, known_key=None) -> jax.Array:
        if settings.untempered_rhythm and not settings.greedy and self._groups is None:
            raise UsageError("--untempered_rhythm needs a sampler made with `sampler.rhythm_groups`")
        return self.jitted(Mode.of(settings))(
            params, window, genre, key, settings.temperature, settings.top_p, known_key
        )

    @functools.cache  # noqa: B019 - one compiled program per mode, for the sampler's lifetime
    def jitted(self, mode: Mode) -> Callable[..., jax.Array]:
        """The jitted `f(params, window, genre, key, temperature, top_p, known_key)` of one mode."""

        def sample(params, window, genre, key, temperature, top_p, known_key=None):
            if self._condition is not None:  # e.g. the primer's key, held for the whole call
                genre = self._condition(window, genre, known_key)
            banned = self._banned.at[codec_lib.EOS].set(True) if mode.fixed_length else self._banned
            eos = jnp.arange(banned.shape[0]) == codec_lib.EOS
            groups = self._groups if mode.untempered_rhythm else None
            settings = dict(temperature=temperature, top_k=mode.top_k, top_p=top_p if mode.nucleus else None,
                            greedy=mode.greedy, groups=groups)  # fmt: skip
            done0 = jnp.zeros(window.shape[0], jnp.bool_)

            carried_encoder = self._encode_from is not None and not mode.carry_state

            def phrase(carry, xs):
                p, phrase_uniforms = xs
                window, done, states = carry
                if not mode.carry_state and not carried_encoder:
                    states = self._encode(params, window, genre)

                def note(c, xs):
                    t, u = xs
                    states, prev, done = c
                    states, logits = self._step(params, states, prev, genre)
                    # EOS waits for the first min_notes notes (a select, not a branch).
                    ban = (
                        banned | (eos & (p * self._phrase_len + t < mode.min_notes))
                        if mode.min_notes
                        else banned
                    )
                    token = next_token(logits, u, banned=ban, **settings)
                    token = jnp.where(done, codec_lib.PAD, token)
                    done = done | (token == codec_lib.EOS)
                    return (states, jnp.where(token == codec_lib.PAD, prev, token), done), token

                init = (states, window[:, -1], done)
                notes = (jnp.arange(self._phrase_len), phrase_uniforms)
                (decoded, _, done), tokens = lax.scan(note, init, notes)
                tokens = tokens.T  # [B, phrase_len]
                window = jnp.concatenate([window, tokens], axis=1)[:, -window.shape[1] :]
                # The next phrase starts from: the decoder's states (carry_state), the
                # encoder's after reading this phrase too (carried encoder), or (else) a
                # re-encoding of the window at its start.
                states = self._encode_from(params, states, tokens, genre) if carried_encoder else decoded
                return (window, done, states), tokens

            if mode.carry_state or carried_encoder:  # the primer's states, read once
                states0 = self._encode(params, window, genre)
            else:  # each phrase encodes its own: a placeholder of their shape
                shapes = jax.eval_shape(self._encode, params, window, genre)
                states0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            b = window.shape[0]
            shape = (self._num_phrases, self._phrase_len, b, 2 if mode.untempered_rhythm else 1)
            drawn = jnp.zeros(shape, jnp.float32) if mode.greedy else uniforms(key, shape)
            xs = (jnp.arange(self._num_phrases), drawn)
            _, phrases = lax.scan(phrase, (window, done0, states0), xs)
            return jnp.transpose(phrases, (1, 0, 2)).reshape(window.shape[0], -1)

        return jax.jit(sample)


def make_sampler(
    encode: EncodeFn,
    step: StepFn,
    condition: ConditionFn | None = None,
    *,
    vocab_size: int,
    first_note_id: int,
    phrase_len: int,
    num_phrases: int,
    encode_from: EncodeFromFn | None = None,
    groups: Any = None,
) -> Sampler:
    """A `Sampler`: encode a primer, then write `num_phrases` phrases of `phrase_len` notes.

    condition: (window, genre) -> what encode and step take as their `genre`, computed
    once from the primer's window (None: the genre itself). encode_from: the encoder
    going on from given states (carried windows: the encoder reads each phrase once).
    groups: `rhythm_groups` float32[V, G], for `Settings.untempered_rhythm` (None: not offered).
    """
    return Sampler(encode, step, condition, vocab_size=vocab_size, first_note_id=first_note_id,
                   phrase_len=phrase_len, num_phrases=num_phrases, encode_from=encode_from,
                   groups=groups)  # fmt: skip


def for_model(model: Any, *, vocab_size: int, first_note_id: int, phrase_len: int, num_notes: int,
              key_weights: Any = None, carried: bool = False, groups: Any = None) -> Sampler:  # fmt: skip
    """A `Sampler` over a `models.Seq2Seq` that writes at least `num_notes` notes a call
    (whole phrases of `phrase_len`); key_weights as `model_functions`; carried: the
    model was trained on carried windows (`config.carried_windows`; phrase_len must
    then be its encoder_len); groups as `make_sampler`."""
    return make_sampler(
        *model_functions(model, key_weights),
        vocab_size=vocab_size,
        first_note_id=first_note_id,
        phrase_len=phrase_len,
        num_phrases=math.ceil(num_notes / phrase_len),
        encode_from=encode_from_function(model) if carried else None,
        groups=groups,
    )


def model_functions(model: Any, key_weights: Any = None) -> tuple[EncodeFn, StepFn, ConditionFn | None]:
    """A `models.Seq2Seq`'s encode and decode_step as the plain functions `make_sampler`
    takes. A model with a key input is given its primer's key at every phrase and note
    (`key_input.estimate` of the first window with key_weights, float32[V, 12]; None:
    no key known; or the call's known_key), so that a sample holds its primer's key in
    view: its `genre` is then the pair (genre, key) that `condition` makes."""

    def inputs(cond):
        return (cond[0], {"key": cond[1]}) if model.num_keys else (cond, {})

    def encode(params, tokens, cond):
        genre, key = inputs(cond)
        return model.apply({"params": params}, tokens, genre, **key, method=type(model).encode)

    def step(params, carries, token, cond):
        genre, key = inputs(cond)
        return model.apply({"params": params}, carries, token, genre, **key, method=type(model).decode_step)

    def condition(window, genre, known_key=None):
        return genre, key_input.estimate(window, key_weights) if known_key is None else known_key

    return encode, step, condition if model.num_keys else None


def encode_from_function(model: Any) -> EncodeFromFn:
    """A `models.Seq2Seq`'s encoder going on from given states, as `make_sampler`'s
    encode_from (its `genre` as `model_functions`' condition makes it)."""

    def encode_from(params, carries, tokens, cond):
        genre, key = (cond[0], {"key": cond[1]}) if model.num_keys else (cond, {})
        return model.apply({"params": params}, tokens, genre, **key, initial=carries,
                           method=type(model).encode)  # fmt: skip

    return encode_from


def primer_window(ids: jax.Array | list[int], encoder_len: int) -> list[int]:
    """The encoder input for a primer of note ids: [PAD ...] + [BOS] + ids, last Te kept."""
    seq = [codec_lib.BOS, *(int(i) for i in ids)]
    seq = seq[-encoder_len:]
    return [codec_lib.PAD] * (encoder_len - len(seq)) + seq


# jax.random.fold_in op by op costs about 0.5 ms a call on a CPU, jitted 0.01 ms (the
# same key): 3% of a 256-note batch-1 sampling call of the default model.
_fold_in = jax.jit(jax.random.fold_in)


def generate(
    sample: Sampler,
    params: Any,
    primers: Sequence[Sequence[int]],
    genres: Sequence[int] | np.ndarray,
    *,
    encoder_len: int,
    num_notes: int,
    settings: Settings,
    key: jax.Array,
    batch: int | None = None,
    max_calls: int = 1,
    done: Callable[[np.ndarray], bool] | None = None,
    piece_key_weights: np.ndarray | None = None,
    common_key: np.ndarray | None = None,
) -> np.ndarray:
    """Notes continuing each primer: the one sampling driver of the CLIs and the benchmark.

    Rows go through the compiled `sample` `batch` at a time (all at once by default;
    the last batch padded with copies of its last row, so every call compiles once).
    A call writes `num_notes` notes per row (<= sample.notes_per_call); with
    `max_calls` > 1 the rows are continued, the encoder window sliding over what was
    written, until `done(written)` or `max_calls` calls. The call for the rows from
    index s, continuation c draws with `fold_in(key, s * max_calls + c)`: the same key,
    primers and settings give the same notes.

    Args:
      primers: note ids per row (any length; the last encoder_len - 1 are read).
      genres: a genre index per row.
      piece_key_weights: for a model of key_context "piece"
        (`checkpoint.ForInference.piece_key_weights`): each call is given the key of
        its row's whole primer and of what the row wrote in the calls before, as the
        model was trained (the key of the piece so far). None: the key, if the model
        takes one, is that of the encoder's window.
      common_key: for a model trained in a common key
        (`checkpoint.ForInference.common_key_tables`, with piece_key_weights): each
        call moves its window to C major or A minor by that key, as the model was
        trained, and what it writes back (`key_input.to_common_key`, `from_common_key`).

    Returns:
      int32[len(primers), calls * num_notes] written ids (PAD after an EOS).
    """
    if num_notes > sample.notes_per_call:
        raise ValueError(f"num_notes {num_notes} > the sampler's {sample.notes_per_call} a call")
    if common_key is not None and piece_key_weights is None:
        raise ValueError("common_key needs piece_key_weights: the key each call is moved by")
    n = len(primers)
    batch = batch or n
    genres = np.asarray(genres, np.int32)
    out = []
    for start in range(0, n, batch):
        rows = list(range(start, min(start + batch, n)))
        padded = rows + [rows[-1]] * (batch - len(rows))
        window = np.asarray([primer_window(primers[i], encoder_len) for i in padded], np.int32)
        genre = genres[padded]  # numpy: the jitted call's own transfer is the cheaper one
        written = np.zeros((batch, 0), np.int32)
        for call in range(max_calls):
            k = _fold_in(key, start * max_calls + call)
            this = settings if call == 0 else dataclasses.replace(settings, min_notes=0)  # rows go on
            known = None
            if piece_key_weights is not None:
                # Each row's primer and what it wrote, PAD after (PAD weighs nothing in a key).
                read = [np.concatenate([np.asarray(primers[i], np.int32), row])
                        for i, row in zip(padded, written, strict=True)]  # fmt: skip
                so_far = np.full((batch, max(r.shape[0] for r in read)), codec_lib.PAD, np.int32)
                for r, ids in enumerate(read):
                    so_far[r, : ids.shape[0]] = ids
                known = key_input.estimate(jnp.asarray(so_far), piece_key_weights)
            if common_key is None:
                tokens = np.asarray(sample(params, window, genre, k, this, known))
            else:
                moved, moved_key, shift = key_input.to_common_key(window, np.asarray(known), common_key)
                tokens = np.asarray(sample(params, moved, genre, k, this, moved_key))
                tokens = key_input.from_common_key(tokens, shift, common_key)
            tokens = tokens[:, :num_notes]
            written = np.concatenate([written, tokens], axis=1)
            window = np.concatenate([window, tokens], axis=1)[:, -encoder_len:]
            if done is None or done(written[: len(rows)]):
                break
        out.append(written[: len(rows)])
    width = max(w.shape[1] for w in out)  # batches that stopped after fewer calls: PAD
    return np.concatenate(
        [np.pad(w, ((0, 0), (0, width - w.shape[1])), constant_values=codec_lib.PAD) for w in out]
    )
