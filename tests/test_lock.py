"""lock: one writer per workdir; busy, stale and reused-pid locks."""

import json
import os
import socket
import time

import pytest

from jaxmusic import lock


def _write(path, **fields):
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": None, "time": time.time()}
    path.write_text(json.dumps({**holder, **fields}))


def test_lock_is_held_for_the_block_and_released(tmp_path):
    with lock.workdir_lock(tmp_path) as path:
        held = json.loads(path.read_text())
        assert (held["pid"], held["host"]) == (os.getpid(), socket.gethostname())
        busy = pytest.raises(lock.WorkdirBusy, match=f"is in use by pid {os.getpid()} on host")
        with busy, lock.workdir_lock(tmp_path):
            pass
    assert not path.exists()


def test_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError), lock.workdir_lock(tmp_path):
        raise RuntimeError("boom")
    assert not (tmp_path / lock.LOCK_FILE).exists()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    _write(tmp_path / lock.LOCK_FILE, host="elsewhere", pid=1)
    busy = pytest.raises(lock.WorkdirBusy, match=r"pid 1 on host elsewhere.*if that run is over, delete")
    with busy, lock.workdir_lock(tmp_path):
        pass
    assert json.loads((tmp_path / lock.LOCK_FILE).read_text())["host"] == "elsewhere"  # left as it was


def test_reused_pid_does_not_hold_the_lock(tmp_path):
    # Our own pid, but a start time that is not ours: the holder died and the pid was reused.
    _write(tmp_path / lock.LOCK_FILE, pid_start="1")
    said = []
    with lock.workdir_lock(tmp_path, log=said.append) as path:
        assert json.loads(path.read_text())["pid_start"] == lock._process_start(os.getpid())
    assert len(said) == 1 and said[0].startswith(f"took over the lock of pid {os.getpid()}")
