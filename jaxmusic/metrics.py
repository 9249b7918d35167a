"""Measures over note arrays: pure functions, no I/O.

Notes are NOTE_DTYPE arrays (see `jaxmusic.midi_io`).
"""

from __future__ import annotations

import dataclasses

import mir_eval
import numpy as np


@dataclasses.dataclass(frozen=True)
class OnsetMatch:
    """Note-onset matching of an estimate against a reference.

    Attributes:
      matched: notes paired one to one (same pitch, onsets within the tolerance).
      num_ref: notes in the reference.
      num_est: notes in the estimate.
    """

    matched: int
    num_ref: int
    num_est: int

    @property
    def precision(self) -> float:
        return self.matched / self.num_est if self.num_est else 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.num_ref if self.num_ref else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: OnsetMatch) -> OnsetMatch:
        """Pools counts, for precision/recall/F1 over many pieces (micro average)."""
        return OnsetMatch(
            self.matched + other.matched, self.num_ref + other.num_ref, self.num_est + other.num_est
        )


def midi_to_hz(pitch: np.ndarray) -> np.ndarray:
    """float[n] frequencies of MIDI pitches (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((np.asarray(pitch, np.float64) - 69.0) / 12.0)


def match_onsets(ref: np.ndarray, est: np.ndarray, tolerance: float = 0.05) -> OnsetMatch:
    """Matches notes by onset and exact pitch, as mir_eval's transcription metrics.

    A reference and an estimated note match when their pitches are equal and their
    onsets differ by at most `tolerance` seconds; offsets are ignored
    (mir_eval's `offset_ratio=None`). Each note matches at most one other
    (maximum bipartite matching).

    Args:
      ref: NOTE_DTYPE[n] reference notes.
      est: NOTE_DTYPE[m] estimated notes.
      tolerance: onset tolerance in seconds (the convention: 50 ms).

    Returns:
      The `OnsetMatch` counts.
    """
    if ref.shape[0] == 0 or est.shape[0] == 0:
        return OnsetMatch(0, ref.shape[0], est.shape[0])
    pairs = mir_eval.transcription.match_notes(
        np.stack([ref["start"], ref["end"]], 1),
        midi_to_hz(ref["pitch"]),
        np.stack([est["start"], est["end"]], 1),
        midi_to_hz(est["pitch"]),
        onset_tolerance=tolerance,
        pitch_tolerance=1.0,  # cents; exact MIDI pitch (a semitone is 100)
        offset_ratio=None,
    )
    return OnsetMatch(len(pairs), ref.shape[0], est.shape[0])
