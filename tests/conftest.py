"""Shared fixtures: a small MIDI collection in genre folders, and datasets built from it."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent XLA compilation cache for the session, this process and the processes
# the tests start (they inherit the environment): the many runs of the tiny config
# compile the same programs, and a cached one saves about 8 s a process on 2 cores.
# A fresh folder each session, so a test never meets a program of another revision.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jaxmusic-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# A folder the session's processes share (pytest-xdist's workers inherit it): what a
# module-scoped fixture of several workers would make once each is made once
# (`helpers.made_once`).
if "JAXMUSIC_TEST_SHARED" not in os.environ:
    _shared = tempfile.mkdtemp(prefix="jaxmusic-test-shared-")
    atexit.register(shutil.rmtree, _shared, ignore_errors=True)
    os.environ["JAXMUSIC_TEST_SHARED"] = _shared
# Tiny programs run in microseconds and compile in seconds: without LLVM's optimizations
# XLA:CPU compiles a tiny train step in 3.4 s instead of 5.8 s (the same HLO, run slower).
# In XLA_FLAGS, so the processes the tests start compile the same way.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import helpers
import pytest
from helpers import CHORDS_AND_RESTS, DRUMS, Track, write_midi


def _shift(notes, k, scale=1.0):
    return [(s * scale, d * scale, p + k, v) for s, d, p, v in notes]


def make_collection(root):
    """4 genres x 4 pieces, a byte-identical duplicate, an HTML page, a file in the
    root (genre unknown) and an empty genre folder. Returns the number of files."""
    for g, genre in enumerate(["classical", "jazz", "rock", "pop"]):
        for i in range(4):
            notes = _shift(CHORDS_AND_RESTS * 1, g + 2 * i, 1 + 0.25 * i) + _shift(CHORDS_AND_RESTS, -g, 0.5)
            tracks = [Track(notes, 0, 8 * g)] + ([Track(DRUMS, channel=9)] if i % 2 else [])
            write_midi(root / genre / f"piece{i}.mid", tracks, tempos=[(0, 90 + 10 * i)])
    shutil.copy(root / "jazz" / "piece0.mid", root / "pop" / "copy_of_jazz0.mid")
    (root / "rock" / "broken.mid").write_bytes(helpers.bad_midi_bytes()["html"])
    write_midi(root / "loose.mid", [Track(CHORDS_AND_RESTS)])
    (root / "folk").mkdir()
    return 16 + 3


@pytest.fixture(scope="session")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("midi")
    return root, make_collection(root)


@pytest.fixture(scope="session")
def built(collection, tmp_path_factory):
    """The collection built once: (data_dir, dataset folder, summary)."""
    from data_pipeline import dataset

    data_dir = tmp_path_factory.mktemp("data")
    out, summary = dataset.build(
        data_dir, name="fixture", midi_dir=collection[0], workers=2,
        validation_percent=25, test_percent=25, codec_kwargs={"min_count": 1},
    )  # fmt: skip
    return data_dir, out, summary


@pytest.fixture(scope="session")
def trained(built, tmp_path_factory):
    """A workdir of configs/tiny.py trained on `built` (20 steps)."""
    from configs import tiny
    from jaxmusic import trainer

    config = tiny.get_config()
    config.data_dir = str(built[0])
    workdir = tmp_path_factory.mktemp("trained")
    trainer.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="session")
def trained_band(collection, tmp_path_factory):
    """The collection built with instrument families (drums kept), and a workdir of
    configs/tiny.py with recent counts (as configs/bands.py) trained on it: (dataset
    folder, workdir)."""
    from configs import tiny
    from data_pipeline import dataset
    from jaxmusic import trainer

    out, _ = dataset.build(
        tmp_path_factory.mktemp("band_data"), name="band", midi_dir=collection[0], workers=2,
        validation_percent=25, test_percent=25, codec_kwargs={"min_count": 1, "instruments": "family"},
    )  # fmt: skip
    config = tiny.get_config()
    config.data_dir, config.model.recent_notes = str(out), 4
    workdir = tmp_path_factory.mktemp("trained_band")
    trainer.train_and_evaluate(config, workdir)
    return out, workdir
