"""The likelihood sections: the model's per-note NLL and the n-gram baselines' on the
same targets (every note and EOS of the split once), overall and per genre."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jaxmusic import inference, ngram, windows


def row(nll: float, accuracy: float | None, notes: float) -> dict[str, float | None]:
    """One likelihood row: NLL in nats and bits, perplexity, top-1 accuracy, targets."""
    return {"nll_nats": nll, "nll_bits": nll / math.log(2), "perplexity": math.exp(nll), "accuracy": accuracy,
            "notes": notes}  # fmt: skip


def target_genres(pieces: windows.Pieces) -> np.ndarray:
    """int[N]: the genre of every target of `pieces` (each token after BOS), in order."""
    return np.concatenate(
        [np.full(s.shape[0] - 1, g) for s, g in zip(pieces.sequences, pieces.genres, strict=True)]
    )


def section(generator: inference.Generator, pieces: windows.Pieces, genres: tuple[str, ...]) -> dict:
    """The model's `likelihood` section: training's evaluation of `pieces`."""
    out = generator.likelihood(pieces)
    result = {"overall": row(out["eval_nll"], out["eval_accuracy"], out["eval_notes"])}
    notes = np.bincount(target_genres(pieces), minlength=len(genres))
    result["per_genre"] = {
        g: row(out[f"eval_nll/{g}"], out[f"eval_accuracy/{g}"], float(notes[i]))
        for i, g in enumerate(genres)
        if f"eval_nll/{g}" in out
    }
    return result


def baselines(train_pieces: windows.Pieces, pieces: windows.Pieces, vocab_size: int, orders: Sequence[int],
              genres: tuple[str, ...]) -> dict:  # fmt: skip
    """The `baselines` section: {name: likelihood} of an add-one unigram and each
    Kneser-Ney order, fit on the train split, on `pieces`."""
    target_genre = target_genres(pieces)
    models = {"unigram (add-one)": ngram.Unigram.fit(train_pieces.sequences, vocab_size)}
    for n in orders:
        models[f"Kneser-Ney {n}-gram"] = ngram.KneserNey.fit(train_pieces.sequences, n, vocab_size)
    out = {}
    for name, m in models.items():
        nll = -m.log_probs(pieces.sequences)
        per_genre = {
            g: row(float(nll[target_genre == i].mean()), None, float((target_genre == i).sum()))
            for i, g in enumerate(genres)
            if (target_genre == i).any()
        }
        out[name] = {"overall": row(float(nll.mean()), None, float(nll.shape[0])), "per_genre": per_genre}
    return out
