"""data_pipeline: the TFDS builder, the build CLI, the music21 corpus listing."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipeline import build, corpus, dataset, sources
from jaxmusic import codec as codec_lib
from jaxmusic import codec_fit, midi_io


def _manifest(out):
    return [json.loads(line) for line in (out / sources.MANIFEST_FILE).read_text().splitlines()]


def _examples(out):
    b = tfds.builder_from_directory(str(out))
    return {
        split: {ex["sha1"].decode(): ex for ex in iter(tfds.as_numpy(b.as_dataset(split=split)))}
        for split in b.info.splits
    }


def test_every_file_is_accounted_for(built, collection):
    _, out, summary = built
    rows = _manifest(out)
    assert len(rows) == collection[1] == summary["files_found"]
    status = [r["status"] for r in rows]
    assert (status.count("ok"), status.count("rejected"), status.count("duplicate")) == (17, 1, 1)
    by_path = {r["path"]: r for r in rows}
    assert by_path["rock/broken.mid"]["reason"] == "not a MIDI file: looks like HTML/XML"
    assert by_path["pop/copy_of_jazz0.mid"]["reason"] == "same bytes as jazz/piece0.mid"
    assert by_path["loose.mid"]["genre"] == sources.UNKNOWN_GENRE
    assert by_path["jazz/piece1.mid"]["genre"] == "jazz"


def test_splits_are_disjoint_and_match_the_manifest(built):
    _, out, _ = built
    examples = _examples(out)
    sets = [set(v) for v in examples.values()]
    assert sum(len(s) for s in sets) == len(set().union(*sets)) == 17  # no piece in two splits
    for row in _manifest(out):
        if row["status"] == "ok":
            assert row["sha1"] in examples[row["split"]]
            assert row["split"] == sources.split_of(row["sha1"], 25, 25)


def test_codec_is_fitted_on_the_train_split_only(built, collection):
    _, out, _ = built
    rows = [r for r in _manifest(out) if r["status"] == "ok"]
    train = [midi_io.read(collection[0] / r["path"]).notes for r in rows if r["split"] == "train"]
    genres = sorted({r["genre"] for r in rows})
    refit = codec_fit.fit(train, genres=genres, min_count=1)
    saved = codec_lib.load(out / sources.CODEC_FILE)
    assert saved.fingerprint == refit.fingerprint
    everything = codec_fit.fit([midi_io.read(collection[0] / r["path"]).notes for r in rows],
                               genres=genres, min_count=1)  # fmt: skip
    assert saved.fingerprint != everything.fingerprint


def test_examples_hold_the_encoded_piece(built, collection):
    _, out, _ = built
    codec = codec_lib.load(out / sources.CODEC_FILE)
    examples = _examples(out)
    for row in _manifest(out):
        if row["status"] != "ok":
            continue
        ex = examples[row["split"]][row["sha1"]]
        want = codec.encode(midi_io.read(collection[0] / row["path"]).notes)
        np.testing.assert_array_equal(ex["ids"], want)
        assert ex["genre"].decode() == row["genre"]
        assert ex["genre_id"] == codec.genre_id(row["genre"])


def test_rebuild_is_identical(built, collection, tmp_path):
    _, out, _ = built
    out2, _ = dataset.build(tmp_path, name="fixture", midi_dir=collection[0], workers=1,
                          validation_percent=25, test_percent=25, codec_kwargs={"min_count": 1})  # fmt: skip
    assert (out2 / sources.CODEC_FILE).read_bytes() == (out / sources.CODEC_FILE).read_bytes()
    assert (out2 / sources.MANIFEST_FILE).read_bytes() == (out / sources.MANIFEST_FILE).read_bytes()
    a, b = _examples(out), _examples(out2)
    assert a.keys() == b.keys()
    for split in a:
        assert a[split].keys() == b[split].keys()
        for sha in a[split]:
            np.testing.assert_array_equal(a[split][sha]["ids"], b[split][sha]["ids"])


def test_split_of_is_a_function_of_the_hash():
    counts = {s: 0 for s in sources.SPLITS}
    for i in range(2000):
        counts[sources.split_of(f"{i * 2654435761 % 2**32:08x}", 5, 5)] += 1
    assert 0.85 < counts["train"] / 2000 < 0.95
    assert sources.split_of("00000000", 5, 5) == "validation"  # bucket 0
    assert sources.split_of("00000005", 5, 5) == "test"  # bucket 5
    assert sources.split_of("0000000a", 5, 5) == "train"  # bucket 10


def test_default_num_shards_is_a_power_of_two():
    assert [dataset.default_num_shards(n) for n in (1, 100, 909, 1198, 10**6)] == [1, 1, 8, 16, 64]


def test_cli_builds_and_refuses_bad_input(collection, tmp_path, capsys):
    root, n = collection
    args = ["--midi_dir", str(root), "--data_dir", str(tmp_path), "--name", "cli", "--workers", "1",
            "--validation_percent", "25", "--test_percent", "25"]  # fmt: skip
    assert build.main(args) == 0
    captured = capsys.readouterr()
    assert f"files found {n} = ok 17 + rejected 1 + duplicate 1" in captured.out
    assert f"genre folder {root / 'folk'} holds no MIDI files" in captured.err
    codec_before = (tmp_path / "midi_pieces" / "cli" / "1.0.0" / "codec.json").read_bytes()
    assert build.main(args) == 2  # already there: refused, and left as it was
    assert "a dataset is already there" in capsys.readouterr().err
    assert (tmp_path / "midi_pieces" / "cli" / "1.0.0" / "codec.json").read_bytes() == codec_before
    empty = tmp_path / "empty"
    (empty / "jazz").mkdir(parents=True)
    assert build.main(["--midi_dir", str(empty), "--data_dir", str(tmp_path)]) == 2
    assert "no MIDI files" in capsys.readouterr().err
    assert build.main(["--midi_dir", str(tmp_path / "nope"), "--data_dir", str(tmp_path)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert build.main([*args, "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


def test_corpus_selection_is_fixed_and_sized():
    small = corpus.list_works("small")
    assert small == corpus.list_works("small")  # a fixed order
    genres = {w.genre for w in small}
    assert genres == {"classical", "folk"}
    assert 1000 < len(small) < 1300
    assert len({w.name for w in small}) == len(small)  # distinct file names
    assert len(corpus.list_works("full")) > 10 * len(small)
    with pytest.raises(ValueError, match="corpus size"):
        corpus.list_works("huge")


def test_build_rejects_a_malformed_file_and_counts_internal_errors(tmp_path, monkeypatch, capsys):
    """One file never stops a build: a corrupt one is rejected with its reason, and an
    unexpected exception while reading one is a rejected row starting 'internal error:',
    printed apart at the end."""
    import helpers
    from helpers import CHORDS_AND_RESTS, Track, write_midi

    root = tmp_path / "midi"
    for i in range(5):
        write_midi(
            root / "pop" / f"good{i}.mid", [Track([(s + i, d, p, v) for s, d, p, v in CHORDS_AND_RESTS])]
        )
    (root / "pop" / "long_delta.mid").write_bytes(helpers.bad_midi_bytes()["long_delta_time"])
    write_midi(root / "pop" / "trigger.mid", [Track(CHORDS_AND_RESTS[:5])])
    to_notes = midi_io._to_notes

    def buggy(path, *args):  # a bug that only this file meets
        if path.name == "trigger.mid":
            raise OverflowError("Python int too large to convert to C long")
        return to_notes(path, *args)

    monkeypatch.setattr(midi_io, "_to_notes", buggy)  # forked workers inherit it
    args = ["--midi_dir", str(root), "--data_dir", str(tmp_path / "data"), "--workers", "1",
            "--validation_percent", "0", "--test_percent", "0"]  # fmt: skip
    assert build.main(args) == 0
    captured = capsys.readouterr()
    assert "files found 7 = ok 5 + rejected 2 + duplicate 0" in captured.out
    assert "internal errors: 1 file(s) rejected by an unexpected exception" in captured.err
    assert "pop/trigger.mid: internal error: OverflowError: Python int too large" in captured.err
    rows = {r["path"]: r for r in _manifest(tmp_path / "data" / "midi_pieces" / "midi" / "1.0.0")}
    assert rows["pop/long_delta.mid"]["status"] == "rejected"
    assert "variable-length quantity longer than 4 bytes" in rows["pop/long_delta.mid"]["reason"]
    assert rows["pop/trigger.mid"]["reason"].startswith("internal error: OverflowError")


def test_no_spill_is_left_in_the_dataset(built):
    _, out, _ = built
    assert not (out / ".spill").exists()
    assert not list(out.parent.glob("*incomplete*"))


def _to_bucket(root, url):
    """A copy of a folder on TensorFlow's in-memory file system: a stand-in for a bucket."""
    import tensorflow as tf

    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        tf.io.gfile.makedirs(f"{url}/{path.parent.relative_to(root).as_posix()}")
        with tf.io.gfile.GFile(f"{url}/{path.relative_to(root).as_posix()}", "wb") as f:
            f.write(path.read_bytes())
    return url


def _assert_same_dataset(out, other):
    assert (other / sources.CODEC_FILE).read_bytes() == (out / sources.CODEC_FILE).read_bytes()
    assert (other / sources.MANIFEST_FILE).read_bytes() == (out / sources.MANIFEST_FILE).read_bytes()
    assert (other / sources.INSTRUMENTS_FILE).read_bytes() == (out / sources.INSTRUMENTS_FILE).read_bytes()
    a, b = _examples(out), _examples(other)
    assert a.keys() == b.keys() == {"train", "validation", "test"}
    for split in a:
        assert a[split].keys() == b[split].keys()
        for sha in a[split]:
            np.testing.assert_array_equal(b[split][sha]["ids"], a[split][sha]["ids"])
            assert b[split][sha]["path"] == a[split][sha]["path"]


def test_beam_build_and_a_build_from_a_bucket_equal_the_local_build(trained_band, collection, tmp_path):
    """The DirectRunner build writes the local build's codec, manifest, instrument report
    and examples (the same per-file functions, combined by Beam), here from a bucket-like
    URL (TensorFlow's ram:// file system), as the local build does from it. Built with
    instrument families, so drum tracks are read and the report has one row per family."""
    out = trained_band[0]
    bucket = _to_bucket(collection[0], "ram://test_beam_corpus")
    assert [label.split("ram://test_beam_corpus/")[1] for label, _ in sources.find_sources(bucket)] == [
        p.relative_to(collection[0]).as_posix() for p in midi_io.find_midi_files(collection[0])
    ]
    kwargs = dict(name="band", midi_dir=bucket, validation_percent=25, test_percent=25,
                  codec_kwargs={"min_count": 1, "instruments": "family"})  # fmt: skip
    beam_out, _ = dataset.build(tmp_path / "beam", beam_runner="DirectRunner", **kwargs)
    report = json.loads((beam_out / sources.INSTRUMENTS_FILE).read_text())
    assert len(report) > 2  # drums and pitched families
    _assert_same_dataset(out, beam_out)
    local_out, _ = dataset.build(tmp_path / "local", workers=2, **kwargs)  # forked workers read ram:// too
    _assert_same_dataset(out, local_out)
    with pytest.raises(sources.BuildError, match="the local build writes to a local folder"):
        dataset.build("gs://no-such-bucket/data", **kwargs)


def test_beam_bad_input_is_one_line_and_leaves_no_dataset(collection, tmp_path, capsys, monkeypatch):
    root, _ = collection
    args = ["--midi_dir", str(root), "--data_dir", str(tmp_path), "--name", "beam"]
    cases = [
        (["--beam_runner", "NoSuchRunner"], "--beam_runner NoSuchRunner: not a runner Beam knows"),
        (["--beam_runner", "DirectRunner", "--beam_options=--no_such_option=1"],
         "not options Beam knows: --no_such_option"),
        (["--beam_runner", "DirectRunner", "--beam_options=--direct_num_workers=x"],
         "argument --direct_num_workers: invalid int value: 'x'"),
        (["--beam_options=--direct_num_workers=2"], "--beam_options needs --beam_runner"),
        (["--beam_runner", "DirectRunner", "--validation_percent", "100", "--test_percent", "0"],
         "no readable piece fell in the train split (17 readable in all)"),
    ]  # fmt: skip
    for extra, message in cases:
        assert build.main([*args, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err, err
        assert "Traceback" not in err
    assert not list(tmp_path.glob("midi_pieces/beam/*"))  # nothing a later run could take for a dataset
    monkeypatch.setitem(__import__("sys").modules, "apache_beam", None)  # as if the extra were not installed
    assert build.main([*args, "--beam_runner", "DirectRunner"]) == 2
    assert "Apache Beam is not installed (pip install -e '.[beam]')" in capsys.readouterr().err


def test_make_corpus_is_reproducible_and_meets_the_build(tmp_path):
    """scripts/make_corpus.py: file i depends on (seed, i) only; its broken files
    are rejected and its copies counted as duplicates by a build."""
    from scripts import make_corpus

    args = ["--files", "48", "--seed", "3", "--broken_percent", "15", "--duplicate_percent", "10"]
    assert make_corpus.main(["--out", str(tmp_path / "a"), "--workers", "1", *args]) == 0
    assert make_corpus.main(["--out", str(tmp_path / "b"), "--workers", "2", *args]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.mid"))
    assert len(files) == 48 and {f.parts[0] for f in files} == set(make_corpus.GENRES)
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert make_corpus.main(["--out", str(tmp_path / "a"), *args]) == 2  # not over a corpus
    kinds = [make_corpus.write_file(tmp_path / "c", 3, i, make_corpus.GENRES, 0.15, 0.10) for i in range(48)]
    _, summary = dataset.build(tmp_path / "data", name="synthetic", midi_dir=tmp_path / "a", workers=1)
    assert summary["rejected"] == sum(k in make_corpus.BROKEN_KINDS for k in kinds) > 0
    assert summary["duplicate"] == kinds.count("duplicate") > 0
    whole = [f for f in files if kinds[int(f.stem)] == "ok"]
    sizes = [midi_io.read(tmp_path / "a" / f, include_drums=True).notes.shape[0] for f in whole]
    assert min(sizes) >= 150 and max(sizes) <= 4000
