"""parallel: 1, 4 devices and 2 processes train alike; checkpoints move between them.

Each run is a process of its own (tests/distributed_run.py): the simulated device
count is fixed when JAX starts. Runs log every step, so every step ends in a host
sync (XLA:CPU aborts a long queue of unblocked all-reduces).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmusic import checkpoint, parallel
from jaxmusic.metric_writer import read_metrics

RUN = Path(__file__).with_name("distributed_run.py")
TOL = 1e-5


def _cmd(data_dir, workdir, devices=1, *extra):
    return [sys.executable, str(RUN), "--devices", str(devices), "--data_dir", str(data_dir),
            "--workdir", str(workdir), *extra]  # fmt: skip


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**env, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(cmd):
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _losses(workdir, key="train_loss"):
    return {r["step"]: r[key] for r in read_metrics(workdir) if key in r}


def _params(workdir, step):
    restored = checkpoint.Checkpointer(workdir, read_only=True).restore(None)
    assert restored.step == step
    return jax.tree.leaves(restored.state["params"])


def _assert_close(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=TOL, atol=TOL)


@pytest.fixture(scope="module")
def straight(built, tmp_path_factory):
    """20 uninterrupted steps on 1 and on 4 devices: {devices: workdir}."""
    data_dir = built[0]
    runs = {}
    for devices in (1, 4):
        workdir = tmp_path_factory.mktemp(f"straight{devices}")
        _run(_cmd(data_dir, workdir, devices))
        runs[devices] = workdir
    return runs


def test_four_devices_equal_one(straight):
    one, four = _losses(straight[1]), _losses(straight[4])
    assert sorted(one) == sorted(four) == list(range(1, 21))
    np.testing.assert_allclose([four[s] for s in one], [one[s] for s in one], rtol=TOL, atol=TOL)
    assert one[20] < one[1]  # it trained
    norms1, norms4 = _losses(straight[1], "train_grad_norm"), _losses(straight[4], "train_grad_norm")
    np.testing.assert_allclose([norms4[s] for s in norms1], [norms1[s] for s in norms1], rtol=TOL)
    _assert_close(_params(straight[4], 20), _params(straight[1], 20))


@pytest.mark.parametrize("first, then", [(4, 1), (1, 4)])
def test_checkpoint_moves_between_device_counts(built, straight, tmp_path, first, then):
    data_dir = built[0]
    _run(_cmd(data_dir, tmp_path, first, "--stop_at", "10"))
    assert checkpoint.Checkpointer(tmp_path, read_only=True).steps()[-1] == 10
    _run(_cmd(data_dir, tmp_path, then))
    _assert_close(_params(tmp_path, 20), _params(straight[then], 20))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(built, tmp_path):
    data_dir = built[0]
    shards = ["--set", "data_shards=2"]
    _run(_cmd(data_dir, tmp_path / "one", 1, *shards))
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            _cmd(
                data_dir,
                tmp_path / "two",
                1,
                *shards,
                "--coordinator",
                coordinator,
                "--num_processes",
                "2",
                "--process_id",
                str(i),
            ),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(two) == list(range(1, 21))
    np.testing.assert_allclose([two[s] for s in one], [one[s] for s in one], rtol=TOL, atol=TOL)


def test_batch_that_does_not_divide_names_both_numbers():
    mesh = parallel.make_mesh()
    parallel.check_batch_size(6, mesh)  # one device, one host: anything divides
    with pytest.raises(ValueError, match="data_shards 3 does not divide among 2 processes"):
        from jaxmusic import input_pipeline

        input_pipeline.load_train_shards("unused", num_shards=3, process_count=2)


def test_four_devices_refuse_a_batch_of_six(built, tmp_path):
    proc = subprocess.run(_cmd(built[0], tmp_path, 4, "--set", "batch_size=6"), env=_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0
    assert "batch_size 6 does not divide among 4 devices" in proc.stderr
