"""Plumbing every CLI shares (not a CLI itself): errors, flags, safe writes, exits.

- `Error`: the one base class of what a user must fix (a flag, a file, a workdir, a
  dataset). Every CLI prints it as one line, `error: <message>`, and exits 2; any
  other exception is a bug and keeps its traceback.
- `parse_flags`: absl flags, the system the Flax examples use, each CLI on its own
  `FlagValues` (so CLIs and tests can parse in one process); `--config` files with
  `--config.x=y` overrides through ml_collections.
- `atomic_path` / `atomic_write`: a file is replaced whole or not at all.
- `ensure_writable`: an output folder is checked before the long work, not after.
- `entry_point`: the exit convention, `main(argv) -> int`.

  @cli.entry_point
  def main(argv: list[str]) -> int: ...

  if __name__ == "__main__":
      raise SystemExit(main())
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


class Error(Exception):
    """Something the user must fix: the message names the thing (flag, file, folder) and why."""


class UsageError(Error, ValueError):
    """A flag or config value that cannot work."""


def entry_point(main: Callable[[list[str]], int | None]) -> Callable[[Sequence[str] | None], int]:
    """`main(argv)` with the exit convention: 0 on success, 2 and one line on stderr for
    an `Error`. argv excludes the program name; None reads sys.argv."""

    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        try:
            return main(argv) or 0
        except Error as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


def parse_flags(
    argv: Sequence[str],
    define: Callable[[Any, list[str]], None],
    *,
    prog: str,
    doc: str,
    positional: int = 0,
    log_level: str = "warning",
) -> tuple[Any, list[str]]:
    """Parses argv with the flags `define(flag_values, argv)` declares.

    Args:
      argv: the arguments, without the program name.
      define: declares the flags on the `absl.flags.FlagValues` it is given (argv is
        for `define_config`, which declares the `--config.x=y` overrides it finds).
      prog: the command, for --help (e.g. "python -m jaxmusic.sample").
      doc: the CLI's description, for --help.
      positional: how many positional arguments the CLI takes.
      log_level: absl logging's level for the run ("warning": orbax logs every save
        at INFO; "error" also hides its warning on every read-only open).

    Returns:
      (the parsed FlagValues, the positional arguments).

    Raises:
      UsageError: an unknown flag, a bad value, a missing required flag, or the wrong
        number of positional arguments. --help prints the flags and exits 0.
    """
    from absl import flags, logging

    values = flags.FlagValues()
    argv = list(argv)
    define(values, [prog, *argv])
    if "--help" in argv or "-h" in argv:
        usage = values.get_help(include_special_flags=False)
        print(f"usage: {prog} [flags]\n\n{doc.strip()}\n\nflags:\n{usage}")
        raise SystemExit(0)
    try:
        rest = values([prog, *argv])[1:]
    except flags.Error as e:
        raise UsageError(str(e)) from None
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # a --config.x=y that cannot apply
        overrides = " ".join(a for a in argv if a.startswith("--config.")) or "--config"
        raise UsageError(
            f"{overrides}: no such config field, or a value that does not fit it ({e})"
        ) from None
    if len(rest) != positional:
        raise UsageError(
            f"{prog} takes {positional} positional argument(s), got {len(rest)}: {' '.join(rest)}"
        )
    logging.set_verbosity(log_level)
    return values, rest


def define_config(
    flag_values: Any, argv: list[str], *, default: str | None = None, lock: bool = True
) -> None:
    """--config, a configs/*.py file, and its `--config.x=y` overrides (ml_collections).

    default: the config file when --config is not given (None: --config is required).
    lock: the config's fields are locked (an override can only set one it has).
    """
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config", default, "a configs/*.py file", flag_values=flag_values, lock_config=lock, sys_argv=argv
    )
    if default is None:
        flags.mark_flag_as_required("config", flag_values=flag_values)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` when the block ends
    without an error and is deleted when it does not. Readers see the old file or the
    whole new one, never a part (os.replace is atomic within a file system).

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


def ensure_writable(flag: str, folder: str | os.PathLike) -> Path:
    """Creates `folder` if needed and checks a file can be written there (before long work).

    Raises:
      UsageError: naming the flag and the folder.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"{flag} {folder}: cannot write there ({e.strerror or e})") from None
    return folder
