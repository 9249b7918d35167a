"""MIDI folders -> TFDS datasets of pseudo-note ids (runs once, offline, in parallel)."""

import jaxmusic  # noqa: F401 - its paths' settings before TFDS uses etils.epath
