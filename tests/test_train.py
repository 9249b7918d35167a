"""train + checkpoint: exact resumption, signals, damaged checkpoints, bad input."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import tiny
from jaxmusic import checkpoint, inference, run_config, train, trainer
from jaxmusic.metric_writer import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def _config(data_dir, **overrides):
    c = tiny.get_config()
    c.data_dir = str(data_dir)
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def _params(workdir, step=None):
    ckpt = checkpoint.Checkpointer(workdir, read_only=True)
    steps = ckpt.steps()
    restored = ckpt.restore(None)
    assert step is None or restored.step == step, (restored.step, steps)
    return restored.state["params"]


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_train_writes_metrics_and_checkpoints(built, tmp_path):
    data_dir, _, _ = built
    result = trainer.train_and_evaluate(_config(data_dir), tmp_path)
    assert checkpoint.Checkpointer(tmp_path, read_only=True).steps() == [10, 20]
    rows = read_metrics(tmp_path)
    train_rows = [r for r in rows if "train_loss" in r]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20]
    assert train_rows[-1]["train_loss"] < train_rows[0]["train_loss"]
    eval_rows = [r for r in rows if "eval_nll" in r]
    assert [r["step"] for r in eval_rows] == [10, 20]
    assert result["eval_nll"] == pytest.approx(eval_rows[-1]["eval_nll"])
    assert np.exp(result["eval_nll"]) == pytest.approx(result["eval_perplexity"])
    assert any(k.startswith("eval_nll/") for k in result)  # per genre
    assert list((tmp_path / "tensorboard").iterdir())
    from jaxmusic import input_pipeline

    targets = sum(len(s) - 1 for s in input_pipeline.load_pieces(data_dir, "train").sequences)
    assert train_rows[-1]["epochs"] == pytest.approx(20 * 8 * 4 / targets)  # steps x batch x Td


def test_a_run_under_one_epoch_says_so(built, tmp_path, capsys):
    trainer.train_and_evaluate(_config(built[0], num_train_steps=3), tmp_path)
    assert "warning: the run saw 0." in capsys.readouterr().err
    trainer.train_and_evaluate(_config(built[0], num_train_steps=60), tmp_path / "long")
    assert "epochs of its train split" not in capsys.readouterr().err


def test_stop_and_resume_equals_an_uninterrupted_run(built, tmp_path):
    data_dir, _, _ = built
    config = _config(data_dir, checkpoint_every=7)
    trainer.train_and_evaluate(config, tmp_path / "straight")
    trainer.train_and_evaluate(config, tmp_path / "resumed", stop_at=10)
    assert checkpoint.Checkpointer(tmp_path / "resumed", read_only=True).steps()[-1] == 10
    trainer.train_and_evaluate(config, tmp_path / "resumed")
    _assert_trees_equal(_params(tmp_path / "straight", 20), _params(tmp_path / "resumed", 20))


def test_carried_windows_resume_exactly_and_refuse_a_changed_run(built, tmp_path):
    """A run of carried windows saves each row's state with its checkpoint: stopped and
    resumed, it ends where an uninterrupted run does; a workdir is not resumed with
    carried windows switched, or with another batch size."""
    config = _config(built[0], carried_windows=True, encoder_len=4, checkpoint_every=7, num_train_steps=14)
    straight = trainer.train_and_evaluate(config, tmp_path / "straight")
    trainer.train_and_evaluate(config, tmp_path / "resumed", stop_at=9)
    assert checkpoint.Checkpointer(tmp_path / "resumed", read_only=True).carry_rows(9) == 8
    resumed = trainer.train_and_evaluate(config, tmp_path / "resumed")
    _assert_trees_equal(_params(tmp_path / "straight", 14), _params(tmp_path / "resumed", 14))
    assert resumed["eval_nll"] == straight["eval_nll"]
    # jaxmusic.evaluate reads the pieces as the training evaluation did: the same NLL.
    from jaxmusic import input_pipeline

    loaded = inference.Generator.load(tmp_path / "straight")
    got = loaded.likelihood(input_pipeline.load_pieces(built[0], "validation"))
    assert got["eval_nll"] == pytest.approx(straight["eval_nll"], rel=1e-5)
    assert loaded.config.carried_windows and loaded.sampler(8)._encode_from is not None
    with pytest.raises(run_config.ResumeError, match="carried_windows=True, this run asks for False"):
        trainer.train_and_evaluate(_config(built[0], encoder_len=4, num_train_steps=20),
                                   tmp_path / "straight")  # fmt: skip
    with pytest.raises(trainer.TrainingError, match="state of 8 batch rows, this run has 4"):
        trainer.train_and_evaluate(_config(built[0], carried_windows=True, encoder_len=4, batch_size=4,
                                         num_train_steps=20), tmp_path / "straight")  # fmt: skip


def test_corrupt_latest_checkpoint_falls_back(built, tmp_path, capsys):
    data_dir, _, _ = built
    trainer.train_and_evaluate(_config(data_dir), tmp_path)
    for f in (tmp_path / "checkpoints" / "20" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    trainer.train_and_evaluate(_config(data_dir, num_train_steps=30), tmp_path)
    assert "checkpoint 20 is unreadable" in capsys.readouterr().err
    rows = [r for r in read_metrics(tmp_path) if "train_loss" in r]
    assert [r["step"] for r in rows][-4:] == [15, 20, 25, 30]  # resumed at 10, went on to 30
    assert checkpoint.Checkpointer(tmp_path, read_only=True).steps()[-1] == 30


def test_non_finite_loss_stops_naming_the_step(built, tmp_path):
    data_dir, _, _ = built
    config = _config(data_dir, **{"optimizer.learning_rate": float("nan"), "optimizer.warmup_steps": 0})
    with pytest.raises(trainer.TrainingError, match="loss is nan at step 2"):
        trainer.train_and_evaluate(config, tmp_path)
    assert checkpoint.Checkpointer(tmp_path, read_only=True).steps() == []  # nothing bad saved
    assert not (tmp_path / "train.lock").exists()  # released on the error path too


def test_workdir_of_another_codec_or_model_is_refused(built, tmp_path):
    data_dir, out, _ = built
    trainer.train_and_evaluate(_config(data_dir, num_train_steps=10), tmp_path)
    with pytest.raises(run_config.ResumeError, match=r"model\.hidden=16, this run asks for 32"):
        trainer.train_and_evaluate(_config(data_dir, num_train_steps=20, **{"model.hidden": 32}), tmp_path)
    # An input that adds parameters (the density's rows), taken away: refused the same way.
    with pytest.raises(run_config.ResumeError, match=r"model\.density_input=True, this run asks for False"):
        trainer.train_and_evaluate(_config(data_dir, num_train_steps=20, **{"model.density_input": False}),
                                 tmp_path)  # fmt: skip
    # Weight decay turned off: the optimizer state loses a node, so it is refused too.
    turned_off = r"optimizer\.weight_decay > 0=True, this run asks for False"
    with pytest.raises(run_config.ResumeError, match=turned_off):
        trainer.train_and_evaluate(_config(data_dir, num_train_steps=20, **{"optimizer.weight_decay": 0.0}),
                                 tmp_path)  # fmt: skip
    # The windows' keys would change mid-run: refused.
    with pytest.raises(run_config.ResumeError, match=r"common_key=False, this run asks for True"):
        trainer.train_and_evaluate(_config(data_dir, num_train_steps=20, common_key=True), tmp_path)
    other = tmp_path / "other"
    import shutil

    shutil.copytree(out, other)
    from jaxmusic import codec as codec_lib
    from jaxmusic import codec_fit

    c = codec_lib.load(other / "codec.json")
    codec_fit.fit([_some_notes()], genres=c.genres, min_count=1).save(other / "codec.json")
    with pytest.raises(trainer.TrainingError, match="trained with codec"):
        trainer.train_and_evaluate(_config(other, num_train_steps=20), tmp_path)


def _some_notes():
    from jaxmusic import midi_io

    return midi_io.make_notes(np.arange(5.0), np.arange(5.0) + 0.5, [60, 62, 64, 65, 67], 80)


def _cli(data_dir, workdir, *extra):
    return [sys.executable, "-m", "jaxmusic.train", "--config", str(ROOT / "configs" / "tiny.py"),
            "--workdir", str(workdir), f"--config.data_dir={data_dir}", *extra]  # fmt: skip


def _start(cmd):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for_checkpoint(workdir, proc, timeout=120):
    ckpt_dir = Path(workdir) / "checkpoints"
    end = time.time() + timeout
    while time.time() < end:
        done = (
            [p for p in ckpt_dir.glob("[0-9]*") if p.is_dir() and "tmp" not in p.name]
            if ckpt_dir.exists()
            else []
        )
        if done and (done[0] / "_CHECKPOINT_METADATA").exists():
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def _start_long_run(data_dir, workdir):
    """A CLI run that checkpoints every 20 steps and would go on for long, once it has
    written its first checkpoint."""
    proc = _start(_cli(data_dir, workdir, "--config.num_train_steps=100000", "--config.checkpoint_every=20",
                       "--config.eval_every=100000"))  # fmt: skip
    _wait_for_checkpoint(workdir, proc)
    return proc


def test_sigterm_saves_and_exits_zero(built, tmp_path):
    data_dir, _, _ = built
    proc = _start_long_run(data_dir, tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    last = checkpoint.Checkpointer(tmp_path, read_only=True).steps()[-1]
    assert f"saved a checkpoint at step {last}" in out
    assert not (tmp_path / "train.lock").exists()


def test_second_trainer_on_a_busy_workdir_exits_2_and_touches_nothing(built, tmp_path):
    data_dir, _, _ = built
    first = _start_long_run(data_dir, tmp_path)
    holder = json.loads((tmp_path / "train.lock").read_text())
    assert holder["pid"] == first.pid
    second = _start(_cli(data_dir, tmp_path, "--config.num_train_steps=100000"))
    out, _ = second.communicate(timeout=120)
    lines = out.strip().splitlines()
    assert second.returncode == 2, out
    assert lines[-1].startswith(f"error: workdir {tmp_path} is in use by pid {first.pid} on host ")
    assert not [x for x in lines if "Traceback" in x]
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 0, out
    steps = [r["step"] for r in read_metrics(tmp_path) if "train_loss" in r]
    assert steps == list(range(5, steps[-1] + 1, 5))  # one run's rows, in order
    assert not (tmp_path / "train.lock").exists()


def test_stale_lock_of_a_dead_process_is_taken_over(built, tmp_path, capsys):
    data_dir, _, _ = built
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock = {"host": socket.gethostname(), "pid": gone.pid, "pid_start": None, "time": time.time() - 60}
    (tmp_path / "train.lock").write_text(json.dumps(lock))
    trainer.train_and_evaluate(_config(data_dir, num_train_steps=5), tmp_path)
    assert f"took over the lock of pid {gone.pid} on host" in capsys.readouterr().err
    assert checkpoint.Checkpointer(tmp_path, read_only=True).steps()[-1] == 5
    assert not (tmp_path / "train.lock").exists()


def test_sigkill_resumes_from_the_last_checkpoint(built, tmp_path):
    data_dir, _, _ = built
    proc = _start_long_run(data_dir, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    last = checkpoint.Checkpointer(tmp_path, read_only=True).steps()[-1]
    config = _config(data_dir, num_train_steps=last + 10, checkpoint_every=20, eval_every=100000)
    trainer.train_and_evaluate(config, tmp_path)
    steps = [r["step"] for r in read_metrics(tmp_path) if "train_loss" in r]
    assert steps[-2:] == [last + 5, last + 10]  # went on from the checkpoint, not from 0
    assert checkpoint.Checkpointer(tmp_path, read_only=True).steps()[-1] == last + 10


def test_cli_bad_input_is_one_clear_line(built, tmp_path, capsys):
    data_dir, _, _ = built
    # The command itself once: exit status 2 and one line on stderr.
    proc = _start(_cli(tmp_path / "nowhere", tmp_path / "w"))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "error: data_dir" in out and "not a directory" in out
    # The rest through the same entry point in this process (a process each cost seconds).
    cases = [
        ("w", ["--config.no_such_field=1"], 2, "no such config field"),
        ("w", ["--config.batch_size=6"], 0, ""),  # any batch divides among 1 device and 1 host
        ("w3", ["--config.batch_size_per_device=4"], 2, "error: config: set exactly one of batch_size"),
        ("w2", ["--config.model.dtype=float8"], 2, "config.model.dtype 'float8'"),
    ]
    for workdir, extra, code, message in cases:
        assert train.main(_cli(data_dir, tmp_path / workdir, *extra)[3:]) == code, extra
        err = capsys.readouterr().err
        assert message in err and (code == 0 or len(err.strip().splitlines()) == 1), err
    assert not (tmp_path / "w3" / "checkpoints").exists()


def test_a_common_key_run_is_evaluated_and_sampled_as_trained(built, tmp_path, capsys):
    """A model trained in a common key: jaxmusic.evaluate reads its windows moved as in
    training (the same NLL as the run's own final evaluation) and samples through the move."""
    from jaxmusic import evaluate

    trainer.train_and_evaluate(_config(built[0], num_train_steps=6, common_key=True), tmp_path)
    final = [m for m in read_metrics(tmp_path) if "eval_nll" in m][-1]
    out = tmp_path / "eval.json"
    args = ["--num_samples", "4", "--num_notes", "8", "--batch", "4", "--long_notes", "0", "--json", str(out)]
    assert evaluate.main(["--workdir", str(tmp_path), *args]) == 0
    report = json.loads(out.read_text())
    assert report["likelihood"]["overall"]["nll_nats"] == pytest.approx(final["eval_nll"], rel=1e-5)
    assert report["samples"]["mean_notes_generated"] > 0


def test_tensorboard_holds_samples_at_every_evaluation_and_the_real_music_once(built, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    config = _config(built[0], preview_samples=1, preview_notes=8)
    trainer.train_and_evaluate(config, tmp_path)
    board = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    board.Reload()
    tags = board.Tags()["tensors"]
    by_kind = {k: [t for t in tags if t.startswith(k + "/")] for k in ("sample_audio", "sample_roll",
                                                                      "real_audio", "real_roll")}  # fmt: skip
    assert all(len(v) == 1 for v in by_kind.values()), tags
    assert [e.step for e in board.Tensors(by_kind["sample_audio"][0])] == [10, 20]  # every evaluation
    assert [e.step for e in board.Tensors(by_kind["sample_roll"][0])] == [10, 20]
    assert [e.step for e in board.Tensors(by_kind["real_audio"][0])] == [10]  # once
    # TensorBoard's own encodings: a WAV file and a PNG file, each with something in it.
    wav = tensor_util.make_ndarray(board.Tensors(by_kind["sample_audio"][0])[-1].tensor_proto)[0, 0]
    png = tensor_util.make_ndarray(board.Tensors(by_kind["sample_roll"][0])[-1].tensor_proto)[2]
    assert wav[:4] == b"RIFF" and png[:4] == b"\x89PNG"
    import io
    import wave

    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png))
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert pixels.shape[0] >= 40 and len(colours) >= 2, (pixels.shape, colours)  # notes on a background

    with wave.open(io.BytesIO(wav)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768
        assert w.getframerate() == 16_000 and w.getnframes() > 16_000  # over a second of sound
    assert np.sqrt(np.mean(pcm**2)) > 0.005 and np.abs(pcm).max() < 1.0  # audible, not clipped
    seconds = [r["preview_seconds"] for r in read_metrics(tmp_path) if "preview_seconds" in r]
    assert len(seconds) == 2 and all(s > 0 for s in seconds)


def test_a_run_keeps_its_data_dir_absolute_so_it_is_sampled_from_any_folder(built, tmp_path, monkeypatch):
    """Trained with a data_dir relative to where it started, the run is sampled with
    validation primers, and evaluated, from another folder."""
    from jaxmusic import evaluate, sample

    data_dir = Path(built[0])
    monkeypatch.chdir(data_dir.parent)
    workdir = tmp_path / "run"
    trainer.train_and_evaluate(_config(data_dir.name, num_train_steps=5), workdir)
    saved, _ = checkpoint.Checkpointer(workdir, read_only=True).read_json(5)
    assert saved["data_dir"] == str(data_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = ["--workdir", str(workdir)]
    assert sample.main([*run, "--out_dir", "out", "--num_outputs", "1", "--num_notes", "4",
                        "--primer_split", "validation"]) == 0  # fmt: skip
    assert sorted(os.listdir(elsewhere / "out")) == ["sample_000.mid", "samples.json"]
    assert evaluate.main([*run, "--num_samples", "2", "--num_notes", "4", "--batch", "2", "--long_notes", "0",
                          "--form_notes", "0", "--json", "eval.json", "--page", ""]) == 0  # fmt: skip
    assert json.loads((elsewhere / "eval.json").read_text())["dataset"].startswith(str(data_dir))


def test_a_reader_beside_a_running_trainer_lists_again_when_a_checkpoint_goes(trained, monkeypatch):
    """orbax lists the steps, then looks at each: a step the writing run prunes in between
    (FileNotFoundError) makes the reader list again, not fail."""
    real, calls = checkpoint.ocp.CheckpointManager, []

    def pruned_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError("b/runs/o/run%2Fcheckpoints%2F140")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint.ocp, "CheckpointManager", pruned_once)
    assert checkpoint.Checkpointer(trained, read_only=True).steps() == [10, 20] and len(calls) == 2


def test_the_best_checkpoint_is_kept_and_a_run_without_progress_stops_early(built, tmp_path, capsys):
    data_dir, _, _ = built
    # Learning rate 0: every evaluation gives the same NLL, so the first stays the best.
    config = _config(data_dir, num_train_steps=60, early_stopping=2, **{"optimizer.learning_rate": 0.0,
                     "optimizer.end_learning_rate": 0.0})  # fmt: skip
    trainer.train_and_evaluate(config, tmp_path / "flat")
    said = capsys.readouterr()
    assert "early stopping: no lower validation NLL in 2 evaluations since step 10" in said.out + said.err
    assert checkpoint.Checkpointer(tmp_path / "flat", read_only=True).steps()[-1] == 30  # of 60 steps
    assert checkpoint.Checkpointer(tmp_path / "flat", read_only=True, best=True).steps() == [10]
    assert checkpoint.restore_run(tmp_path / "flat").kind == "best"
    assert checkpoint.restore_run(tmp_path / "flat", "latest").step == 30
    # A run that learns: the best is the evaluation of the lowest NLL, its parameters as trained then.
    trainer.train_and_evaluate(_config(data_dir, checkpoint_every=5, eval_every=5), tmp_path / "learns")
    nll = {r["step"]: r["eval_nll"] for r in read_metrics(tmp_path / "learns") if "eval_nll" in r}
    best = checkpoint.restore_run(tmp_path / "learns")
    assert best.step == min(nll, key=nll.get)
    _assert_trees_equal(best.state["params"], _params(tmp_path / "learns", best.step))
    generator = inference.Generator.load(tmp_path / "learns", checkpoint="latest")
    assert (generator.checkpoint, generator.step) == ("latest", 20)
