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

import helpers
import jax
import numpy as np
import pytest

from jaxmusic import batching, checkpoint, inference, input_pipeline, parallel
from jaxmusic.metric_writer import read_metrics

RUN = Path(__file__).with_name("distributed_run.py")
TOL = 1e-5
# Parameters after 20 Adam steps: Adam divides by the root of the second moment, so an
# element whose gradients are rare and tiny (a rarely used key's or token's row) turns
# last-bit differences of the device sums into differences of about 1e-5.
PARAM_TOL = 5e-5


def _cmd(data_dir, workdir, devices=1, *extra):
    # Two data shards in every run, so that 1 and 2 processes draw the same batches and
    # one set of single-process runs serves as the reference of every test. Recent counts
    # on (off in tiny.py), so every model input of the configs is held to 4 devices.
    return [sys.executable, str(RUN), "--devices", str(devices), "--data_dir", str(data_dir),
            "--workdir", str(workdir), "--set", "data_shards=2", "--set", "model.recent_notes=4",
            *extra]  # fmt: skip


def _env():
    # The device count is each run's own (--devices): a forced one in XLA_FLAGS is dropped.
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return {**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


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
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=PARAM_TOL, atol=PARAM_TOL)


@pytest.fixture(scope="module")
def straight(built):
    """20 uninterrupted steps on 1 and on 4 devices: {devices: workdir}, made once a session."""

    def make(root):
        for devices in (1, 4):
            _run(_cmd(built[0], root / f"straight{devices}", devices))

    root = helpers.made_once("straight", make)
    return {devices: root / f"straight{devices}" for devices in (1, 4)}


def test_four_devices_equal_one(straight):
    one, four = _losses(straight[1]), _losses(straight[4])
    assert sorted(one) == sorted(four) == list(range(1, 21))
    np.testing.assert_allclose([four[s] for s in one], [one[s] for s in one], rtol=TOL, atol=TOL)
    assert one[20] < one[1]  # it trained
    norms1, norms4 = _losses(straight[1], "train_grad_norm"), _losses(straight[4], "train_grad_norm")
    np.testing.assert_allclose([norms4[s] for s in norms1], [norms1[s] for s in norms1], rtol=TOL)
    _assert_close(_params(straight[4], 20), _params(straight[1], 20))


def test_a_factored_model_is_sampled_and_scored_as_its_folded_plain_model(built, straight):
    """The tiny config has factored ids (models.Factors), so the runs above hold them to 4
    devices (their output parts' gradient is reduced as part of the head's: test_lowering).
    Inference folds the parts into the ids' rows (models.fold_factors): it scores the
    validation split as training's last evaluation of the factored model did."""
    params = checkpoint.Checkpointer(straight[4], read_only=True).restore(None).state["params"]
    assert float(np.abs(params["head_factors"]["kernel"]).sum()) > 0  # the parts trained
    generator = inference.Generator.load(straight[1], checkpoint="latest")
    assert generator.model.factors is None and "head_factors" not in generator.params
    nll = generator.likelihood(input_pipeline.load_pieces(built[0], "validation"))["eval_nll"]
    assert nll == pytest.approx(_losses(straight[1], "eval_nll")[20], abs=1e-5)


def test_checkpoint_moves_between_device_counts(built, straight, tmp_path):
    """1 device to step 7, then 4 devices to step 14, then 1 device to the end: the
    parameters of a run that never moved."""
    data_dir = built[0]
    for devices, stop in ((1, 7), (4, 14)):
        _run(_cmd(data_dir, tmp_path, devices, "--stop_at", str(stop)))
        assert checkpoint.Checkpointer(tmp_path, read_only=True).steps()[-1] == stop
    _run(_cmd(data_dir, tmp_path, 1))
    _assert_close(_params(tmp_path, 20), _params(straight[1], 20))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_global_batch_size_from_exactly_one_field():
    from configs import default, paper

    assert parallel.global_batch_size(default.get_config(), 8) == 32  # global, whatever the devices
    assert parallel.global_batch_size(paper.get_config(), 4) == 128  # 32 per device: a v4-8
    assert parallel.global_batch_size(paper.get_config(), 8) == 256
    both = default.get_config()
    both.batch_size_per_device = 4
    with pytest.raises(ValueError, match=r"exactly one of batch_size .* got batch_size=32 and"):
        parallel.global_batch_size(both, 1)
    neither = paper.get_config()
    neither.batch_size_per_device = 0
    with pytest.raises(ValueError, match="exactly one of"):
        parallel.global_batch_size(neither, 1)


def test_batch_that_does_not_divide_names_both_numbers():
    mesh = parallel.make_mesh()
    assert batching.layout(6, devices=mesh.devices.size, processes=1).device_size == 6  # anything divides
    with pytest.raises(ValueError, match="data_shards 3 does not divide among 2 processes"):
        from jaxmusic import input_pipeline

        input_pipeline.load_train_shards("unused", num_shards=3, process_count=2)


def test_four_devices_refuse_a_batch_of_six(built, tmp_path):
    proc = subprocess.run(_cmd(built[0], tmp_path, 4, "--set", "batch_size=6"), env=_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0
    assert "batch_size 6 does not divide among 4 devices" in proc.stderr


def _start_pair(data_dir, workdir, *extra, second=()):
    """Two processes of one run (`second`: arguments of the second process only)."""
    coordinator = f"127.0.0.1:{_free_port()}"
    return [
        subprocess.Popen(
            _cmd(data_dir, workdir, 1, *extra, *(second if i else ()), "--coordinator", coordinator,
                 "--num_processes", "2", "--process_id", str(i)),
            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]  # fmt: skip


def _outputs(procs):
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
        outs.append(out)
    return outs


def test_two_processes_equal_one_and_stop_together_at_a_notice_to_one(built, straight, tmp_path):
    """Two processes train as one device does. A preemption notice reaching one of them
    (SIGTERM to the second at step 3) stops both at the same step, where they save one
    checkpoint together and exit 0; resumed on two processes, the run ends as one that
    never stopped."""
    import re

    data_dir, workdir = built[0], tmp_path / "two"
    # Trained as `straight` is; a checkpoint only where the run stops.
    only_the_stop = ["--set", "checkpoint_every=100000", "--set", "eval_every=100000"]
    outs = _outputs(_start_pair(data_dir, workdir, *only_the_stop, second=["--sigterm_at", "3"]))
    stopped = [re.findall(r"saved a checkpoint at step (\d+)", out) for out in outs]
    assert stopped[0] == stopped[1] and len(stopped[0]) == 1, stopped
    step = int(stopped[0][0])
    assert 3 <= step < 20 and checkpoint.Checkpointer(workdir, read_only=True).steps() == [step]
    assert sorted(_losses(workdir)) == list(range(1, step + 1))

    _outputs(_start_pair(data_dir, workdir, *only_the_stop))
    one, two = _losses(straight[1]), _losses(workdir)
    assert sorted(two) == list(range(1, 21))
    np.testing.assert_allclose([two[s] for s in one], [one[s] for s in one], rtol=TOL, atol=TOL)
    _assert_close(_params(workdir, 20), _params(straight[1], 20))
