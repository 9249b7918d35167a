"""The `genre_adherence` section: a classifier of the music statistics, fit on the train
split's continuations, classifies the samples; how often a sample asked for genre G is
classified G, beside the classifier's accuracy on the split's real continuations."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxmusic import codec as codec_lib
from jaxmusic import music_stats


def features(notes: list[np.ndarray], stats: dict[str, np.ndarray] | None = None, *,
             instrumentation: bool = False) -> np.ndarray:  # fmt: skip
    """float64[P, F]: what the classifier reads of each piece: every statistic (given, or
    computed, `music_stats.INSTRUMENTATION` too with `instrumentation`) and
    `music_stats.descriptors` side by side."""
    stats = music_stats.statistics(notes, instrumentation=instrumentation) if stats is None else stats
    columns = list(stats.values())
    descriptors = np.stack([music_stats.descriptors(n) for n in notes]) if notes else np.zeros((0, 88))
    return np.concatenate([*columns, descriptors], axis=1)


def fit_classifier(train_features: np.ndarray, train_genres: np.ndarray) -> Any:
    """A logistic regression from the standardized `features` to the genre (scikit-learn).
    C = 0.1: more features (115; 134 with instrumentation) than the rarer genres have pieces."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    return classifier.fit(train_features, train_genres)


def adherence(classifier, train_pieces: int, real_features, real_genres, sample_features, sample_genres,
              genres) -> dict:  # fmt: skip
    """The classifier's accuracy on real pieces, and how often samples are classified as
    the genre they were asked for (overall and per genre)."""
    real_pred = classifier.predict(real_features)
    sample_pred = classifier.predict(sample_features)
    per_genre = {}
    for i, g in enumerate(genres):
        real_i, asked_i = real_genres == i, sample_genres == i
        per_genre[g] = {
            "real_pieces": int(real_i.sum()),
            "real_accuracy": float((real_pred[real_i] == i).mean()) if real_i.any() else None,
            "samples": int(asked_i.sum()),
            "adherence": float((sample_pred[asked_i] == i).mean()) if asked_i.any() else None,
            "samples_classified_as": int((sample_pred == i).sum()),
        }
    return {
        "classifier": "standardized statistics and descriptors -> logistic regression (scikit-learn), "
        "fit on the train split",
        "train_pieces": train_pieces,
        "real_accuracy": float((real_pred == real_genres).mean()),
        "real_chance": float(np.bincount(real_genres, minlength=len(genres)).max() / real_genres.shape[0]),
        "adherence": float((sample_pred == sample_genres).mean()),
        "per_genre": per_genre,
    }


def section(codec: codec_lib.Codec, pieces, train_pieces, train: tuple, c, real: tuple, generated: tuple):
    """(the `genre_adherence` section or why it was skipped, the classifier or None).
    train: (indices, decoded notes) of the train split's `samples.continuations`; c: the
    `samples.Continuations`;
    real, generated: (notes, statistics) of the real continuations and of the samples."""
    if len(codec.genres) < 2:
        return {"skipped": f"the codec has {len(codec.genres)} genre; adherence needs 2+"}, None
    train_idx, train_notes = train
    if np.unique(train_pieces.genres[train_idx]).shape[0] < 2:
        return {"skipped": "the train split has pieces of only one genre"}, None
    train_features = features(train_notes, instrumentation=codec.instruments.has_drums)
    classifier = fit_classifier(train_features, train_pieces.genres[train_idx])
    result = adherence(classifier, len(train_idx), features(*real), pieces.genres[c.real_idx],
                       features(*generated), c.genres, tuple(codec.genres))  # fmt: skip
    return result, classifier
