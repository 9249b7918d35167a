"""The one path layer: every file a run reads and writes, local or in a bucket.

Paths are `etils.epath.Path` (what orbax and TFDS use): a local path, or a URL such as
`gs://BUCKET/run` that gcsfs opens (fsspec). For `gs://`, epath is told to use fsspec
rather than TensorFlow's own GCS file system (`EPATH_USE_TF=false`, set by
jaxmusic/__init__.py before epath is first used): the same client a TPU VM uses with its
default credentials, and one that an emulator can stand in for (`STORAGE_EMULATOR_HOST`,
which jaxmusic/__init__.py also hands to TensorStore, the client of orbax's array data,
as `TENSORSTORE_GCS_HTTP_URL`).

- `path`: a str or path as an epath.Path, a URL's scheme checked;
- `atomic_path` / `atomic_write`: a file replaced whole or not at all (a local file by
  rename; an object in a bucket by one upload, which GCS makes visible whole or not at all);
- `ensure_writable`: a folder created if needed and checked to take a file, so that a bad
  output folder (a missing bucket, no credentials, no permission) stops a command before
  its long work;
- `staged_folder`: a local folder to write many files into (a writer that reads back
  what it wrote, such as the renderer), uploaded file by file when it is done;
- `copy_tree` and `local_copy`: a folder copied between a bucket and the local disk
  (TFDS reads its records through TensorFlow, so a dataset in a bucket is read from a
  local copy that is fetched once and kept in `cache_dir()`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from etils import epath

from jaxmusic.errors import Error

SCHEMES = ("gs",)  # the URL schemes a run may live in (local paths aside)


def _no_listing_cache() -> None:
    """gcsfs keeps each folder listing for the life of the process, and so never sees what
    another process wrote (a checkpoint, a lock, a sample): a bucket is read afresh."""
    import fsspec.config

    for protocol in ("gs", "gcs"):
        fsspec.config.conf.setdefault(protocol, {})["use_listings_cache"] = False


_no_listing_cache()


class StorageError(Error):
    """A path that cannot be read or written: names it and why."""


def is_url(p: str | os.PathLike) -> bool:
    """A path of a remote file system (gs://, ...), not a local one."""
    return "://" in os.fspath(p)


def path(p: str | os.PathLike) -> epath.Path:
    """`p` as an epath.Path; a local path made absolute, so that it means the same from
    any folder (a run keeps its data_dir).

    Raises:
      StorageError: a URL of a scheme nothing here opens.
    """
    text = os.fspath(p)
    if is_url(text):
        scheme = text.split("://", 1)[0]
        if scheme not in SCHEMES:
            raise StorageError(f"{text}: no file system for {scheme}:// here (local paths and gs:// are)")
        return epath.Path(text)
    return epath.Path(os.path.abspath(text))


def reason(e: BaseException) -> str:
    """One line of why a storage call failed."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    lower = text.lower()
    if "bucket" in lower and ("not found" in lower or "does not exist" in lower):
        return "the bucket does not exist"
    if isinstance(e, PermissionError) or "403" in text or "permission" in lower:
        return f"permission refused ({text[:160]})"
    if "credentials" in lower:
        return f"no credentials ({text[:160]})"
    return getattr(e, "strerror", None) or text[:200]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A local temporary path to write to; when the block ends without an error it becomes
    `target` whole (a rename within a local file system, one upload to a bucket), else it
    is deleted. Readers see the old file or the whole new one, never a part.

    The temporary name ends with the real suffix, so writers that go by the suffix
    (matplotlib's savefig) write the right format.
    """
    target = os.fspath(target)
    remote = is_url(target)
    folder = tempfile.gettempdir() if remote else os.path.dirname(os.path.abspath(target))
    name = os.path.basename(target.rstrip("/"))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f".tmp{Path(name).suffix}")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written file gets the usual mode
    try:
        yield Path(tmp)
        if remote:
            with open(tmp, "rb") as f, path(target).open("wb") as out:
                shutil.copyfileobj(f, out)
        else:
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def atomic_write(target: str | os.PathLike, data: str | bytes) -> epath.Path:
    """Writes text or bytes to `target` whole or not at all (`atomic_path`); returns its path."""
    with atomic_path(target) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return path(target)


def ensure_writable(folder: str | os.PathLike) -> epath.Path:
    """Creates `folder` if needed and checks that a file can be written there.

    Raises:
      StorageError: naming the folder and the reason (no such bucket, no credentials,
        no permission, a file in the way, ...).
    """
    try:
        folder = path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test.{socket.gethostname()}.{os.getpid()}"  # hosts of a pod at once
        probe.write_bytes(b"")
        probe.unlink()
    except StorageError:
        raise
    except FileNotFoundError as e:
        # An object needs no folder above it: only a missing bucket makes a write "not found".
        why = "the bucket does not exist" if is_url(folder) else reason(e)
        raise StorageError(f"{folder}: cannot write there ({why})") from None
    except Exception as e:  # OSError locally; the clients of a bucket raise their own kinds
        raise StorageError(f"{folder}: cannot write there ({reason(e)})") from None
    return folder


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """A local folder for files that belong in `target`: `target` itself when it is
    local; for a bucket, a temporary folder whose files are uploaded (each whole, in name
    order) when the block ends without an error, then deleted."""
    if not is_url(target):
        yield Path(os.fspath(target))
        return
    local = Path(tempfile.mkdtemp(prefix="jaxmusic-staged-"))
    try:
        yield local
        copy_tree(local, target)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def copy_tree(source: str | os.PathLike, target: str | os.PathLike) -> list[str]:
    """Copies every file under `source` to the same relative path under `target` (either
    may be local or a URL), each file whole; returns the relative paths copied.

    Raises:
      StorageError: naming the file and the reason.
    """
    source, target = path(source), path(target)
    copied = []
    for f in files(source):
        rel = os.fspath(f.relative_to(source))
        try:
            _copy_file(f, target / rel)
        except Exception as e:  # OSError locally; the clients of a bucket raise their own kinds
            raise StorageError(f"{f}: cannot copy to {target / rel} ({reason(e)})") from None
        copied.append(rel)
    return copied


def _copy_file(source: epath.Path, target: epath.Path | Path) -> None:
    """One file copied whole: streamed into an object of a bucket (an upload appears
    whole), or through `atomic_path` into a local folder made if needed."""
    if is_url(os.fspath(target)):
        with source.open("rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)


def files(root: epath.Path, name: str | None = None, max_depth: int = 8) -> list[epath.Path]:
    """The files under `root` (named `name`, if given), at most max_depth folders down,
    sorted (epath's glob refuses `**` on a bucket, where each level is one listing)."""
    out, level = [], [root]
    for _ in range(max_depth + 1):
        below = []
        for folder in level:
            for p in folder.iterdir():
                if p.is_dir():
                    below.append(p)
                elif name is None or p.name == name:
                    out.append(p)
        level = below
    return sorted(out)


def cache_dir() -> Path:
    """Where local copies of remote folders are kept: $JAXMUSIC_CACHE, else
    $XDG_CACHE_HOME/jaxmusic, else ~/.cache/jaxmusic."""
    if os.environ.get("JAXMUSIC_CACHE"):
        return Path(os.environ["JAXMUSIC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxmusic"


def local_copy(url: str | os.PathLike) -> Path:
    """A local copy of the folder at `url` (a local path comes back as itself), in
    `cache_dir()`; files are fetched again only when their size or time changed.

    Raises:
      StorageError: the folder cannot be listed or read.
    """
    if not is_url(url):
        return Path(os.fspath(url))
    remote = path(url)
    local = cache_dir() / "copies" / hashlib.sha1(os.fspath(remote).encode()).hexdigest()[:16]
    seen_file = local / ".remote.json"
    try:
        seen = json.loads(seen_file.read_text()) if seen_file.exists() else {}
        now = {}
        for f in files(remote):
            rel, st = os.fspath(f.relative_to(remote)), f.stat()
            now[rel] = [st.length, st.mtime]
            if seen.get(rel) != now[rel] or not (local / rel).exists():
                _copy_file(f, local / rel)
    except StorageError:
        raise
    except Exception as e:
        raise StorageError(f"{remote}: cannot read it ({reason(e)})") from None
    for rel in set(seen) - set(now):  # gone from the bucket: gone here too
        (local / rel).unlink(missing_ok=True)
    atomic_write(seen_file, json.dumps(now))
    return local
