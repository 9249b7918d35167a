"""Files written whole or not at all, and output folders checked before long work.

- `atomic_path` / `atomic_write`: a file is replaced whole or not at all (a reader
  sees the old file or the whole new one, never a part).
- `ensure_writable`: a folder is created if needed and checked to take a file, so a
  bad output folder stops a command before its long work, not after.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from jaxmusic.errors import Error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` when the block ends
    without an error and is deleted when it does not (os.replace is atomic within a file
    system).

    The temporary name ends with the real suffix, so writers that go by the suffix
    (matplotlib's savefig) write the right format.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written file gets the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Writes text or bytes to `path` whole or not at all (`atomic_path`); returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return Path(path)


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Creates `folder` if needed and checks that a file can be written there.

    Raises:
      Error: naming the folder and the reason.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise Error(f"{folder}: cannot write there ({e.strerror or e})") from None
    return folder
