"""The errors a user must fix, apart from any command line.

`Error` is the one base class of what a user must fix (a file, a folder, a config
value, a dataset, a checkpoint): its message names the thing and says why. Every CLI
prints it as one line, `error: <message>`, and exits 2; any other exception is a bug
and keeps its traceback. Each module that can refuse something defines its own
subclass (`codec.CodecError`, `midi_io.MidiError`, `checkpoint.CheckpointError`, ...).
"""

from __future__ import annotations


class Error(Exception):
    """Something the user must fix: the message names the thing and why."""


class UsageError(Error, ValueError):
    """A setting or config value that cannot work (the message names the field)."""
