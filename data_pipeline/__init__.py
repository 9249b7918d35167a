"""MIDI folders -> TFDS datasets of pseudo-note ids (runs once, offline, in parallel)."""
