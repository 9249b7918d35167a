"""Byte-level mutations of MIDI files, for testing that a reader never escapes.

`mutate(data, seed)` applies one or a few of the damages real collections and
hostile inputs hold: flipped bytes, truncation, inserted junk, corrupted chunk
lengths and header fields, repeated regions, and over-long variable-length
quantities. The same seed always gives the same mutant, so any escape found at
scale (`scripts/fuzz_midi.py`) is reproduced from (file, seed) alone; the
hypothesis test in tests/test_midi_io.py draws seeds from the same function.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

Mutation = Callable[[bytearray, np.random.Generator], bytearray]


def _flip(b: bytearray, rng: np.random.Generator) -> bytearray:
    for i in rng.integers(0, len(b), rng.integers(1, 9)):
        b[i] ^= int(rng.integers(1, 256))
    return b


def _truncate(b: bytearray, rng: np.random.Generator) -> bytearray:
    return b[: int(rng.integers(0, len(b)))]


def _insert(b: bytearray, rng: np.random.Generator) -> bytearray:
    at = int(rng.integers(0, len(b) + 1))
    junk = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
    return b[:at] + junk + b[at:]


def _chunk_starts(b: bytearray) -> list[int]:
    """Offsets of 'MThd'/'MTrk' tags (found by search: the file may already be damaged)."""
    out, i = [], b.find(b"MT")
    while i >= 0:
        if b[i : i + 4] in (b"MThd", b"MTrk"):
            out.append(i)
        i = b.find(b"MT", i + 1)
    return out


def _chunk_length(b: bytearray, rng: np.random.Generator) -> bytearray:
    starts = [i for i in _chunk_starts(b) if i + 8 <= len(b)]
    if not starts:
        return _flip(b, rng)
    at = starts[int(rng.integers(0, len(starts)))] + 4
    old = struct.unpack(">I", b[at : at + 4])[0]
    new = [0, 1, old - 1, old + 1, old * 2, 0xFFFFFFFF, int(rng.integers(0, 2**32))][int(rng.integers(0, 7))]
    b[at : at + 4] = struct.pack(">I", new % 2**32)
    return b


def _header_field(b: bytearray, rng: np.random.Generator) -> bytearray:
    if len(b) < 14:
        return _flip(b, rng)
    at = [8, 10, 12][int(rng.integers(0, 3))]  # format, number of tracks, division
    value = [0, 1, 2, 3, 0x7FFF, 0x8000, 0xE250, 0xFFFF, int(rng.integers(0, 2**16))][int(rng.integers(0, 9))]
    b[at : at + 2] = struct.pack(">H", value)
    return b


def _repeat(b: bytearray, rng: np.random.Generator) -> bytearray:
    start = int(rng.integers(0, len(b)))
    end = min(len(b), start + int(rng.integers(1, 257)))
    return b[:end] + b[start:end] * int(rng.integers(1, 9)) + b[end:]


def _long_variable_int(b: bytearray, rng: np.random.Generator) -> bytearray:
    """Prefixes a byte just after a track header with continuation bytes: the first
    delta time (or a length) becomes a variable-length quantity of 5 to 12 bytes."""
    starts = [i for i in _chunk_starts(b) if b[i : i + 4] == b"MTrk" and i + 8 < len(b)]
    if not starts:
        return _insert(b, rng)
    at = starts[int(rng.integers(0, len(starts)))] + 8
    continuation = bytes(0x80 | int(x) for x in rng.integers(0, 128, int(rng.integers(4, 12))))
    return b[:at] + continuation + b[at:]


MUTATIONS: dict[str, Mutation] = {
    "flip": _flip,
    "truncate": _truncate,
    "insert": _insert,
    "chunk_length": _chunk_length,
    "header_field": _header_field,
    "repeat": _repeat,
    "long_variable_int": _long_variable_int,
}


def mutate(data: bytes, seed: int) -> tuple[bytes, list[str]]:
    """One to three mutations of `data`, chosen by `seed`.

    Returns:
      (the mutant's bytes, the names of the mutations applied, in order).
    """
    rng = np.random.default_rng(seed)
    b = bytearray(data)
    names = list(MUTATIONS)
    applied = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
        if not b:
            break
        name = names[int(rng.integers(0, len(names)))]
        b = MUTATIONS[name](b, rng)
        applied.append(name)
    return bytes(b), applied
