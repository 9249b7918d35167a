"""Count-based baselines for the LSTM: an add-one unigram and interpolated Kneser-Ney n-grams.

Both score the same targets as `jaxmusic.train`'s evaluation: every token of a
sequence `[BOS, ids..., EOS]` after its BOS, so their per-note NLL sits beside the
model's. A context reaching before BOS sees PAD.

Kneser-Ney is interpolated Kneser-Ney with one absolute discount per order,
D = n1 / (n1 + 2 n2) (Chen & Goodman, "An empirical study of smoothing techniques
for language modeling", 1998): the highest order uses raw counts, each lower order
continuation counts (how many distinct tokens precede a gram), and the lowest
interpolates with the uniform distribution over the whole vocabulary, so every id,
seen or not, gets a probability and each conditional sums to 1 over the vocabulary
(a test checks it). Written here with numpy, vectorized over all queries at once,
because the library candidates do not fit: nltk's `KneserNeyInterpolated` scores one
token at a time in Python (minutes for a split) and gives zero probability to
unseen tokens (nltk issues #3211, #2332), and kenlm needs its C++ `lmplz` built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxmusic import codec as codec_lib


def targets(sequences: Sequence[np.ndarray]) -> np.ndarray:
    """int64[N]: every token after the first of each sequence, concatenated."""
    return np.concatenate([np.asarray(s[1:], np.int64) for s in sequences])


@dataclasses.dataclass(frozen=True)
class Unigram:
    """Token frequencies of the fit sequences with add-one smoothing over the vocabulary."""

    log_p: np.ndarray  # float64[V]

    @classmethod
    def fit(cls, sequences: Sequence[np.ndarray], vocab_size: int) -> Unigram:
        counts = np.bincount(targets(sequences), minlength=vocab_size) + 1.0
        return cls(np.log(counts / counts.sum()))

    def log_probs(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """float64[N] natural-log probabilities of `targets(sequences)`."""
        return self.log_p[targets(sequences)]


def _grams(sequences: Sequence[np.ndarray], order: int, vocab_size: int) -> np.ndarray:
    """int64[N] keys of the `order`-grams ending at each target (PAD before the start).

    A gram (t_1, ..., t_k) has key sum_j t_j V^(k - j): its context's key is key // V
    and its suffix of length m is key % V^m.
    """
    keys = []
    for seq in sequences:
        padded = np.concatenate([np.full(order - 1, codec_lib.PAD, np.int64), np.asarray(seq, np.int64)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, order)[1:]  # one per target
        keys.append(windows @ (vocab_size ** np.arange(order - 1, -1, -1, dtype=np.int64)))
    return np.concatenate(keys)


@dataclasses.dataclass(frozen=True)
class _Level:
    """One order's (possibly continuation) counts, sorted by key for lookups."""

    keys: np.ndarray  # int64[G] gram keys
    counts: np.ndarray  # float64[G]
    context_keys: np.ndarray  # int64[C]
    context_totals: np.ndarray  # float64[C] sum of counts over the context's grams
    context_types: np.ndarray  # float64[C] grams with a count > 0
    discount: float

    @classmethod
    def build(cls, keys: np.ndarray, counts: np.ndarray, vocab_size: int) -> _Level:
        n1, n2 = float((counts == 1).sum()), float((counts == 2).sum())
        discount = n1 / (n1 + 2 * n2) if n1 > 0 else 0.5
        ctx, inverse = np.unique(keys // vocab_size, return_inverse=True)
        totals = np.bincount(inverse, weights=counts, minlength=ctx.shape[0])
        types = np.bincount(inverse, minlength=ctx.shape[0]).astype(np.float64)
        return cls(keys, counts, ctx, totals, types, min(max(discount, 1e-3), 0.999))


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values at the positions of queries in sorted_keys (0 where absent)."""
    if sorted_keys.shape[0] == 0:
        return np.zeros(queries.shape)
    idx = np.minimum(np.searchsorted(sorted_keys, queries), sorted_keys.shape[0] - 1)
    return np.where(sorted_keys[idx] == queries, values[idx], 0.0)


@dataclasses.dataclass(frozen=True)
class KneserNey:
    """An interpolated Kneser-Ney model of `order` (2 = bigram, 3 = trigram, ...)."""

    order: int
    vocab_size: int
    levels: tuple[_Level, ...]  # levels[k - 1] holds the k-grams

    @classmethod
    def fit(cls, sequences: Sequence[np.ndarray], order: int, vocab_size: int) -> KneserNey:
        """Counts the n-grams of `sequences` (each [BOS, ids..., EOS]).

        Raises:
          ValueError: order < 1, or vocab_size ** order overflows the int64 gram keys.
        """
        if order < 1:
            raise ValueError(f"n-gram order must be >= 1, got {order}")
        if order * np.log2(max(vocab_size, 2)) >= 62:
            raise ValueError(f"n-gram order {order} is too high for a vocabulary of {vocab_size}")
        keys, counts = np.unique(_grams(sequences, order, vocab_size), return_counts=True)
        levels = [_Level.build(keys, counts.astype(np.float64), vocab_size)]
        for k in range(order - 1, 0, -1):  # continuation counts of each lower order
            suffixes = levels[-1].keys % vocab_size**k  # one per distinct (k+1)-gram
            keys, counts = np.unique(suffixes, return_counts=True)
            levels.append(_Level.build(keys, counts.astype(np.float64), vocab_size))
        return cls(order, vocab_size, tuple(reversed(levels)))

    def prob(self, grams: np.ndarray) -> np.ndarray:
        """float64[N] P(w | context) for int64[N] keys of full-order grams (context + w)."""
        p = np.full(grams.shape, 1.0 / self.vocab_size)
        for k, level in enumerate(self.levels, start=1):
            g = grams % self.vocab_size**k
            ctx = g // self.vocab_size
            total = _lookup(level.context_keys, level.context_totals, ctx)
            types = _lookup(level.context_keys, level.context_types, ctx)
            count = _lookup(level.keys, level.counts, g)
            seen = total > 0
            safe = np.where(seen, total, 1.0)
            mixed = (np.maximum(count - level.discount, 0.0) + level.discount * types * p) / safe
            p = np.where(seen, mixed, p)
        return p

    def log_probs(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """float64[N] natural-log probabilities of `targets(sequences)`."""
        return np.log(self.prob(_grams(sequences, self.order, self.vocab_size)))
