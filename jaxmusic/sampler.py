"""The jitted sampling loop: encode a primer, then write notes phrase by phrase.

One call generates `num_phrases * phrase_len` tokens for a batch of primers:
  for each phrase (an outer lax.scan):
    the encoder reads the last `encoder_len` tokens (primer, then what was written);
    the decoder starts from its states with the last token as input and writes
    `phrase_len` tokens, one `decode_step` at a time (an inner lax.scan).
Each token is drawn from the logits with greedy, temperature, top-k and top-p
(nucleus) sampling; PAD, BOS, UNK and genre ids are never drawn; after EOS a row
writes only PAD. Randomness per token is fold_in(key, phrase, step), so a call is a
pure function of its key. Settings are traced values: a new temperature or top_p
does not recompile; a new batch, primer length or note count does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxmusic import codec as codec_lib

NEG_INF = -1e30

EncodeFn = Callable[[Any, jax.Array, jax.Array], Any]  # (params, tokens[B, Te], genre[B]) -> carries
StepFn = Callable[[Any, Any, jax.Array, jax.Array], tuple[Any, jax.Array]]  # -> (carries, logits[B, V])


def filter_logits(logits: jax.Array, top_k: jax.Array | int, top_p: jax.Array | float) -> jax.Array:
    """Masks logits outside the top k and outside the nucleus of mass top_p.

    Args:
      logits: float32[B, V] (already divided by the temperature).
      top_k: keep the k largest (0: all). Ties at the k-th value are kept.
      top_p: keep the smallest set of largest-probability ids whose mass reaches
        top_p (1: all); the most probable id is always kept.

    Returns:
      float32[B, V], masked entries at NEG_INF.
    """
    v = logits.shape[-1]
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]  # descending
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    kth = jnp.take_along_axis(ordered, jnp.broadcast_to(k - 1, (logits.shape[0], 1)), axis=-1)
    logits = jnp.where(logits >= kth, logits, NEG_INF)
    probs = jax.nn.softmax(jnp.sort(logits, axis=-1)[:, ::-1], axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the ids ranked above each
    keep_sorted = before < top_p  # rank 0 always kept
    n_keep = keep_sorted.sum(-1, keepdims=True)
    threshold = jnp.take_along_axis(jnp.sort(logits, axis=-1)[:, ::-1], n_keep - 1, axis=-1)
    return jnp.where(logits >= threshold, logits, NEG_INF)


def next_token(
    logits: jax.Array, key: jax.Array, *, temperature, top_k, top_p, greedy, banned: jax.Array
) -> jax.Array:
    """int32[B] tokens from float32[B, V] logits; banned: bool[V] ids never drawn."""
    logits = jnp.where(banned[None, :], NEG_INF, logits.astype(jnp.float32))

    def draw(logits):
        scaled = logits / temperature
        # Filtering sorts the vocabulary; skip it when it keeps everything.
        needed = (top_k > 0) | (top_p < 1.0)
        scaled = lax.cond(needed, lambda x: filter_logits(x, top_k, top_p), lambda x: x, scaled)
        # Inverse-CDF sampling: one uniform per row (categorical draws a Gumbel per id).
        cdf = jnp.cumsum(jax.nn.softmax(scaled, axis=-1), axis=-1)
        # u > 0, so an id of probability 0 (cdf equal to its predecessor's) is never chosen.
        u = jax.random.uniform(key, (logits.shape[0], 1), minval=jnp.finfo(jnp.float32).tiny) * cdf[:, -1:]
        return jnp.minimum((cdf < u).sum(-1), logits.shape[-1] - 1).astype(jnp.int32)

    # argmax is a slow variadic reduction on XLA:CPU (9 us of a 110 us note at batch 1,
    # hidden 256): only the greedy branch runs it.
    return lax.cond(greedy, lambda x: x.argmax(-1).astype(jnp.int32), draw, logits)


def banned_ids(vocab_size: int, first_note_id: int) -> jax.Array:
    """bool[V]: every id below the first pseudo-note except EOS."""
    ids = jnp.arange(vocab_size)
    return (ids < first_note_id) & (ids != codec_lib.EOS)


def make_sampler(
    encode: EncodeFn,
    step: StepFn,
    *,
    vocab_size: int,
    first_note_id: int,
    phrase_len: int,
    num_phrases: int,
) -> Callable[..., jax.Array]:
    """A jitted `sample(params, window, genre, key, temperature, top_k, top_p, greedy)`.

    Args of the returned function:
      window: int32[B, Te] the encoder's first input (a primer, left-padded with PAD).
      genre: int32[B] genre indices.
      key: a PRNG key.
      temperature: > 0; top_k: 0 or more; top_p: in (0, 1]; greedy: bool.

    Returns:
      int32[B, num_phrases * phrase_len] written tokens (PAD after an EOS).
    """
    banned = banned_ids(vocab_size, first_note_id)

    def sample(params, window, genre, key, temperature, top_k, top_p, greedy):
        settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, banned=banned)
        done0 = jnp.zeros(window.shape[0], jnp.bool_)

        def phrase(carry, p):
            window, done = carry
            states = encode(params, window, genre)

            def note(c, t):
                states, prev, done = c
                states, logits = step(params, states, prev, genre)
                token = next_token(logits, jax.random.fold_in(jax.random.fold_in(key, p), t), **settings)
                token = jnp.where(done, codec_lib.PAD, token)
                done = done | (token == codec_lib.EOS)
                return (states, jnp.where(token == codec_lib.PAD, prev, token), done), token

            (_, _, done), tokens = lax.scan(note, (states, window[:, -1], done), jnp.arange(phrase_len))
            tokens = tokens.T  # [B, phrase_len]
            window = jnp.concatenate([window, tokens], axis=1)[:, -window.shape[1] :]
            return (window, done), tokens

        _, phrases = lax.scan(phrase, (window, done0), jnp.arange(num_phrases))
        return jnp.transpose(phrases, (1, 0, 2)).reshape(window.shape[0], -1)

    return jax.jit(sample)


def model_functions(model: Any) -> tuple[EncodeFn, StepFn]:
    """A `models.Seq2Seq`'s encode and decode_step as the plain functions `make_sampler` takes."""

    def encode(params, tokens, genre):
        return model.apply({"params": params}, tokens, genre, method=type(model).encode)

    def step(params, carries, token, genre):
        return model.apply({"params": params}, carries, token, genre, method=type(model).decode_step)

    return encode, step


def primer_window(ids: jax.Array | list[int], encoder_len: int) -> list[int]:
    """The encoder input for a primer of note ids: [PAD ...] + [BOS] + ids, last Te kept."""
    seq = [codec_lib.BOS, *(int(i) for i in ids)]
    seq = seq[-encoder_len:]
    return [codec_lib.PAD] * (encoder_len - len(seq)) + seq
