"""CLI: how good a trained model is, in one command.

  python -m jaxmusic.evaluate --workdir runs/default [--split validation] \\
      [--num_samples 64] [--num_notes 128] [--primer_notes N] [--ngram_orders 2,3,4] \\
      [--temperature 0.9] [--top_k 0] [--top_p 0.9] [--sweep temperature=0.8,1.0] [--long_notes 1024] \\
      [--carry_state] [--min_notes 1] [--nountempered_rhythm] [--seed 0] [--data_dir D] \\
      [--json eval.json] [--plots eval_plots]

Reports, for the latest checkpoint of the workdir, on a split of its dataset:
  1. likelihood: per-note NLL (nats, bits), perplexity and top-1 accuracy, overall
     and per genre, over every note (and EOS) of the split once, the training
     evaluation's own numbers;
  2. baselines on the same targets: an add-one unigram and interpolated Kneser-Ney
     n-grams fit on the train split (`jaxmusic.ngram`);
  3. music statistics (`jaxmusic.music_stats`) of N samples against the real music:
     each sample continues the opening `primer_notes` notes of a piece of the split
     (drawn uniformly, with its genre) for `num_notes` notes; the real set is the
     true continuation of every piece of the split long enough to prime, and each
     sample is cut to the length of the real continuation of its piece (so pitch
     range, pitch count and the like compare equal lengths; how often samples end
     early, with EOS, is reported beside how often real pieces do). For each
     statistic, Yang & Lerch's overlap area and KL divergence of the real set's
     intra-set distances against the real-to-generated distances; and the share of
     degenerate samples (silence, or one pseudo-note over half the notes; each sample
     judged as written, uncut) beside the real continuations' share and the train
     split's; key agreement (the share whose Krumhansl-Schmuckler key is their
     primer's) beside real music's on the split and on the train split, each with its
     95% interval; and, as the noise floor of each overlap, the overlap of the train
     split's continuations (real music, as many as the samples) in the samples' place;
  4. genre adherence: a logistic regression on those statistics, fit on the train
     split's continuations, classifies the samples; how often a sample asked for
     genre G is classified G, beside the classifier's accuracy on the split's real
     continuations.
A table goes to stdout, everything to --json, and histograms of real against
generated statistics to --plots (one PNG per statistic, and likelihood.png).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxmusic import checkpoint as checkpoint_lib
from jaxmusic import cli, host_memory, key_input, music_stats, ngram, sampler
from jaxmusic import codec as codec_lib


def _likelihood_row(nll: float, accuracy: float | None, notes: float) -> dict[str, float | None]:
    return {
        "nll_nats": nll,
        "nll_bits": nll / math.log(2),
        "perplexity": math.exp(nll),
        "accuracy": accuracy,
        "notes": notes,
    }


def target_genres(pieces) -> np.ndarray:
    """int[N]: the genre of every target of `pieces` (each token after BOS), in order."""
    return np.concatenate(
        [np.full(s.shape[0] - 1, g) for s, g in zip(pieces.sequences, pieces.genres, strict=True)]
    )


def model_likelihood(config, model, params, pieces, genres: tuple[str, ...], key_weights: Any = None,
                     common_key: Any = None) -> dict:  # fmt: skip
    """The model's per-note NLL over every target of `pieces`, overall and per genre
    (a model of carried windows reads each piece from its start, as trained; one of a
    common key reads each window moved to it, `key_input.common_key_tables`)."""
    from jaxmusic import input_pipeline, parallel, steps

    mesh = parallel.make_mesh()
    batch_size = parallel.global_batch_size(config, mesh.devices.size)
    carried = bool(config.get("carried_windows", False))
    piece_keys = key_input.piece_weights(config, key_weights)
    batches = input_pipeline.eval_batches(pieces, batch_size=batch_size, encoder_len=config.encoder_len,
                                          decoder_len=config.decoder_len, carried=carried,
                                          key_weights=piece_keys, common_key=common_key)  # fmt: skip
    eval_step = steps.make_eval_step(model, mesh, key_weights, carried=carried)
    carry = steps.zero_carry(model, batch_size, mesh) if carried else None
    out = steps.evaluate_batches(eval_step, params, batches, mesh, genres, carry)
    result = {"overall": _likelihood_row(out["eval_nll"], out["eval_accuracy"], out["eval_notes"])}
    notes = np.bincount(target_genres(pieces), minlength=len(genres))
    result["per_genre"] = {
        g: _likelihood_row(out[f"eval_nll/{g}"], out[f"eval_accuracy/{g}"], float(notes[i]))
        for i, g in enumerate(genres)
        if f"eval_nll/{g}" in out
    }
    return result


def baseline_likelihoods(train_pieces, pieces, vocab_size: int, orders: Sequence[int], genres) -> dict:
    """{name: likelihood} of the unigram and each Kneser-Ney order on `pieces`."""
    target_genre = target_genres(pieces)
    models = {"unigram (add-one)": ngram.Unigram.fit(train_pieces.sequences, vocab_size)}
    for n in orders:
        models[f"Kneser-Ney {n}-gram"] = ngram.KneserNey.fit(train_pieces.sequences, n, vocab_size)
    out = {}
    for name, m in models.items():
        nll = -m.log_probs(pieces.sequences)
        per_genre = {
            g: _likelihood_row(float(nll[target_genre == i].mean()), None, float((target_genre == i).sum()))
            for i, g in enumerate(genres)
            if (target_genre == i).any()
        }
        out[name] = {"overall": _likelihood_row(float(nll.mean()), None, float(nll.shape[0])),
                     "per_genre": per_genre}  # fmt: skip
    return out


def continuations(pieces, primer_notes: int, num_notes: int) -> tuple[list[int], list[np.ndarray]]:
    """The pieces with more than `primer_notes` notes, and each one's next `num_notes` ids.

    Returns:
      (indices into pieces, int32[<= num_notes] note ids after the primer, EOS cut).
    """
    chosen, ids = [], []
    for i, seq in enumerate(pieces.sequences):
        notes = seq[1:-1]  # without BOS and EOS
        if notes.shape[0] > primer_notes:
            chosen.append(i)
            ids.append(notes[primer_notes : primer_notes + num_notes])
    return chosen, ids


def reference_overlaps(
    codec: codec_lib.Codec, train_ids: list[np.ndarray], real_stats: dict, count: int, seed: int
) -> dict[str, float] | None:
    """Each statistic's overlap area with real music in place of the samples: up to
    `count` of the train split's `continuations` (train_ids, after the same primer
    length and as long as the evaluated split's) against the evaluated split's
    (`real_stats`). What a model whose samples were real music of the collection would
    score, so the noise floor of an overlap measured against this many real
    continuations; None without train continuations."""
    if not train_ids:
        return None
    pick = np.random.default_rng(seed).choice(len(train_ids), size=min(count, len(train_ids)), replace=False)
    stats = music_stats.statistics([codec.decode(train_ids[i]) for i in pick])
    return {
        name: float(music_stats.compare_sets(real_stats[name], stats[name])["overlap_area"])
        for name in music_stats.STATISTICS
    }


# The most train pieces whose real key agreement is measured (+-2 points at 95%).
KEY_TRAIN_PIECES = 2048


def key_agreement_counts(
    codec: codec_lib.Codec, primers: list[np.ndarray], continued: list[np.ndarray]
) -> tuple[int, int]:
    """(continuations whose Krumhansl-Schmuckler key is their primer's, pairs judged):
    pairs where either has no key to tell are left out."""
    keys = [(music_stats.estimate_key(codec.decode(p)), music_stats.estimate_key(codec.decode(c)))
            for p, c in zip(primers, continued, strict=True)]  # fmt: skip
    told = [a == b for a, b in keys if a >= 0 and b >= 0]
    return int(sum(told)), len(told)


def key_agreement(codec: codec_lib.Codec, primers: list[np.ndarray], continued: list[np.ndarray]) -> float:
    """The share of continuations whose Krumhansl-Schmuckler key is their primer's
    (`key_agreement_counts`; 0 when no pair is left)."""
    return _share(key_agreement_counts(codec, primers, continued))["share"]


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share (95% by default): how far a share measured
    on `trials` pieces may lie from the collection's own. (0, 1) for no trials."""
    if not trials:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def degenerate_share(pieces: list[np.ndarray]) -> float:
    """The share of `pieces` (note ids) that `music_stats.is_degenerate` calls degenerate."""
    return float(np.mean([music_stats.is_degenerate(ids) for ids in pieces]))


def _share(counts: tuple[int, int]) -> dict:
    """A share with its count and Wilson interval, as the report holds it."""
    agree, told = counts
    share = agree / told if told else 0.0
    return {"share": share, "pairs": told, "interval": list(wilson_interval(agree, told))}


def generate(
    loaded: checkpoint_lib.ForInference, primers: list[np.ndarray], genres: np.ndarray,
    *, num_notes: int, settings: sampler.Settings, seed: int, batch: int,
) -> list[np.ndarray]:  # fmt: skip
    """Samples continuing each primer: int32 note ids per sample, EOS cut."""
    import jax

    codec, config = loaded.codec, loaded.config
    written = sampler.generate(
        loaded.sampler(num_notes),
        loaded.params,
        primers,
        genres,
        encoder_len=config.encoder_len,
        num_notes=num_notes,
        settings=settings,
        key=jax.random.key(seed),
        batch=batch,
        piece_key_weights=loaded.piece_key_weights,
        common_key=loaded.common_key_tables,
    )
    out = []
    for row in written:
        end = np.flatnonzero(row == codec_lib.EOS)
        row = row[: end[0]] if end.size else row
        out.append(row[codec.is_note(row)])
    return out


def genre_features(notes: list[np.ndarray], stats: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """float64[P, F]: what the genre classifier reads of each piece: every statistic
    (`music_stats.STATISTICS`, given or computed) and `music_stats.descriptors` side by side."""
    stats = music_stats.statistics(notes) if stats is None else stats
    columns = [stats[name] for name in music_stats.STATISTICS]
    descriptors = np.stack([music_stats.descriptors(n) for n in notes]) if notes else np.zeros((0, 88))
    return np.concatenate([*columns, descriptors], axis=1)


def fit_genre_classifier(train_features: np.ndarray, train_genres: np.ndarray) -> Any:
    """A logistic regression from the standardized `genre_features` to the genre
    (scikit-learn). C = 0.1: more features (185) than the rarer genres have pieces."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    return classifier.fit(train_features, train_genres)


def genre_adherence(classifier, train_pieces: int, real_features, real_genres, sample_features, sample_genres,
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


@dataclasses.dataclass
class _Continuations:
    """Samples and the real music they are compared with (ids per piece, notes only)."""

    real_idx: list[int]  # pieces of the split long enough to prime with
    real_ids: list[np.ndarray]  # each one's true continuation
    picked: np.ndarray  # the piece each sample continues
    primers: list[np.ndarray]
    genres: np.ndarray  # the genre each sample was asked for
    sample_ids: list[np.ndarray]  # cut to the length of their piece's real continuation
    ended: list[bool]  # wrote EOS before num_notes
    written: list[np.ndarray]  # the samples as written, uncut

    def degenerate_share(self) -> float:
        """The share of degenerate samples (`music_stats.is_degenerate`), each judged as
        written: the cut copies serve the length-matched statistics, and a cut to a
        2-note real continuation says nothing of the sample."""
        return degenerate_share(self.written)


def _check(f) -> tuple[list[int], sampler.Settings]:
    """The flags, checked before any long work: (n-gram orders, sampling settings)."""
    for flag, low in (("num_samples", 1), ("num_notes", 1), ("batch", 1)):
        if f[flag].value < low:
            raise cli.UsageError(f"--{flag} must be >= {low}, got {f[flag].value}")
    if f.long_notes and f.long_notes < 2 * f.num_notes:
        raise cli.UsageError(
            f"--long_notes must be 0 or >= 2 x --num_notes ({2 * f.num_notes}), got {f.long_notes}"
        )
    if f.primer_notes is not None and f.primer_notes < 0:
        raise cli.UsageError(f"--primer_notes must be >= 0, got {f.primer_notes}")
    try:
        orders = sorted({int(n) for n in f.ngram_orders.split(",") if n.strip()})
    except ValueError:
        raise cli.UsageError(
            f"--ngram_orders must be comma-separated integers, got {f.ngram_orders!r}"
        ) from None
    if any(n < 2 for n in orders):
        raise cli.UsageError(f"--ngram_orders must be >= 2 (the unigram is always reported), got {orders}")
    settings = sampler.Settings(temperature=f.temperature, top_k=f.top_k, top_p=f.top_p,
                                carry_state=f.carry_state, min_notes=f.min_notes,
                                untempered_rhythm=f.untempered_rhythm)  # fmt: skip
    if f.json:
        cli.ensure_writable("--json", Path(f.json).parent)
    if f.plots:
        cli.ensure_writable("--plots", f.plots)
    return orders, settings


def _load_splits(f, loaded: checkpoint_lib.ForInference):
    """(dataset folder, the evaluated split's pieces, the train split's pieces)."""
    from jaxmusic import input_pipeline

    data_dir = f.data_dir or loaded.config.data_dir
    try:
        input_pipeline.load_codec(
            data_dir, expected_fingerprint=loaded.codec.fingerprint
        )  # CodecError if not
        pieces = input_pipeline.load_pieces(data_dir, f.split)
        train_pieces = input_pipeline.load_pieces(data_dir, "train")
    except input_pipeline.DataError as e:
        raise cli.UsageError(f"--split {f.split} of {data_dir}: {e}") from None
    return input_pipeline.dataset_dir(data_dir), pieces, train_pieces


def _continuations(f, loaded, pieces, primer_notes: int, settings: sampler.Settings) -> _Continuations:
    """Samples continuing the openings of pieces drawn from the split, beside the real ones."""
    real_idx, real_ids = continuations(pieces, primer_notes, f.num_notes)
    if not real_idx:
        raise cli.UsageError(
            f"--split {f.split}: no piece has more than {primer_notes} notes to prime with; "
            "lower --primer_notes"
        )
    rng = np.random.default_rng(f.seed)
    picked = rng.choice(real_idx, size=f.num_samples, replace=True)
    primers = [pieces.sequences[i][1 : 1 + primer_notes] for i in picked]
    genres = pieces.genres[picked]
    sample_ids = generate(loaded, primers, genres, num_notes=f.num_notes, settings=settings, seed=f.seed,
                          batch=min(f.batch, f.num_samples))  # fmt: skip
    ended = [ids.shape[0] < f.num_notes for ids in sample_ids]
    # Length-dependent statistics (pitch range and count, ...) compare like with like:
    # each sample is cut to the length of the real continuation of the piece it continues.
    real_length = dict(zip(real_idx, (ids.shape[0] for ids in real_ids), strict=True))
    cut = [ids[: real_length[i]] for ids, i in zip(sample_ids, picked, strict=True)]
    return _Continuations(real_idx, real_ids, picked, primers, genres, cut, ended, sample_ids)


def _samples_section(f, c: _Continuations, primer_notes: int, settings: sampler.Settings) -> dict:
    return {
        "num_samples": f.num_samples,
        "num_notes": f.num_notes,
        "primer_notes": primer_notes,
        "settings": settings.to_dict(),
        "seed": f.seed,
        "ended_share": float(np.mean(c.ended)),
        "real_continuations": len(c.real_idx),
        "real_ended_share": float(np.mean([ids.shape[0] < f.num_notes for ids in c.real_ids])),
        "mean_notes_generated": float(np.mean([ids.shape[0] for ids in c.sample_ids])),
        "mean_notes_real": float(np.mean([ids.shape[0] for ids in c.real_ids])),
        "degenerate_share": c.degenerate_share(),
        "real_degenerate_share": degenerate_share(c.real_ids),
    }


def _genre_section(codec, pieces, train_pieces, train, c: _Continuations, real, generated):
    """(genre adherence or why it was skipped, the classifier or None); train: the train
    split's `continuations` (indices, ids); real and generated: (notes, statistics) of
    the real continuations and of the samples."""
    if len(codec.genres) < 2:
        return {"skipped": f"the codec has {len(codec.genres)} genre; adherence needs 2+"}, None
    train_idx, train_ids = train
    if np.unique(train_pieces.genres[train_idx]).shape[0] < 2:
        return {"skipped": "the train split has pieces of only one genre"}, None
    train_features = genre_features([codec.decode(ids) for ids in train_ids])
    classifier = fit_genre_classifier(train_features, train_pieces.genres[train_idx])
    real_genres = pieces.genres[c.real_idx]
    section = genre_adherence(classifier, len(train_idx), genre_features(*real), real_genres,
                              genre_features(*generated), c.genres, tuple(codec.genres))  # fmt: skip
    return section, classifier


def _long_form(f, loaded, c: _Continuations, settings: sampler.Settings, real_stats, classifier) -> dict:
    """Samples of --long_notes notes (EOS never drawn) from the same primers: the statistics
    of their first and last --num_notes notes against the real continuations (overlap,
    and for a scalar statistic the share of samples outside the real range), and the
    genre the classifier gives each (does a sample hold its music to its end?)."""
    if not f.long_notes:
        return {"skipped": "--long_notes 0"}
    codec = loaded.codec
    ids = generate(loaded, c.primers, c.genres, num_notes=f.long_notes, seed=f.seed,
                   settings=dataclasses.replace(settings, fixed_length=True),
                   batch=min(f.batch, f.num_samples))  # fmt: skip
    parts = {"first": [x[: f.num_notes] for x in ids], "last": [x[-f.num_notes :] for x in ids]}
    notes = {k: [codec.decode(x) for x in v] for k, v in parts.items()}
    stats = {k: music_stats.statistics(v) for k, v in notes.items()}
    out: dict[str, Any] = {"long_notes": f.long_notes, "window_notes": f.num_notes, "statistics": {}}
    for name in music_stats.STATISTICS:
        overlap = {
            k: music_stats.compare_sets(real_stats[name], s[name])["overlap_area"] for k, s in stats.items()
        }
        out["statistics"][name] = {"first_overlap": overlap["first"], "last_overlap": overlap["last"]}
        outside = {k: music_stats.outside_range(real_stats[name], s[name]) for k, s in stats.items()}
        if outside["first"] is not None:
            out["statistics"][name] |= {"first_outside": outside["first"], "last_outside": outside["last"]}
    gaps = [v["first_overlap"] - v["last_overlap"] for v in out["statistics"].values()]
    out["largest_drop"] = float(max(gaps))
    if classifier is not None:
        out["genre_adherence"] = {
            k: float((classifier.predict(genre_features(notes[k], s)) == c.genres).mean())
            for k, s in stats.items()
        }
    return out


def _bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(value)
    return value.lower() == "true"


SWEEPABLE = {"temperature": float, "top_k": int, "top_p": float, "min_notes": int, "carry_state": _bool,
             "untempered_rhythm": _bool}  # fmt: skip


def parse_sweep(specs: Sequence[str]) -> list[dict[str, Any]]:
    """The grid of `--sweep name=v1,v2` flags (one per setting): every combination.

    Raises:
      UsageError: an unknown setting or a value of the wrong type.
    """
    import itertools

    axes = []
    for spec in specs:
        name, _, values = spec.partition("=")
        if name not in SWEEPABLE or not values:
            raise cli.UsageError(
                f"--sweep {spec!r}: use name=v1,v2,... with name one of {', '.join(SWEEPABLE)}"
            )
        try:
            axes.append([(name, SWEEPABLE[name](v)) for v in values.split(",")])
        except ValueError:
            raise cli.UsageError(f"--sweep {spec!r}: a value is not a {name}") from None
    return [dict(combo) for combo in itertools.product(*axes)] if axes else []


def _sweep_row(f, loaded, pieces, primer_notes: int, settings: sampler.Settings, real_stats) -> dict:
    """One sampling setting's summary: overlap areas, endings, degenerate samples, key."""
    codec = loaded.codec
    c = _continuations(f, loaded, pieces, primer_notes, settings)
    stats = music_stats.statistics([codec.decode(ids) for ids in c.sample_ids])
    overlap = {
        n: float(music_stats.compare_sets(real_stats[n], stats[n])["overlap_area"])
        for n in music_stats.STATISTICS
    }
    return {
        "settings": settings.to_dict(),
        "mean_overlap": float(np.mean(list(overlap.values()))),
        "min_overlap": float(np.min(list(overlap.values()))),
        "overlap": overlap,  # per statistic
        "ended_share": float(np.mean(c.ended)),
        "degenerate_share": c.degenerate_share(),
        "key_agreement": key_agreement(codec, c.primers, c.sample_ids),
    }


def run(f) -> dict:
    """The whole evaluation for parsed flags; returns the JSON report."""
    orders, settings = _check(f)
    sweep = parse_sweep(f.sweep or [])
    loaded = checkpoint_lib.load_for_inference(f.workdir, f.dtype)
    codec, config = loaded.codec, loaded.config
    dataset, pieces, train_pieces = _load_splits(f, loaded)
    primer_notes = config.encoder_len if f.primer_notes is None else f.primer_notes
    genres = tuple(codec.genres) or ("all",)
    report: dict[str, Any] = {
        "workdir": str(f.workdir),
        "checkpoint_step": loaded.step,
        "dtype": config.model.dtype,  # the products' input type (--dtype, or the checkpoint's)
        "dataset": str(dataset),
        "split": f.split,
        "pieces": len(pieces),
        "codec_fingerprint": codec.fingerprint,
        "genres": list(genres),
        "missing_genres": [g for i, g in enumerate(genres) if not (pieces.genres == i).any()],
    }
    report["likelihood"] = model_likelihood(
        config, loaded.model, loaded.params, pieces, genres, loaded.key_weights, loaded.common_key_tables
    )
    report["baselines"] = baseline_likelihoods(train_pieces, pieces, codec.vocab_size, orders, genres)

    c = _continuations(f, loaded, pieces, primer_notes, settings)
    real_notes = [codec.decode(ids) for ids in c.real_ids]
    sample_notes = [codec.decode(ids) for ids in c.sample_ids]
    real_stats, sample_stats = music_stats.statistics(real_notes), music_stats.statistics(sample_notes)
    report["samples"] = _samples_section(f, c, primer_notes, settings)
    report["statistics"] = {
        name: music_stats.compare_sets(real_stats[name], sample_stats[name])
        for name in music_stats.STATISTICS
    }
    # The train split's continuations: the reference overlaps' real music and the genre
    # classifier's training set.
    train = continuations(train_pieces, primer_notes, f.num_notes)
    # Real music ends after one note too (a degenerate continuation by the definition):
    # 1.6% of music21's train split, the share the samples' is judged against.
    report["samples"]["train_degenerate_share"] = degenerate_share(train[1]) if train[1] else None
    for name, value in (reference_overlaps(codec, train[1], real_stats, f.num_samples, f.seed) or {}).items():
        report["statistics"][name]["reference_overlap"] = value
    real_primers = [pieces.sequences[i][1 : 1 + primer_notes] for i in c.real_idx]
    rng = np.random.default_rng(f.seed)
    train_pick = rng.choice(len(train[0]), size=min(KEY_TRAIN_PIECES, len(train[0])), replace=False)
    counts = {
        "samples": key_agreement_counts(codec, c.primers, c.sample_ids),
        "real": key_agreement_counts(codec, real_primers, c.real_ids),
        # Real music's own share, on a split usually 10 to 20 times the evaluated one
        # (a validation split of 43 pieces measures it only to about +-14 points).
        "train_split": key_agreement_counts(
            codec,
            [train_pieces.sequences[train[0][i]][1 : 1 + primer_notes] for i in train_pick],
            [train[1][i] for i in train_pick],
        ),
    }
    shares = {name: _share(v) for name, v in counts.items()}
    report["key_agreement"] = {**{name: v["share"] for name, v in shares.items()}, "counts": shares}
    report["genre_adherence"], classifier = _genre_section(codec, pieces, train_pieces, train, c,
                                                           (real_notes, real_stats),
                                                           (sample_notes, sample_stats))  # fmt: skip
    report["long_form"] = _long_form(f, loaded, c, settings, real_stats, classifier)
    if sweep:
        report["sweep"] = [_sweep_row(f, loaded, pieces, primer_notes, dataclasses.replace(settings, **combo),
                                      real_stats) for combo in sweep]  # fmt: skip
    if f.plots:
        report["plots"] = plot(f.plots, real_stats, sample_stats, report)
    return report


def plot(out_dir: str | os.PathLike, real: dict, generated: dict, report: dict) -> list[str]:
    """PNGs: per statistic, real against generated values and the distance densities;
    likelihood.png, the model's NLL per genre against the baselines. Returns the names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    for name in music_stats.STATISTICS:
        r, g = real[name], generated[name]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        if r.shape[1] > 1:  # a histogram statistic: mean bins side by side
            x = np.arange(r.shape[1])
            left.bar(x - 0.2, r.mean(0), 0.4, label=f"real ({r.shape[0]})")
            left.bar(x + 0.2, g.mean(0), 0.4, label=f"generated ({g.shape[0]})")
            labels = (["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
                      if name == "pitch_class_histogram" else
                      [f"<{e:g}s" for e in music_stats.NOTE_LENGTH_EDGES[1:-1]] + ["longer"])  # fmt: skip
            left.set_xticks(x, labels, fontsize=7)
            left.set_ylabel("mean share of notes")
        else:
            bins = np.histogram_bin_edges(np.concatenate([r[:, 0], g[:, 0]]), bins=30)
            left.hist(r[:, 0], bins, alpha=0.55, density=True, label=f"real ({r.shape[0]})")
            left.hist(g[:, 0], bins, alpha=0.55, density=True, label=f"generated ({g.shape[0]})")
            left.set_ylabel("density")
        left.set_title(name.replace("_", " "))
        left.legend(fontsize=8)
        grid, p, q = music_stats.distance_densities(r, g)
        right.plot(grid, p, label="real to real (intra-set)")
        right.plot(grid, q, label="real to generated (inter-set)")
        right.fill_between(grid, np.minimum(p, q), alpha=0.25)
        s = report["statistics"][name]
        right.set_title(f"distances: overlap {s['overlap_area']:.3f}, KL {s['kl_divergence']:.3f}")
        right.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=90)
        plt.close(fig)
        written.append(f"{name}.png")

    rows = {"LSTM": report["likelihood"], **report["baselines"]}
    groups = ["overall", *report["likelihood"]["per_genre"]]
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(groups), 3.6))
    width = 0.8 / len(rows)
    for k, (label, lik) in enumerate(rows.items()):
        vals = [lik["overall"]["nll_nats"] if grp == "overall" else lik["per_genre"][grp]["nll_nats"]
                for grp in groups]  # fmt: skip
        ax.bar(np.arange(len(groups)) + (k - (len(rows) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("NLL per note (nats)")
    ax.set_title(f"{report['split']} split, checkpoint {report['checkpoint_step']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "likelihood.png", dpi=90)
    plt.close(fig)
    written.append("likelihood.png")
    return written


def _drawing_flags(settings: dict, carried: str) -> str:
    """The switches a report's settings turn on, as ", <carried>, untempered rhythm,
    min_notes N" (min_notes when not 1, the default: a continuation is never empty)."""
    min_notes = settings.get("min_notes", 1)
    return (
        (f", {carried}" if settings.get("carry_state") else "")
        + (", untempered rhythm" if settings.get("untempered_rhythm") else "")
        + (f", min_notes {min_notes}" if min_notes != 1 and not settings.get("fixed_length") else "")
    )


def _share_text(ka: dict, name: str) -> str:
    """One key-agreement share as '56.7% (50.6 to 62.6, 254)', or '56.7%' in reports
    from before the intervals."""
    c = ka.get("counts", {}).get(name)
    if c is None:
        return f"{100 * ka[name]:.1f}%"
    lo, hi = c["interval"]
    return f"{100 * c['share']:.1f}% ({100 * lo:.1f} to {100 * hi:.1f}, {c['pairs']})"


def genre_lines(ga: dict, split: str) -> list[str]:
    """The report's genre-adherence lines: overall, then per genre (or why it has no samples)."""
    if "skipped" in ga:
        return [f"genre adherence: skipped ({ga['skipped']})"]
    lines = [
        f"genre adherence: {100 * ga['adherence']:.1f}% of samples classified as the genre asked; "
        f"classifier accuracy on real {split} pieces {100 * ga['real_accuracy']:.1f}% "
        f"(majority class {100 * ga['real_chance']:.1f}%)"
    ]
    for g, v in ga["per_genre"].items():
        if not v["samples"]:
            # Primers are drawn at random from the split's pieces: a genre with a few
            # pieces can go undrawn in a small number of samples.
            why = (f"no primer drawn from its {v['real_pieces']} pieces; more --num_samples draw more"
                   if v["real_pieces"] else f"no piece of {g} in split {split} to prime with")  # fmt: skip
            lines.append(f"  {g}: no samples ({why})")
            continue
        real = f"{100 * v['real_accuracy']:.1f}%" if v["real_accuracy"] is not None else "-"
        lines.append(f"  {g}: {v['samples']} samples, {100 * v['adherence']:.1f}% classified {g} "
                     f"(real pieces: {real} of {v['real_pieces']})")  # fmt: skip
    return lines


def format_report(r: dict) -> str:
    """The report as the table printed on stdout."""
    lines = [
        f"{r['workdir']} checkpoint {r['checkpoint_step']}, split {r['split']} of {r['dataset']}: "
        f"{r['pieces']} pieces, {r['likelihood']['overall']['notes']:,.0f} notes"
        + (f"; products in {r['dtype']}" if r.get("dtype", "float32") != "float32" else "")
    ]
    genres = list(r["likelihood"]["per_genre"])
    head = f"{'per-note likelihood':<26}{'nats':>7}{'bits':>7}{'ppl':>8}{'acc':>7}" + "".join(
        f"{g + ' nats':>16}" for g in genres
    )
    lines += ["", head]
    for name, lik in {"LSTM": r["likelihood"], **r["baselines"]}.items():
        o = lik["overall"]
        acc = f"{100 * o['accuracy']:6.1f}%" if o["accuracy"] is not None else f"{'-':>7}"
        lines.append(f"{name:<26}{o['nll_nats']:7.3f}{o['nll_bits']:7.3f}{o['perplexity']:8.1f}{acc}"
                     + "".join(f"{lik['per_genre'][g]['nll_nats']:16.3f}" for g in genres))  # fmt: skip
    for g in r["missing_genres"]:
        lines.append(f"genre {g}: no pieces in split {r['split']}")
    s = r["samples"]
    lines += [
        "",
        f"{s['num_samples']} samples of up to {s['num_notes']} notes after {s['primer_notes']}-note primers "
        f"(temperature {s['settings']['temperature']}, top_k {s['settings']['top_k']}, "
        f"top_p {s['settings']['top_p']}{_drawing_flags(s['settings'], 'carried state')}, "
        f"seed {s['seed']}): {100 * s['ended_share']:.0f}% ended (EOS) "
        f"before {s['num_notes']} notes; real: {s['real_continuations']} continuations, "
        f"{100 * s['real_ended_share']:.0f}% ended",
        f"statistics of samples cut to their real continuation's length (mean "
        f"{s['mean_notes_generated']:.1f} notes; real {s['mean_notes_real']:.1f})",
        f"{'statistic':<26}{'real mean':>11}{'gen. mean':>11}{'overlap':>9}{'KL':>8}{'train split':>13}",
    ]
    for name, st in r["statistics"].items():
        means = (f"{st['real_mean']:11.3f}{st['generated_mean']:11.3f}" if isinstance(st["real_mean"], float)
                 else f"{'(hist.)':>11}{'(hist.)':>11}")  # fmt: skip
        reference = f"{st['reference_overlap']:13.3f}" if "reference_overlap" in st else ""
        lines.append(f"{name:<26}{means}{st['overlap_area']:9.3f}{st['kl_divergence']:8.3f}{reference}")
    if any("reference_overlap" in st for st in r["statistics"].values()):
        lines.append(
            "train split: the overlap of real music in the samples' place (continuations of "
            "the train split's pieces), what a model whose samples were real music would score; "
            "every overlap falls as --num_samples grows (docs/evaluation.md), so compare at one count"
        )
    lines.append(f"degenerate samples: {100 * s['degenerate_share']:.1f}% "
                 f"(real continuations: {100 * s['real_degenerate_share']:.1f}%"
                 + (f"; the train split's: {100 * s['train_degenerate_share']:.1f}%"
                    if s.get("train_degenerate_share") is not None else "") + ")")  # fmt: skip
    ka = r["key_agreement"]
    labels = {"samples": "samples", "real": "real", "train_split": "train split (real)"}
    shares = [f"{label} {_share_text(ka, name)}" for name, label in labels.items() if name in ka]
    lines.append("key agreement (Krumhansl-Schmuckler key of the continuation = the primer's; "
                 "95% intervals): " + ", ".join(shares))  # fmt: skip
    lf = r.get("long_form", {})
    if "statistics" in lf:
        lines.append(f"long samples ({lf['long_notes']} notes, EOS never drawn), overlap with the real "
                     f"continuations of their first / last {lf['window_notes']} notes "
                     f"(largest drop {lf['largest_drop']:.3f}):")  # fmt: skip
        for name, v in lf["statistics"].items():
            line = f"  {name:<24}{v['first_overlap']:7.3f} /{v['last_overlap']:6.3f}"
            if "first_outside" in v:
                first, last = 100 * v["first_outside"], 100 * v["last_outside"]
                line += f"   outside the real range: {first:4.1f}% / {last:4.1f}%"
            lines.append(line)
        if "genre_adherence" in lf:
            g = lf["genre_adherence"]
            lines.append(f"  genre adherence: first {100 * g['first']:.1f}%, last {100 * g['last']:.1f}%")
    if r.get("sweep"):
        lines += ["", f"{'sweep':<72}{'mean ovl':>9}{'min ovl':>9}{'ended':>7}{'degen.':>7}{'key':>7}"]
        for row in r["sweep"]:
            st = row["settings"]
            name = (f"temperature {st['temperature']}, top_k {st['top_k']}, top_p {st['top_p']}"
                    + _drawing_flags(st, "carried"))  # fmt: skip
            lines.append(f"{name:<72}{row['mean_overlap']:9.3f}{row['min_overlap']:9.3f}"
                         f"{100 * row['ended_share']:6.0f}%{100 * row['degenerate_share']:6.1f}%"
                         f"{100 * row['key_agreement']:6.1f}%")  # fmt: skip
    lines.append("")
    lines.extend(genre_lines(r["genre_adherence"], r["split"]))
    return "\n".join(lines)


def _define_flags(fv, argv: list[str]) -> None:
    from absl import flags

    from jaxmusic.sample import define_sampling_flags

    flags.DEFINE_string("workdir", None, "a training workdir (its latest checkpoint)", flag_values=fv)
    flags.DEFINE_string("split", "validation", "the dataset split to evaluate on", flag_values=fv)
    flags.DEFINE_string(
        "data_dir", None, "the dataset (default: the one the model trained on)", flag_values=fv
    )
    flags.DEFINE_integer("num_samples", 64, "samples generated for the statistics", flag_values=fv)
    flags.DEFINE_integer("num_notes", 128, "notes per sample (and per real continuation)", flag_values=fv)
    flags.DEFINE_integer("primer_notes", None, "notes of a real piece each sample continues "
                         "(default: the config's encoder_len)", flag_values=fv)  # fmt: skip
    flags.DEFINE_string(
        "ngram_orders", "2,3,4", "Kneser-Ney baseline orders, comma-separated", flag_values=fv
    )
    define_sampling_flags(fv)
    flags.DEFINE_integer("seed", 0, "primer choice and sampling", flag_values=fv)
    flags.DEFINE_integer("batch", 64, "samples generated at once", flag_values=fv)
    sweepable = ", ".join(SWEEPABLE)
    flags.DEFINE_multi_string("sweep", [], f"name=v1,v2,...: also sample with each value of a setting "
                              f"({sweepable}; several: every combination)", flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("long_notes", 1024, "notes of the long samples whose first and last "
                         "--num_notes notes are compared (0: none)", flag_values=fv)  # fmt: skip
    flags.DEFINE_string("json", None, "write the report here", flag_values=fv)
    flags.DEFINE_string("plots", None, "write PNG plots into this folder", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)


@cli.entry_point
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()
    f, _ = cli.parse_flags(
        argv, _define_flags, prog="python -m jaxmusic.evaluate", doc=__doc__, log_level="error"
    )
    report = run(f)
    print(format_report(report))
    if f.json:
        cli.atomic_write(f.json, json.dumps(report, indent=1))
        print(f"report: {f.json}")
    if f.plots:
        print(f"plots: {', '.join(str(Path(f.plots) / p) for p in report['plots'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
