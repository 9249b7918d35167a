"""What every CLI shares (not a CLI itself, and imported by CLIs only): flags and exits.

- `entry_point`: the exit convention, `main(argv) -> int`: 0 on success, one line
  `error: <message>` and exit 2 for an `errors.Error` (what a user must fix).
- `parse_flags`: absl flags, the system the Flax examples use, each CLI on its own
  `FlagValues` (so CLIs and tests can parse in one process); `--config` files with
  `--config.x=y` overrides through ml_collections.
- `ensure_writable`: an output folder given by a flag, checked before the long work.

  @cli.entry_point
  def main(argv: list[str]) -> int: ...

  if __name__ == "__main__":
      raise SystemExit(main())
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxmusic import fileio
from jaxmusic.errors import Error, UsageError


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


def ensure_writable(flag: str, folder: str | os.PathLike) -> Path:
    """`fileio.ensure_writable` of the folder a flag names.

    Raises:
      UsageError: naming the flag, the folder and the reason.
    """
    try:
        return fileio.ensure_writable(folder)
    except Error as e:
        raise UsageError(f"{flag} {e}") from None


def define_sampling_flags(fv) -> None:
    """The flags of `sampler.Settings` that jaxmusic.sample and jaxmusic.evaluate share,
    each defaulting to the run's own (its config's `sampling`), and --dtype."""
    from absl import flags

    run = "default: the run's config.sampling"
    flags.DEFINE_float("temperature", None, f"divides the logits (> 0; {run})", flag_values=fv)
    flags.DEFINE_integer(
        "top_k", None, f"draw among the k most probable notes; 0: all ({run})", flag_values=fv
    )
    flags.DEFINE_float("top_p", None, f"nucleus mass in (0, 1]; 1: none ({run})", flag_values=fv)
    flags.DEFINE_bool("carry_state", None, f"the decoder goes on from phrase to phrase, no re-encoding "
                      f"({run})", flag_values=fv)  # fmt: skip
    flags.DEFINE_integer(
        "min_notes", None, f"EOS is not drawn before this many notes ({run})", flag_values=fv
    )
    flags.DEFINE_bool("untempered_rhythm", None, "each note's onset gap (or EOS) from the model's own "
                      "distribution; temperature, top_k, top_p choose among the notes of that gap "
                      f"(--nountempered_rhythm: every id at once; {run})", flag_values=fv)  # fmt: skip
    flags.DEFINE_bool("untempered_copy", None, "a model with a lookback: each note's lookback taken with the "
                      "model's own probability, temperature, top_k, top_p choosing among the rest "
                      f"({run})", flag_values=fv)  # fmt: skip
    flags.DEFINE_bool("primer_instruments", None, "only the instruments of a row's primer play on (a codec "
                      f"with instruments; {run})", flag_values=fv)  # fmt: skip
    flags.DEFINE_bool("untempered_instruments", None, "each note's instrument from the model's own "
                      "distribution; temperature, top_k, top_p choose among its notes (a codec with "
                      f"instruments; {run})", flag_values=fv)  # fmt: skip
    flags.DEFINE_string("dtype", None, "the input type of the model's products: float32 or bfloat16 "
                        "(default: the checkpoint's config.model.dtype)", flag_values=fv)  # fmt: skip
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "the workdir's checkpoint of the lowest "
                      "validation NLL (a run without one: its latest), or its latest",
                      flag_values=fv)  # fmt: skip


def sampling_settings(f, generator, **more: Any) -> Any:
    """The sampling flags over the run's own settings (`inference.Generator.settings`);
    `more`: other settings of the CLI (greedy, fixed_length).

    Raises:
      UsageError: a value that cannot work, naming its flag.
    """
    import dataclasses

    from jaxmusic import sampler

    names = (
        "temperature",
        "top_k",
        "top_p",
        "carry_state",
        "min_notes",
        "untempered_rhythm",
        "untempered_copy",
        "primer_instruments",
        "untempered_instruments",
    )
    given = {n: f[n].value for n in names if f[n].value is not None} | more
    try:
        return sampler.Settings(**(dataclasses.asdict(generator.settings) | given))
    except UsageError as e:
        raise UsageError(f"--{e}") from None


def load_generator(f) -> Any:
    """`inference.Generator.load` of --workdir's --checkpoint in --dtype.

    Raises:
      UsageError: naming the flag of a bad --dtype.
      checkpoint.CheckpointError: the workdir has no readable checkpoint.
    """
    from jaxmusic import inference

    try:
        generator = inference.Generator.load(f.workdir, f.dtype, f.checkpoint)
    except UsageError as e:
        raise UsageError(f"--{e}") from None
    return generator
