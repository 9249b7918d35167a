"""The count baselines: proper distributions, hand-checked probabilities, fit beats shuffled."""

import numpy as np
import pytest

from jaxmusic import ngram

V = 12  # ids 0..3 special (PAD, BOS, EOS, UNK), 4.. notes


def seqs(*bodies):
    return [np.array([1, *b, 2]) for b in bodies]


def key(*tokens):
    k = 0
    for t in tokens:
        k = k * V + t
    return k


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_conditionals_sum_to_one_over_the_vocabulary(order):
    rng = np.random.default_rng(order)
    data = [np.array([1, *rng.integers(4, V - 2, size=rng.integers(3, 20)), 2]) for _ in range(20)]
    model = ngram.KneserNey.fit(data, order, V)
    contexts = [data[0][: order - 1], rng.integers(0, V, size=order - 1), np.full(order - 1, V - 1)]
    for ctx in contexts:
        p = model.prob(key(*ctx) * V + np.arange(V))
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(p > 0)  # even ids never seen (V - 2, V - 1)


def test_bigram_matches_the_formula_by_hand():
    # Targets with their previous token: (1,4) (4,5) (5,4) (4,5) (5,2)  and  (1,4) (4,6) (6,2).
    model = ngram.KneserNey.fit(seqs([4, 5, 4, 5], [4, 6]), 2, V)
    d2 = 4 / (4 + 2 * 2)  # bigram counts: (1,4):2 (4,5):2 (5,4):1 (5,2):1 (4,6):1 (6,2):1
    # Unigram continuation counts: 4 follows {1, 5}, 5 {4}, 6 {4}, 2 {5, 6}: total 6 types.
    d1 = 2 / (2 + 2 * 2)  # counts 1, 1 (tokens 5, 6) and 2, 2 (tokens 4, 2)
    p1_5 = (1 - d1) / 6 + d1 * 4 / 6 / V
    p1_7 = d1 * 4 / 6 / V  # never seen
    # Context 4: 5 twice, 6 once: total 3, 2 types.
    assert model.prob(np.array([key(4, 5)]))[0] == pytest.approx((2 - d2) / 3 + d2 * 2 / 3 * p1_5)
    assert model.prob(np.array([key(4, 7)]))[0] == pytest.approx(d2 * 2 / 3 * p1_7)
    # An unseen context falls back to the lower order.
    assert model.prob(np.array([key(9, 5)]))[0] == pytest.approx(p1_5)


def test_nll_lower_on_what_it_was_fit_on_than_on_a_shuffle():
    rng = np.random.default_rng(0)
    phrase = [4, 6, 8, 9, 11, 9, 8, 6]
    data = [np.array([1, *(phrase * 6), 2]) for _ in range(5)]
    shuffled = [np.array([1, *rng.permutation(s[1:-1]), 2]) for s in data]
    for order in (2, 3):
        model = ngram.KneserNey.fit(data, order, V)
        fit_nll = -model.log_probs(data).mean()
        assert fit_nll < 0.5 * -model.log_probs(shuffled).mean()
    unigram = ngram.Unigram.fit(data, V)  # order-blind: the same tokens score the same
    assert -unigram.log_probs(data).mean() == pytest.approx(-unigram.log_probs(shuffled).mean())
    # Add-one: a token seen c times of N targets gets (c + 1) / (N + V).
    n = sum(s.shape[0] - 1 for s in data)
    assert np.exp(unigram.log_p[4]) == pytest.approx((6 * 5 + 1) / (n + V))


def test_bad_orders():
    with pytest.raises(ValueError, match="order must be >= 1"):
        ngram.KneserNey.fit(seqs([4]), 0, V)
    with pytest.raises(ValueError, match="too high for a vocabulary"):
        ngram.KneserNey.fit(seqs([4]), 8, 5000)
