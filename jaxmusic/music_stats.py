"""Measures over note arrays: pure functions, no I/O.

Notes are NOTE_DTYPE arrays (see `jaxmusic.midi_io`). The key of a piece is
`conditioning`'s estimator, the one the model's key input reads.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmusic import conditioning, midi_io


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
    import mir_eval  # only here: the key and statistics functions stand on numpy alone

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


# ----------------------------------------------------------------------------
# Music statistics of one piece (the features of Yang & Lerch, "On the evaluation
# of generative models in music", 2020, and MusPy), over NOTE_DTYPE arrays in
# seconds. Each returns a float64 vector (length 1 for a scalar).
# ----------------------------------------------------------------------------

# Note-length bin edges in seconds (a beat-free stand-in for Yang & Lerch's note
# length classes: at 120 bpm they fall between 32nd, 16th, 8th, quarter, half and
# whole notes).
NOTE_LENGTH_EDGES = (0.0, 0.09, 0.18, 0.35, 0.7, 1.4, 2.8, np.inf)


def _by_onset(notes: np.ndarray) -> np.ndarray:
    return notes[np.lexsort((notes["pitch"], notes["start"]))]


def pitch_count(notes: np.ndarray) -> np.ndarray:
    """[1]: the number of distinct pitches used."""
    return np.array([float(np.unique(notes["pitch"]).shape[0])])


def pitch_class_histogram(notes: np.ndarray) -> np.ndarray:
    """[12]: share of notes on each pitch class C, C#, ..., B (zeros for no notes)."""
    counts = np.bincount(np.asarray(notes["pitch"], np.int64) % 12, minlength=12).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def pitch_range(notes: np.ndarray) -> np.ndarray:
    """[1]: highest minus lowest pitch in semitones (0 for no notes)."""
    if not notes.shape[0]:
        return np.zeros(1)
    return np.array([float(notes["pitch"].max() - notes["pitch"].min())])


def average_pitch_interval(notes: np.ndarray) -> np.ndarray:
    """[1]: mean absolute pitch step in semitones between consecutive notes
    (in onset order, pitch order within a chord; 0 for fewer than two notes)."""
    pitch = _by_onset(notes)["pitch"].astype(np.float64)
    return np.array([float(np.abs(np.diff(pitch)).mean()) if pitch.shape[0] > 1 else 0.0])


def _onsets(notes: np.ndarray) -> np.ndarray:
    """[n]: the distinct onset times in seconds, ascending (onsets within 1 ms are one)."""
    return np.unique(np.round(notes["start"], 3))


def inter_onset_interval(notes: np.ndarray) -> np.ndarray:
    """[1]: mean seconds between consecutive distinct onsets (a chord is one onset;
    onsets within 1 ms are one); 0 for fewer than two onsets."""
    onsets = _onsets(notes)
    return np.array([float(np.diff(onsets).mean()) if onsets.shape[0] > 1 else 0.0])


def note_length_histogram(notes: np.ndarray) -> np.ndarray:
    """[len(NOTE_LENGTH_EDGES) - 1]: share of notes in each note-length bin."""
    counts, _ = np.histogram(notes["end"] - notes["start"], bins=np.asarray(NOTE_LENGTH_EDGES))
    return counts / max(counts.sum(), 1.0)


def polyphony(notes: np.ndarray) -> np.ndarray:
    """[1]: mean number of notes sounding at once, over the time when at least one
    sounds (weighted by time; 0 for no notes)."""
    if not notes.shape[0]:
        return np.zeros(1)
    times = np.concatenate([notes["start"], notes["end"]])
    change = np.concatenate([np.ones(notes.shape[0]), -np.ones(notes.shape[0])])
    order = np.lexsort((change, times))  # at equal times, ends before starts
    times, sounding = times[order], np.cumsum(change[order])
    span = np.diff(times)
    active = sounding[:-1] > 0
    covered = span[active].sum()
    return np.array([float((sounding[:-1] * span)[active].sum() / covered) if covered > 0 else 0.0])


def note_density(notes: np.ndarray) -> np.ndarray:
    """[1]: notes per second from the first onset to the last note's end (0 for none)."""
    if not notes.shape[0]:
        return np.zeros(1)
    span = float(notes["end"].max() - notes["start"].min())
    return np.array([notes.shape[0] / span if span > 0 else 0.0])


def pitch_class_entropy(notes: np.ndarray) -> np.ndarray:
    """[1]: Shannon entropy in bits of the pitch-class histogram (MusPy's definition):
    0 for one pitch class, log2(12) for all twelve equally; 0 for no notes."""
    p = pitch_class_histogram(notes)
    p = p[p > 0]
    return np.array([float(-(p * np.log2(p)).sum())])


# Pitch classes of the major and the (natural) minor scale on C, as MusPy's
# pitch_in_scale_rate uses them.
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)


def scale_consistency(notes: np.ndarray) -> np.ndarray:
    """[1]: the largest share of notes in one major or minor scale, over all 24
    (MusPy's definition): 1 for a piece within one key's scale; 0 for no notes."""
    hist = pitch_class_histogram(notes)
    if not notes.shape[0]:
        return np.zeros(1)
    rates = [hist[[(root + k) % 12 for k in scale]].sum() for root in range(12)
             for scale in (MAJOR_SCALE, MINOR_SCALE)]  # fmt: skip
    return np.array([float(max(rates))])


def estimate_key(notes: np.ndarray) -> int:
    """The Krumhansl-Schmuckler key of notes (`conditioning.key_of` of their
    duration-weighted pitch-class distribution): 0..11 C major .. B major, 12..23 C minor
    .. B minor (`conditioning.KEY_NAMES`); `conditioning.NO_KEY` for a piece with no notes
    or a single pitch class (no key to tell). Drums are left out."""
    notes = pitched(notes)
    weight = np.bincount(np.asarray(notes["pitch"], np.int64) % 12,
                         weights=notes["end"] - notes["start"], minlength=12)  # fmt: skip
    return int(conditioning.key_of(weight))


STATISTICS = {
    "pitch_class_histogram": pitch_class_histogram,
    "pitch_class_entropy": pitch_class_entropy,
    "scale_consistency": scale_consistency,
    "pitch_range": pitch_range,
    "pitch_count": pitch_count,
    "average_pitch_interval": average_pitch_interval,
    "inter_onset_interval": inter_onset_interval,
    "note_length_histogram": note_length_histogram,
    "polyphony": polyphony,
    "note_density": note_density,
}


def pitched(notes: np.ndarray) -> np.ndarray:
    """The notes that are not drums (a drum note's pitch is a sound, not a pitch)."""
    return notes[~notes["is_drum"]] if notes["is_drum"].any() else notes


NUM_INSTRUMENTS = len(midi_io.INSTRUMENT_NAMES)  # General MIDI's 16 families, then the drums


def instrument_share(notes: np.ndarray) -> np.ndarray:
    """[17]: share of notes played by each General MIDI family, the drums last (zeros for no notes)."""
    counts = np.bincount(midi_io.instrument_index(notes), minlength=NUM_INSTRUMENTS).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def instruments_used(notes: np.ndarray) -> np.ndarray:
    """[1]: how many of the 17 instruments (families and drums) play at least one note."""
    return np.array([float(np.unique(midi_io.instrument_index(notes)).shape[0])])


def drum_density(notes: np.ndarray) -> np.ndarray:
    """[1]: drum notes per second over the piece's span (0 without drums)."""
    return note_density(notes)[0:1] * float(notes["is_drum"].mean() if notes.shape[0] else 0.0)


INSTRUMENTATION = {
    "instrument_share": instrument_share,
    "instruments_used": instruments_used,
    "drum_density": drum_density,
}


def statistics(pieces: list[np.ndarray], *, instrumentation: bool = False) -> dict[str, np.ndarray]:
    """Every statistic of every piece: {name: float64[P, d]}. `STATISTICS` read the
    pitched notes (drums left out); with `instrumentation`, `INSTRUMENTATION` too (of all notes)."""
    out = {name: np.stack([fn(pitched(p)) for p in pieces]) for name, fn in STATISTICS.items()}
    if instrumentation:
        out |= {name: np.stack([fn(p) for p in pieces]) for name, fn in INSTRUMENTATION.items()}
    return out


# What the genre classifier reads beyond the statistics above (`descriptors`): where
# the statistics are deliberately blind to register, loudness and the direction of
# melodic steps (Yang & Lerch compare pieces in any key and octave), genres differ in
# exactly those: a bass line, a folk fiddle and a chorale's tenor share pitch classes.
_INTERVAL_CLIP = 12  # signed steps beyond an octave count as an octave
_REGISTER_WIDTH = 6  # semitones a register bin spans (22 bins over MIDI 0..127)
_LOG2_SECONDS = (-7.0, 4.0)  # the range of the onset-gap and note-length histograms (1/128 s to 16 s)
_LOG2_BINS = 12


def descriptors(notes: np.ndarray) -> np.ndarray:
    """float64[88]: features of a piece's pitched notes for telling genres apart (zeros for
    no notes).

    In order: the signed pitch step between consecutive notes (onset order, pitch
    order within a chord) clipped to +-12 [25]; the pitch-class step (mod 12) [12];
    the register, pitches in 6-semitone bins [22]; log2 seconds between distinct onsets
    [12] and of note lengths [12] from 1/128 s to 16 s, the end bins holding everything
    beyond (shares of the piece's steps, gaps, notes); then the mean and spread of
    velocity (/127) and of pitch (/127, /24), and the share of notes that start a new
    onset (1 for a melody, 0.25 for four-voice chords) [5].
    """
    out = np.zeros(88)
    notes = pitched(notes)
    if not notes.shape[0]:
        return out
    ordered = _by_onset(notes)
    pitch = ordered["pitch"].astype(np.int64)
    step = np.diff(pitch)
    share = 1.0 / max(step.shape[0], 1)
    clipped = np.clip(step, -_INTERVAL_CLIP, _INTERVAL_CLIP) + _INTERVAL_CLIP
    out[0:25] = np.bincount(clipped, minlength=25) * share
    out[25:37] = np.bincount(step % 12, minlength=12) * share
    out[37:59] = np.bincount(np.minimum(pitch // _REGISTER_WIDTH, 21), minlength=22) / pitch.shape[0]
    onsets = _onsets(notes)
    gaps, lengths = np.diff(onsets), notes["end"] - notes["start"]
    for lo, values in ((59, gaps), (71, lengths)):
        if values.shape[0]:
            logs = np.clip(np.log2(np.maximum(values, 1e-9)), _LOG2_SECONDS[0], _LOG2_SECONDS[1] - 1e-9)
            counts, _ = np.histogram(logs, bins=_LOG2_BINS, range=_LOG2_SECONDS)
            out[lo : lo + _LOG2_BINS] = counts / values.shape[0]
    velocity = notes["velocity"].astype(np.float64)
    out[83:88] = (velocity.mean() / 127, velocity.std() / 127, pitch.mean() / 127, pitch.std() / 24,
                  onsets.shape[0] / notes.shape[0])  # fmt: skip
    return out


def is_degenerate(note_ids: np.ndarray) -> bool:
    """A sample with no notes (silence), or one pseudo-note more than half of its notes.

    Args:
      note_ids: int[n] the sample's pseudo-note ids (before EOS, no special ids).
    """
    note_ids = np.asarray(note_ids, np.int64).reshape(-1)
    if not note_ids.shape[0]:
        return True
    return bool(np.unique(note_ids, return_counts=True)[1].max() * 2 > note_ids.shape[0])


def outside_range(real: np.ndarray, generated: np.ndarray) -> float | None:
    """The share of generated pieces whose value of a scalar statistic lies outside
    the real pieces' range (None for a histogram statistic, d > 1).

    An overlap area falls alike when every sample moves a little and when a few go
    far off; this tells the second kind: samples none of the real music resembles.

    Args:
      real: float[P, 1] the statistic of the real pieces.
      generated: float[M, 1] the same of the generated ones.
    """
    if real.shape[1] != 1:
        return None
    lo, hi = real[:, 0].min(), real[:, 0].max()
    return float(((generated[:, 0] < lo) | (generated[:, 0] > hi)).mean()) if generated.shape[0] else 0.0


# ----------------------------------------------------------------------------
# Yang & Lerch's comparison of two sets: for a statistic, the distances between
# pieces within the real set (intra-set) and between real and generated pieces
# (inter-set) are smoothed into densities; the closer the generated set is to the
# real one, the more the inter-set density overlaps the intra-set one.
# ----------------------------------------------------------------------------


def intra_set_distances(a: np.ndarray) -> np.ndarray:
    """float64[P (P - 1) / 2]: Euclidean distances between every pair of rows of a[P, d]."""
    i, j = np.triu_indices(a.shape[0], k=1)
    return np.linalg.norm(a[i] - a[j], axis=-1)


def inter_set_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64[P * Q]: Euclidean distances between every row of a[P, d] and of b[Q, d]."""
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1).reshape(-1)


def density_grid(x: np.ndarray, y: np.ndarray, points: int = 2048):
    """Gaussian KDEs of samples x and y (Silverman's bandwidth, floored so a set of
    equal values is a narrow bump) evaluated on one grid covering both.

    Each set gets its own bandwidth, as in Yang & Lerch's reference code (scipy's
    gaussian_kde per set), so the figures compare with theirs; the price is that the
    inter-set density of more samples is smoothed less than the real set's intra-set
    one, and the overlap falls as the sample count grows (docs/evaluation.md)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scale = max(float(np.ptp(np.concatenate([x, y]))), 1e-6)

    def bandwidth(s):
        return max(1.06 * float(s.std()) * s.shape[0] ** -0.2, 1e-3 * scale)

    hx, hy = bandwidth(x), bandwidth(y)
    lo = min(x.min() - 4 * hx, y.min() - 4 * hy)
    hi = max(x.max() + 4 * hx, y.max() + 4 * hy)
    grid = np.linspace(lo, hi, points)

    def kde(s, h):
        z = (grid[:, None] - s[None, :]) / h
        return np.exp(-0.5 * z * z).sum(1) / (s.shape[0] * h * np.sqrt(2 * np.pi))

    return grid, kde(x, hx), kde(y, hy)


def overlap_area(x: np.ndarray, y: np.ndarray) -> float:
    """Area under min(p, q) of the smoothed densities of samples x and y: 1 when they
    are the same, 0 when they are apart."""
    return _overlap(*density_grid(x, y))


def kl_divergence(x: np.ndarray, y: np.ndarray) -> float:
    """KL(p || q) in nats of the smoothed densities of samples x (p) and y (q), on
    their common grid (q floored at 1e-10 of its peak, so disjoint sets give a large
    finite number)."""
    return _kl(*density_grid(x, y))


def _overlap(grid: np.ndarray, p: np.ndarray, q: np.ndarray) -> float:
    return float(np.clip(np.trapezoid(np.minimum(p, q), grid), 0.0, 1.0))


def _kl(grid: np.ndarray, p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / p.sum(), q / q.sum()
    q = np.maximum(q, 1e-10 * q.max())
    keep = p > 0
    return float(max((p[keep] * np.log(p[keep] / q[keep])).sum(), 0.0))


def distance_densities(real: np.ndarray, generated: np.ndarray):
    """(grid, intra-set density, inter-set density) for real[P, d] against generated[Q, d]."""
    return density_grid(intra_set_distances(real), inter_set_distances(real, generated))


def compare_sets(real: np.ndarray, generated: np.ndarray) -> dict[str, float]:
    """Yang & Lerch for one statistic: real[P, d] against generated[Q, d].

    Returns:
      overlap_area and kl_divergence of the real set's intra-set distances against
      the inter-set distances (real to generated), and each set's mean statistic
      (a float, or a list for a histogram).
    """
    densities = distance_densities(real, generated)
    return {
        "overlap_area": _overlap(*densities),
        "kl_divergence": _kl(*densities),
        "real_mean": _mean(real),
        "generated_mean": _mean(generated),
    }


def _mean(a: np.ndarray) -> float | list[float]:
    return float(a.mean()) if a.shape[1] == 1 else [float(v) for v in a.mean(0)]
