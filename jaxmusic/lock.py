"""One writer per workdir: a lock file that a training run holds while it runs.

`W/train.lock` is created atomically (O_CREAT | O_EXCL) and holds who took it: host,
pid, the process's start time (so a reused pid is not taken for the holder) and
when. A second run on the same workdir is refused with one line naming the holder.
A lock left by a process that is gone (killed with SIGKILL, a crashed machine) is
taken over when the holder ran on this host and is provably dead; from another host
nothing can be proven, so the message says which file to delete once that run is
known to be over.

Shared storage: O_EXCL creation is atomic on local file systems and on NFS v3 and
later, so two hosts cannot both take the lock there. Object-store mounts (gcsfuse,
s3fs) do not promise it: on those, start one run per workdir by other means.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from jaxmusic.errors import Error

LOCK_FILE = "train.lock"


class WorkdirBusy(Error):
    """The workdir is held by another run: names it."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in () may hold spaces


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    now = _process_start(pid)
    return start is None or now is None or now == start  # a different start: the pid was reused


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {started}"


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike, *, log=print) -> Iterator[Path]:
    """Holds `workdir`/train.lock for the duration of the block; yields its path.

    Raises:
      WorkdirBusy: another live run holds it (or one on another host may).
    """
    path = Path(workdir) / LOCK_FILE
    me = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
          "time": time.time()}  # fmt: skip
    for _ in range(3):  # a stale lock is set aside, then the creation is tried again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None:
                continue  # released between our open and our read
            if holder.get("host") != me["host"]:
                raise WorkdirBusy(
                    f"workdir {workdir} is in use by {_describe(holder)} ({path}); if that run is over, "
                    f"delete {path} and start again"
                ) from None
            if _alive(int(holder.get("pid", -1)), holder.get("pid_start")):
                raise WorkdirBusy(f"workdir {workdir} is in use by {_describe(holder)} ({path})") from None
            # Renaming is atomic: of two runs taking over the same stale lock, one wins.
            aside = path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, aside)
                os.unlink(aside)
                log(f"took over the lock of {_describe(holder)}, which is no longer running")
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise WorkdirBusy(f"workdir {workdir}: could not take {path}")
    try:
        yield path
    finally:
        if (_read(path) or {}).get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as held by an unknown process on an unknown host
