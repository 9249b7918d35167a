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
s3fs) do not promise it: there, use the workdir's gs:// URL instead.

In a bucket (`gs://B/run/train.lock`) the creation is GCS's own atomic create (a
generation precondition: only if no such object exists), so of two runs one wins.
What a bucket cannot tell is whether a holder on another machine is alive: a
preempted VM is gone with its processes, and nothing says so. So the holder rewrites
the lock every REFRESH_SECONDS (a thread; each rewrite only if the object is still the
one it wrote), and a lock the bucket has not seen rewritten for LEASE_SECONDS is taken
to be abandoned and taken over, as is one whose holder is a dead process of this host.
A holder that finds its lock taken over (it was cut off from the bucket for longer
than the lease) is told (`on_lost`): the trainer then stops without saving.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from jaxmusic import fileio
from jaxmusic.errors import Error

LOCK_FILE = "train.lock"
REFRESH_SECONDS = 30.0  # a bucket lock's holder rewrites it this often ...
LEASE_SECONDS = 150.0  # ... and one not rewritten for this long (5 refreshes) is abandoned


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


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
            "time": time.time()}  # fmt: skip


def workdir_lock(workdir: str | os.PathLike, *, log=print, on_lost=None):
    """A context manager holding `workdir`/train.lock for its block (yielding the lock's
    path), in a local folder or a bucket; on_lost() is called (from another thread) if
    another run takes a bucket lock over while it is held.

    Raises:
      WorkdirBusy: another live run holds it (or one on another host may).
    """
    if fileio.is_url(workdir):
        return _bucket_lock(os.fspath(workdir), log, on_lost or (lambda: None))
    return _file_lock(workdir, log)


@contextlib.contextmanager
def _file_lock(workdir: str | os.PathLike, log) -> Iterator[Path]:
    path = Path(workdir) / LOCK_FILE
    me = _me()
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


# ----------------------------------------------------------------------------
# In a bucket.
# ----------------------------------------------------------------------------


def _blob(url: str):
    """The google-cloud-storage blob of a gs:// URL (an emulator's when
    STORAGE_EMULATOR_HOST names one: no credentials there)."""
    from google.cloud import storage

    bucket, _, name = url[len("gs://") :].partition("/")
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(project="emulator", credentials=AnonymousCredentials())
    else:
        client = storage.Client()
    return client.bucket(bucket).blob(name)


def _stale(holder: dict, written: float, me: dict) -> bool:
    """Whether a bucket lock's holder is known to be gone: not refreshed for LEASE_SECONDS
    (`written`: when the bucket last wrote it, POSIX seconds), or a dead process of this host."""
    if time.time() - written > LEASE_SECONDS:
        return True
    same_host = holder.get("host") == me["host"]
    return same_host and not _alive(int(holder.get("pid", -1)), holder.get("pid_start"))


@contextlib.contextmanager
def _bucket_lock(workdir: str, log, on_lost) -> Iterator[str]:
    from google.api_core import exceptions

    url = f"{workdir.rstrip('/')}/{LOCK_FILE}"
    blob, me = _blob(url), _me()
    for _ in range(3):  # a stale lock is deleted (if still the same), then the creation tried again
        try:
            blob.upload_from_string(json.dumps(me), if_generation_match=0)
            break
        except exceptions.PreconditionFailed:
            current = blob.bucket.get_blob(blob.name)
            try:
                holder = json.loads(
                    current.download_as_bytes(if_generation_match=current.generation) or b"{}"
                )
            except (AttributeError, exceptions.NotFound, exceptions.PreconditionFailed, ValueError):
                continue  # released or rewritten between our create and our read
            generation, written = current.generation, current.updated.timestamp()
            if not _stale(holder, written, me):
                left = max(LEASE_SECONDS - (time.time() - written), 0)
                raise WorkdirBusy(
                    f"workdir {workdir} is in use by {_describe(holder)} ({url}), which rewrote the lock "
                    f"{time.time() - written:.0f} s ago; if that run is gone, the lock is taken over "
                    f"{left:.0f} s from now (after {LEASE_SECONDS:.0f} s without a rewrite), or delete "
                    f"{url} once it is known to be over"
                ) from None
            with contextlib.suppress(exceptions.PreconditionFailed, exceptions.NotFound):
                blob.delete(if_generation_match=generation)
                log(f"took over the lock of {_describe(holder)}, which is no longer running")
    else:
        raise WorkdirBusy(f"workdir {workdir}: could not take {url}")
    stop = threading.Event()
    refresher = threading.Thread(target=_refresh, args=(blob, me, stop, log, on_lost), daemon=True)
    refresher.start()
    try:
        yield url
    finally:
        stop.set()
        refresher.join()
        with contextlib.suppress(exceptions.PreconditionFailed, exceptions.NotFound):
            blob.delete(if_generation_match=blob.generation)


def _refresh(blob, me: dict, stop: threading.Event, log, on_lost) -> None:
    """Rewrites the lock every REFRESH_SECONDS while it is still ours (its generation)."""
    from google.api_core import exceptions

    while not stop.wait(REFRESH_SECONDS):
        try:
            blob.upload_from_string(
                json.dumps(me | {"time": time.time()}), if_generation_match=blob.generation
            )
        except exceptions.PreconditionFailed:
            log(f"error: {blob.name} is no longer this run's: another run took it over")
            on_lost()
            return
        except Exception as e:  # a network hiccup: try again at the next refresh
            log(f"warning: could not refresh {blob.name} ({type(e).__name__}: {e})")
