"""python -m jaxmusic.evaluate end to end on a tiny checkpoint, and its bad input."""

import json
import math

import pytest

from jaxmusic import evaluate, metric_writer
from jaxmusic.evaluation import genre, keys, report, samples, statistics


def _evaluate(workdir, *extra):
    return evaluate.main(["--workdir", str(workdir), "--num_samples", "6", "--num_notes", "12",
                          "--batch", "4", "--long_notes", "36", *extra])  # fmt: skip


def test_degenerate_samples_are_judged_as_written():
    """A sample cut to a 2-note real continuation is judged on all it wrote."""
    import numpy as np

    written = [np.asarray([9, 9, 10, 11, 12]), np.asarray([7, 7, 7, 8])]
    cut = [w[:2] for w in written]
    c = samples.Continuations([0, 1], cut, np.asarray([0, 1]), [], np.zeros(2), cut, [False] * 2, written,
                              None)  # fmt: skip
    assert c.degenerate_share() == 0.5  # the second repeats one note over half of what it wrote


def test_key_agreement_counts_and_interval():
    """Pairs in and out of their primer's key, a pair with no key left out; the interval is
    where the share's binomial likelihood ratio meets z (the quadratic's two roots)."""
    import numpy as np

    from jaxmusic import midi_io

    def scale(tonic, steps=(0, 2, 4, 5, 7, 9, 11)):
        pitches = [60 + tonic + s for s in steps]
        t = np.arange(len(pitches), dtype=np.float64)
        return midi_io.make_notes(t, t + 1, np.asarray(pitches), np.full(len(pitches), 80))

    class Codec:  # ids are the pieces themselves
        decode = staticmethod(lambda piece: piece)

    c, g, f_sharp, one = scale(0), scale(7), scale(6), scale(0, (0, 12))
    counts = keys.agreement_counts(Codec, [c, c, g, c], [c, f_sharp, g, one])
    assert counts == (2, 3)  # C-C and G-G agree, C-F# does not, a lone pitch class has no key
    assert keys.agreement(Codec, [c, c, g, c], [c, f_sharp, g, one]) == pytest.approx(2 / 3)

    for k, n in ((30, 43), (0, 10), (10, 10), (127, 256)):
        lo, hi = keys.wilson_interval(k, n)
        z, p = 1.96, k / n
        # (p - q)^2 = z^2 q (1 - q) / n  <=>  (1 + z^2/n) q^2 - (2p + z^2/n) q + p^2 = 0
        a, b, c2 = 1 + z * z / n, -(2 * p + z * z / n), p * p
        roots = sorted((-b + sign * math.sqrt(b * b - 4 * a * c2)) / (2 * a) for sign in (-1, 1))
        assert (lo, hi) == pytest.approx(roots, abs=1e-12)
        assert lo <= p <= hi
    assert keys.wilson_interval(30, 43) == pytest.approx((0.549, 0.814), abs=1e-3)
    assert keys.wilson_interval(0, 0) == (0.0, 1.0)


def test_sweep_rows_name_every_switch():
    """A row of a min_notes sweep says which it is (rows of min_notes 1 and 8 once read alike)."""
    flags = report._drawing_flags
    assert flags({"min_notes": 1, "untempered_rhythm": True}, "carried") == ", untempered rhythm"
    assert flags({"min_notes": 8, "carry_state": True}, "carried") == ", carried, min_notes 8"
    assert flags({"min_notes": 8, "fixed_length": True}, "carried") == ""  # never ends: no minimum to tell


def test_genre_classifier_hears_what_the_statistics_cannot():
    """Two genres of the same melodies two octaves apart: every statistic is the same for
    a melody and its copy, so a classifier of the statistics alone is at chance on the
    held-out pairs; the descriptors' register tells them apart."""
    import numpy as np

    from jaxmusic import midi_io, music_stats

    rng = np.random.default_rng(0)
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    pieces, genres = [], []
    for _ in range(40):
        start = np.cumsum(rng.choice([0.25, 0.5, 1.0], 24))
        pitch = 48 + rng.choice(scale, 24) + 12 * rng.integers(0, 2, 24)
        for label, shift in ((0, 0), (1, 24)):
            pieces.append(midi_io.make_notes(start, start + 0.2, pitch + shift, np.full(24, 70)))
            genres.append(label)
    genres = np.asarray(genres)
    features = genre.features(pieces)
    columns = sum(music_stats.statistics(pieces[:1])[n].shape[1] for n in music_stats.STATISTICS)
    assert features.shape == (80, columns + 88)
    np.testing.assert_allclose(features[0::2, :columns], features[1::2, :columns])  # statistics: alike
    train, test = slice(0, 60), slice(60, 80)
    classifier = genre.fit_classifier(features[train], genres[train])
    assert (classifier.predict(features[test]) == genres[test]).mean() == 1.0
    from_statistics = genre.fit_classifier(features[train, :columns], genres[train])
    predicted = from_statistics.predict(features[test, :columns])
    assert (predicted[0::2] == predicted[1::2]).all()  # each pair alike: right on at most half


def test_genre_lines_tell_an_undrawn_genre_from_an_absent_one():
    """A genre with pieces in the split but no primer drawn from them is not reported as
    having no piece to prime with (once it was, in a 64-sample report)."""
    import numpy as np

    class ByFirstColumn:  # a stand-in classifier: the genre is the first feature
        def predict(self, x):
            return x[:, 0].astype(int)

    real = np.array([[0], [0], [1], [2]])  # genres 0, 0, 1 (2 is misclassified below)
    samples = np.array([[0], [0], [2]])
    ga = genre.adherence(ByFirstColumn(), 10, real, np.array([0, 0, 1, 1]), samples,
                                  np.array([0, 0, 0]), ("a", "b", "c"))  # fmt: skip
    assert ga["real_accuracy"] == 0.75 and ga["adherence"] == 2 / 3
    lines = report.genre_lines(ga, "validation")
    assert lines[1] == "  a: 3 samples, 66.7% classified a (real pieces: 100.0% of 2)"
    assert lines[2] == "  b: no samples (no primer drawn from its 2 pieces; more --num_samples draw more)"
    assert lines[3] == "  c: no samples (no piece of c in split validation to prime with)"
    assert report.genre_lines({"skipped": "one genre"}, "test") == ["genre adherence: skipped (one genre)"]


def test_cli_end_to_end(trained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert _evaluate(trained, "--json", str(out), "--plots", str(tmp_path / "plots"),
                     "--sweep", "temperature=0.5,0.9", "--sweep", "carry_state=false,true") == 0  # fmt: skip
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())

    # The likelihood is the training run's own final evaluation on the same split.
    final = [m for m in metric_writer.read_metrics(trained) if "eval_nll" in m][-1]
    lik = report["likelihood"]["overall"]
    assert lik["nll_nats"] == pytest.approx(final["eval_nll"], rel=1e-5)
    assert lik["accuracy"] == pytest.approx(final["eval_accuracy"], rel=1e-5)
    assert lik["nll_bits"] == pytest.approx(lik["nll_nats"] / math.log(2))
    assert lik["notes"] == final["eval_notes"]
    # Every baseline scores the same targets, and is a proper distribution (below uniform).
    assert set(report["baselines"]) == {"unigram (add-one)", "Kneser-Ney 2-gram", "Kneser-Ney 3-gram",
                                        "Kneser-Ney 4-gram"}  # fmt: skip
    for b in report["baselines"].values():
        assert b["overall"]["notes"] == lik["notes"]
        assert 0 < b["overall"]["nll_nats"] < math.log(1 << 16)
    # Per genre: exactly the genres the split has, their notes adding up.
    per_genre = report["likelihood"]["per_genre"]
    assert sorted(per_genre) == sorted(set(report["genres"]) - set(report["missing_genres"]))
    assert sum(g["notes"] for g in per_genre.values()) == lik["notes"]
    for g in report["missing_genres"]:
        assert f"genre {g}: no pieces in split validation" in printed

    s = report["samples"]
    assert s["num_samples"] == 6 and s["primer_notes"] == 6  # tiny config's encoder_len
    assert 0 <= s["mean_notes_generated"] <= 12 and 0 < s["mean_notes_real"] <= 12
    assert 0 <= s["degenerate_share"] <= 1 and s["real_degenerate_share"] == 0
    assert s["train_degenerate_share"] == 0 and "the train split's: 0.0%" in printed
    assert set(report["statistics"]) == {
        "pitch_class_histogram", "pitch_class_entropy", "scale_consistency", "pitch_range",
        "pitch_count", "average_pitch_interval", "inter_onset_interval", "note_length_histogram",
        "polyphony", "note_density",
    }  # fmt: skip
    ka = report["key_agreement"]
    for name in ("samples", "real", "train_split"):
        share = ka["counts"][name]
        assert 0 <= ka[name] <= 1 and share["share"] == ka[name]
        assert share["interval"][0] <= ka[name] <= share["interval"][1]
    assert ka["counts"]["samples"]["pairs"] <= 6 and ka["counts"]["train_split"]["pairs"] > 6
    assert "key agreement (Krumhansl-Schmuckler" in printed and "train split (real)" in printed
    for st in report["statistics"].values():
        assert 0 <= st["overlap_area"] <= 1 and st["kl_divergence"] >= 0
        assert 0 <= st["reference_overlap"] <= 1
    assert "train split: the overlap of real music" in printed
    ga = report["genre_adherence"]
    assert 0 <= ga["adherence"] <= 1 and 0 <= ga["real_accuracy"] <= 1
    assert sum(v["samples"] for v in ga["per_genre"].values()) == 6
    assert "genre adherence:" in printed and "Kneser-Ney 3-gram" in printed

    # Long samples: their first and last 12 notes, each set compared with the real ones.
    lf = report["long_form"]
    assert (lf["long_notes"], lf["window_notes"]) == (36, 12)
    assert set(lf["statistics"]) == set(report["statistics"])
    for v in lf["statistics"].values():
        assert 0 <= v["first_overlap"] <= 1 and 0 <= v["last_overlap"] <= 1
    scalar = {name for name, st in report["statistics"].items() if isinstance(st["real_mean"], float)}
    assert {name for name, v in lf["statistics"].items() if "last_outside" in v} == scalar
    for name in scalar:
        v = lf["statistics"][name]
        assert 0 <= v["first_outside"] <= 1 and 0 <= v["last_outside"] <= 1
    assert "outside the real range" in printed
    assert lf["largest_drop"] == max(
        v["first_overlap"] - v["last_overlap"] for v in lf["statistics"].values()
    )
    assert 0 <= lf["genre_adherence"]["first"] <= 1 and 0 <= lf["genre_adherence"]["last"] <= 1
    assert "long samples (36 notes, EOS never drawn)" in printed
    # The sweep: every combination, in order, each with its own samples.
    sweep = [(r["settings"]["temperature"], r["settings"]["carry_state"]) for r in report["sweep"]]
    assert sweep == [(0.5, False), (0.5, True), (0.9, False), (0.9, True)]
    assert report["sweep"][2]["mean_overlap"] == pytest.approx(
        sum(st["overlap_area"] for st in report["statistics"].values()) / len(report["statistics"])
    )  # the default temperature without carried state: the report's own samples
    assert report["sweep"][2]["overlap"] == pytest.approx(
        {name: st["overlap_area"] for name, st in report["statistics"].items()}
    )
    assert "temperature 0.5, top_k 0, top_p 0.9, carried" in printed

    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == sorted(report["plots"]) and len(pngs) == 11
    for p in (tmp_path / "plots").iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_reference_overlap_is_high_for_real_music_and_low_for_a_repeated_note(built):
    """The train split's real continuations in the samples' place overlap the validation
    split's more than pieces that repeat one pseudo-note do."""
    import numpy as np

    from jaxmusic import codec as codec_lib
    from jaxmusic import input_pipeline, music_stats, windows

    data_dir = built[0]
    codec = input_pipeline.load_codec(data_dir)
    real, train = (input_pipeline.load_pieces(data_dir, s) for s in ("validation", "train"))
    _, real_ids = samples.continuations(real, 6, 12)
    real_stats = music_stats.statistics([codec.decode(ids) for ids in real_ids])

    def reference(pieces):
        _, ids = samples.continuations(pieces, 6, 12)
        return statistics.reference_overlaps(codec, ids, real_stats, count=8, seed=0)

    ours = reference(train)
    one = np.asarray([codec_lib.BOS, *[codec.first_note_id + 3] * 30, codec_lib.EOS], np.int32)
    theirs = reference(windows.Pieces([one] * 8, np.zeros(8, np.int32)))
    assert set(ours) == set(music_stats.STATISTICS)
    assert np.mean(list(ours.values())) > np.mean(list(theirs.values())) + 0.2
    short = windows.Pieces([one[:5]], np.zeros(1, np.int32))  # no piece longer than the primer
    assert reference(short) is None


def test_same_seed_same_report(trained, tmp_path):
    for name in ("a", "b"):
        assert _evaluate(trained, "--seed", "3", "--json", str(tmp_path / name)) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a", "b"))
    assert a["statistics"] == b["statistics"] and a["samples"] == b["samples"]


def test_bfloat16_products_score_as_float32(trained, tmp_path, capsys):
    """--dtype bfloat16 evaluates (and samples from) a float32-trained model with bfloat16
    product inputs: the same likelihood to bfloat16's rounding, and the report says so."""
    for dtype in ("float32", "bfloat16"):
        assert _evaluate(trained, "--dtype", dtype, "--long_notes", "0", "--json", str(tmp_path / dtype)) == 0
    f32, bf16 = (json.loads((tmp_path / d).read_text()) for d in ("float32", "bfloat16"))
    assert (f32["dtype"], bf16["dtype"]) == ("float32", "bfloat16")
    a, b = f32["likelihood"]["overall"]["nll_nats"], bf16["likelihood"]["overall"]["nll_nats"]
    assert a != b and b == pytest.approx(a, abs=0.01)
    assert "products in bfloat16" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num_samples", "0"], "--num_samples must be >= 1, got 0"),
        (["--split", "holdout"], "split 'holdout' is not in the dataset; it has:"),
        (["--ngram_orders", "1,3"], "--ngram_orders must be >= 2"),
        (["--ngram_orders", "two"], "--ngram_orders must be comma-separated integers"),
        (["--primer_notes", "100000"], "no piece has more than 100000 notes to prime with"),
        (["--top_p", "2"], "--top_p must be in (0, 1]"),
        (["--sweep", "warmth=1"], "--sweep 'warmth=1': use name=v1,v2,... with name one of temperature"),
        (["--sweep", "top_k=high"], "--sweep 'top_k=high': a value is not a top_k"),
        (["--sweep", "carry_state=yes"], "--sweep 'carry_state=yes': a value is not a carry_state"),
        (["--long_notes", "13"], "--long_notes must be 0 or >= 2 x num_notes (24), got 13"),
        (["--dtype", "float8"], "--dtype 'float8' is not one of float32, bfloat16, float16"),
    ],
)
def test_bad_input_is_one_clear_line(trained, tmp_path, capsys, extra, message):
    assert _evaluate(trained, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_paths(trained, tmp_path, capsys):
    assert _evaluate(tmp_path / "empty") == 2
    assert "no checkpoint in it" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _evaluate(trained, "--plots", str(blocker / "plots")) == 2
    assert "--plots" in capsys.readouterr().err and blocker.read_text() == "x"
    # A report already written is kept when a later run fails.
    good = tmp_path / "eval.json"
    good.write_text("{}")
    assert _evaluate(trained, "--json", str(good), "--split", "holdout") == 2
    assert good.read_text() == "{}"


def test_a_band_evaluation_reports_its_instrumentation(trained_band, trained, tmp_path, capsys):
    _, workdir = trained_band
    report_path = tmp_path / "e.json"
    assert _evaluate(workdir, "--form_notes", "0", "--line_up", "piece", "--json", str(report_path)) == 0
    out = capsys.readouterr().out
    assert "with drums: samples" in out and "instrument_share" in out and "the piece's line-up" in out
    assert json.loads(report_path.read_text())["samples"]["line_up"] == "piece"
    assert _evaluate(trained, "--line_up", "piece") == 2  # a merged codec has no line-up
    assert "line_up piece needs a codec with instruments" in capsys.readouterr().err
    import numpy as np

    from jaxmusic import midi_io

    kit = midi_io.make_notes(np.arange(4.0), np.arange(4.0) + 0.1, 36, 100, is_drum=True)
    bass = midi_io.make_notes(np.arange(30.0), np.arange(30.0) + 0.5, np.arange(30) + 30, 80, program=33)
    organ = midi_io.make_notes(np.arange(30.0), np.arange(30.0) + 0.5, 60, 80, program=16)
    ins = statistics.instrumentation([np.concatenate([kit, bass]), bass], [organ], [kit])
    assert ins["with_drums"] == {"real": 0.5, "samples": 0.0, "train_split": 1.0}
    assert ins["instruments_per_piece"] == {"real": 1.5, "samples": 1.0, "train_split": 1.0}
    assert ins["pitch_range"]["real"] == {"bass": [31.0, 58.0]}  # 5th and 95th percentile of 30..59, twice
    assert ins["pitch_range"]["samples"] == {"organ": [60.0, 60.0]}


def test_a_pieces_line_up_is_every_instrument_it_plays_and_its_samples_keep_to_it(trained_band):
    import numpy as np

    from jaxmusic import inference, input_pipeline, midi_io, sampler
    from jaxmusic.evaluation import evaluator

    data, workdir = trained_band
    generator = inference.Generator.load(workdir)
    pieces = input_pipeline.load_pieces(str(data), "train")
    picked = np.arange(len(pieces))
    bands = samples.line_ups(generator, pieces, picked, "piece")
    assert samples.line_ups(generator, pieces, picked, "primer") is None
    for i in picked:  # family codec: the instrument index is the General MIDI family's (drums 16)
        played = midi_io.instrument_index(generator.codec.decode(pieces.sequences[i]))
        assert set(np.flatnonzero(bands[i])) == set(played)
    table = sampler.instrument_table(generator.codec)
    assert (bands.sum(1) < len(set(table[table >= 0]))).any()  # some piece's band is not every instrument
    options = evaluator.Options(workdir=str(workdir), settings=sampler.Settings(fixed_length=True),
                                split="train", num_samples=6, num_notes=30, line_up="piece")  # fmt: skip
    c = samples.Continuations.draw(generator, pieces, options, 8, options.settings)
    assert c.line_ups.shape == (6, generator.codec.instruments.count)
    for ids, band in zip(c.written, c.line_ups, strict=True):
        assert ids.shape[0] == 30 and band[table[ids]].all()


def test_a_configs_line_up_is_one_evaluate_knows():
    from configs import bands
    from jaxmusic import run_config
    from jaxmusic.errors import UsageError

    c = run_config.complete(bands.get_config())
    assert c.sampling.line_up == "piece"
    run_config.validate(c)
    c.sampling.line_up = "band"
    with pytest.raises(UsageError, match="line_up must be one of primer, piece, got 'band'"):
        run_config.validate(c)
