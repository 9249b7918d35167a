"""The report as people read it: the printed table (`format_report`) and the plots
(`plot`), each made from the report dict alone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxmusic import music_stats
from jaxmusic.evaluation import form


def plot(out_dir: str | os.PathLike, report: dict, real: dict, generated: dict, *,
         long: form.Long | None = None, form_stats: dict | None = None) -> list[str]:  # fmt: skip
    """PNGs: per statistic, real against generated values and the distance densities;
    likelihood.png, the model's NLL per genre against the baselines; with `long` and
    `form_stats` (`form.section`'s long samples and statistics), each form statistic too
    and form.png, which notes recur where in a few samples beside their real
    continuations. real, generated: {statistic: float64[P, d]}. Returns the names."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    written = [_statistic_png(out_dir, name, real[name], generated[name], report["statistics"][name])
               for name in real]  # fmt: skip
    written.append(_likelihood_png(out_dir, report))
    if long is not None:
        for name, row in report["form"]["statistics"].items():
            real_form, sample_form = form_stats["real"][name], form_stats["samples"][name]
            written.append(_statistic_png(out_dir, f"form_{name}", real_form, sample_form, row))
        written.append(_self_similarity_png(out_dir, long))
    return written


_BIN_LABELS = {
    "pitch_class_histogram": ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"],
    "note_length_histogram": [f"<{e:g}s" for e in music_stats.NOTE_LENGTH_EDGES[1:-1]] + ["longer"],
    "form_lag_histogram": [f">={e}" for e in form.LAG_EDGES],
    "instrument_share": [
        "piano",
        "chrom",
        "organ",
        "guitar",
        "bass",
        "str",
        "ens",
        "brass",
        "reed",
        "pipe",
        "lead",
        "pad",
        "fx",
        "ethnic",
        "perc",
        "sfx",
        "drums",
    ],  # General MIDI's families
}


def _statistic_png(out_dir: Path, name: str, r, g, row: dict) -> str:
    """name.png: real against generated values (left) and the distance densities (right)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if r.shape[1] > 1:  # a histogram statistic: mean bins side by side
        x = np.arange(r.shape[1])
        left.bar(x - 0.2, r.mean(0), 0.4, label=f"real ({r.shape[0]})")
        left.bar(x + 0.2, g.mean(0), 0.4, label=f"generated ({g.shape[0]})")
        labels = _BIN_LABELS.get(name, [str(k) for k in x])
        left.set_xticks(x, labels, fontsize=7, rotation=60 if len(x) > 12 else 0)  # many bins: slanted
        left.set_ylabel("mean share")
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
    right.set_title(f"distances: overlap {row['overlap_area']:.3f}, KL {row['kl_divergence']:.3f}")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=90)
    plt.close(fig)
    return f"{name}.png"


def _likelihood_png(out_dir: Path, report: dict) -> str:
    """likelihood.png: the model's NLL per genre against the baselines."""
    import matplotlib.pyplot as plt

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
    return "likelihood.png"


def _self_similarity_png(out_dir: Path, long, count: int = 3) -> str:
    """form.png: for a few samples (top) and real continuations (bottom), a dot where the
    4 notes from note i equal the 4 from note j: repeated material shows as diagonals."""
    import matplotlib.pyplot as plt

    rows = [("sample", long.sample_ids[:count]), ("real", long.real_ids[:count])]
    fig, axes = plt.subplots(2, count, figsize=(3.2 * count, 6.6), squeeze=False)
    for r, (label, pieces) in enumerate(rows):
        for c in range(count):
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= len(pieces):
                continue
            ax.imshow(_four_gram_matches(pieces[c]), cmap="Greys", interpolation="nearest")
            ax.set_title(f"{label} {c + 1}: {len(pieces[c])} notes", fontsize=9)
    fig.suptitle("self-similarity: equal 4-note figures at notes i and j")
    fig.tight_layout()
    fig.savefig(out_dir / "form.png", dpi=90)
    plt.close(fig)
    return "form.png"


def _four_gram_matches(ids: np.ndarray) -> np.ndarray:
    """bool[n - 3, n - 3]: whether the 4-note figures from notes i and j are equal."""
    ids = np.asarray(ids)
    if ids.shape[0] < 4:
        return np.zeros((1, 1), bool)
    grams = np.lib.stride_tricks.sliding_window_view(ids, 4)
    return (grams[:, None, :] == grams[None, :, :]).all(-1)


def _drawing_flags(settings: dict, carried: str) -> str:
    """The switches a report's settings turn on, as ", <carried>, untempered rhythm,
    min_notes N" (min_notes when not 1, the default: a continuation is never empty)."""
    min_notes = settings.get("min_notes", 1)
    return (
        (f", {carried}" if settings.get("carry_state") else "")
        + (", untempered rhythm" if settings.get("untempered_rhythm") else "")
        + (", the primer's instruments" if settings.get("primer_instruments") else "")
        + (", untempered instruments" if settings.get("untempered_instruments") else "")
        + (f", min_notes {min_notes}" if min_notes != 1 and not settings.get("fixed_length") else "")
    )


def _key_line(ka: dict) -> str:
    """The key-agreement section as one line."""
    labels = {"samples": "samples", "real": "real", "train_split": "train split (real)"}
    shares = [f"{label} {_share_text(ka, name)}" for name, label in labels.items() if name in ka]
    return "key agreement (Krumhansl-Schmuckler key of the continuation = the primer's; 95% intervals): " + (
        ", ".join(shares)
    )


def _share_text(ka: dict, name: str) -> str:
    """One key-agreement share as '56.7% (50.6 to 62.6, 254)', or '56.7%' in reports
    from before the intervals."""
    c = ka.get("counts", {}).get(name)
    if c is None:
        return f"{100 * ka[name]:.1f}%"
    lo, hi = c["interval"]
    return f"{100 * c['share']:.1f}% ({100 * lo:.1f} to {100 * hi:.1f}, {c['pairs']})"


def form_lines(f: dict) -> list[str]:
    """The report's form lines: repetition, returns and loops of long samples against
    real continuations (or why it was skipped; none for a report from before it)."""
    if not f:
        return []
    if "skipped" in f:
        return [f"form: skipped ({f['skipped']})"]
    lines = [
        f"form: {f['samples']} samples of {f['form_notes']} notes (EOS never drawn) against the real "
        f"continuations of {f['real_continuations']} pieces (train split: {f['train_continuations']})",
        f"  {'statistic':<24}{'real mean':>11}{'gen. mean':>11}{'overlap':>9}{'KL':>8}"
        f"{'train mean':>12}{'train ovl.':>11}",
    ]
    for name, st in f["statistics"].items():
        if not isinstance(st["real_mean"], float):
            continue  # the lag histogram: its plot
        train = f"{st['train_mean']:12.3f}{st['reference_overlap']:11.3f}" if "train_mean" in st else ""
        means = f"{st['real_mean']:11.3f}{st['generated_mean']:11.3f}"
        lines.append(f"  {name:<24}{means}{st['overlap_area']:9.3f}{st['kl_divergence']:8.3f}{train}")
    lag = f["statistics"]["lag_histogram"]
    lines.append(f"  lag histogram overlap {lag['overlap_area']:.3f}; pieces more than half loop: "
                 + ", ".join(f"{k} {100 * v:.1f}%" for k, v in f["looping_share"].items()))  # fmt: skip
    return lines


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
        f"{r['workdir']} checkpoint {r['checkpoint_step']} ({r.get('checkpoint') or 'latest'}), "
        f"split {r['split']} of {r['dataset']}: "
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
    band = ", the piece's line-up" if s.get("line_up") == "piece" else ""
    lines += [
        "",
        f"{s['num_samples']} samples of up to {s['num_notes']} notes after {s['primer_notes']}-note primers "
        f"(temperature {s['settings']['temperature']}, top_k {s['settings']['top_k']}, "
        f"top_p {s['settings']['top_p']}{_drawing_flags(s['settings'], 'carried state')}{band}, "
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
    lines += instrumentation_lines(r.get("instrumentation"))
    lines.append(_key_line(r["key_agreement"]))
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
    lines += form_lines(r.get("form", {}))
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


def instrumentation_lines(ins: dict | None) -> list[str]:
    """The instrumentation section (`statistics.instrumentation`) as text (none for a merged codec)."""
    if not ins:
        return []
    d, n = ins["with_drums"], ins["instruments_per_piece"]
    lines = [f"with drums: samples {100 * d['samples']:.1f}%, real {100 * d['real']:.1f}%"
             + (f", train split {100 * d['train_split']:.1f}%" if d.get("train_split") is not None else "")
             + f"; instruments per piece: samples {n['samples']:.2f}, real {n['real']:.2f}"]  # fmt: skip
    real, samples = ins["pitch_range"]["real"], ins["pitch_range"]["samples"]
    ranges = [f"{name} {lo:.0f}-{hi:.0f} " + _range_text(samples.get(name)) for name, (lo, hi) in
              real.items()]  # fmt: skip
    lines.append("pitch ranges, real (samples), 5th-95th percentile: " + ", ".join(ranges))
    return lines


def _range_text(pitches: list[float] | None) -> str:
    return f"({pitches[0]:.0f}-{pitches[1]:.0f})" if pitches else "(none)"
