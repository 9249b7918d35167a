"""Music statistics on hand-made notes, Yang & Lerch's set comparison, degenerate samples."""

import numpy as np
import pytest

from jaxmusic import conditioning, midi_io, music_stats


def notes(*rows):
    """(start, end, pitch) rows -> NOTE_DTYPE notes."""
    a = np.asarray(rows, np.float64).reshape(-1, 3)
    return midi_io.make_notes(a[:, 0], a[:, 1], a[:, 2].astype(int), np.full(a.shape[0], 80))


# C major chord for 1 s, then G alone for 0.5 s, a rest, and C5 from 2 s to 4 s.
PIECE = notes((0, 1, 60), (0, 1, 64), (1, 1.5, 67), (0, 1, 67), (2, 4, 72))
EMPTY = notes()


def test_pitch_statistics():
    np.testing.assert_allclose(
        music_stats.pitch_class_histogram(PIECE), np.eye(12)[[0, 4, 7, 7, 0]].sum(0) / 5
    )
    assert music_stats.pitch_count(PIECE)[0] == 4  # 60, 64, 67, 72
    assert music_stats.pitch_range(PIECE)[0] == 12
    # Onset order, pitch order within a chord: 60 64 67 | 67 | 72 -> steps 4, 3, 0, 5.
    assert music_stats.average_pitch_interval(PIECE)[0] == pytest.approx(3.0)
    # A pitch-class histogram of a transposed piece is the same histogram rotated.
    up = PIECE.copy()
    up["pitch"] += 2
    np.testing.assert_allclose(
        music_stats.pitch_class_histogram(up), np.roll(music_stats.pitch_class_histogram(PIECE), 2)
    )


def test_key_statistics():
    c_major = notes(*[(t, t + 1, p) for t, p in enumerate([60, 62, 64, 65, 67, 69, 71])])
    assert music_stats.scale_consistency(c_major)[0] == pytest.approx(1.0)  # every note in C major's scale
    assert music_stats.pitch_class_entropy(c_major)[0] == pytest.approx(np.log2(7))  # 7 classes, equally
    assert conditioning.KEY_NAMES[music_stats.estimate_key(c_major)] == "C major"
    chromatic = notes(*[(t, t + 1, 60 + t) for t in range(12)])
    assert music_stats.scale_consistency(chromatic)[0] == pytest.approx(7 / 12)
    assert music_stats.pitch_class_entropy(chromatic)[0] == pytest.approx(np.log2(12))
    # A minor: the tonic and fifth held longest; the same notes as C major otherwise.
    a_minor = notes(*[(t, t + (3 if p in (57, 64, 69) else 1), p)
                      for t, p in enumerate([57, 59, 60, 62, 64, 65, 67, 69])])  # fmt: skip
    assert conditioning.KEY_NAMES[music_stats.estimate_key(a_minor)] == "A minor"
    up = c_major.copy()
    up["pitch"] += 7
    assert conditioning.KEY_NAMES[music_stats.estimate_key(up)] == "G major"  # transposes with the piece
    assert music_stats.estimate_key(notes((0, 1, 60), (1, 2, 72))) == conditioning.NO_KEY  # one pitch class
    assert music_stats.estimate_key(EMPTY) == conditioning.NO_KEY


def test_rhythm_statistics():
    # Distinct onsets 0, 1, 2: mean gap 1 s (the chord counts once).
    assert music_stats.inter_onset_interval(PIECE)[0] == pytest.approx(1.0)
    # Lengths 1, 1, 0.5, 1, 2 s: bins [0.7, 1.4) x3, [0.35, 0.7) x1, [1.4, 2.8) x1.
    edges = np.asarray(music_stats.NOTE_LENGTH_EDGES)
    expected = np.histogram([1, 1, 0.5, 1, 2], edges)[0] / 5
    np.testing.assert_allclose(music_stats.note_length_histogram(PIECE), expected)
    assert expected[4] == pytest.approx(0.6)
    # Sounding: 3 notes for 1 s, 1 for 0.5 s, none for 0.5 s, 1 for 2 s -> (3 + 0.5 + 2) / 3.5.
    assert music_stats.polyphony(PIECE)[0] == pytest.approx(5.5 / 3.5)
    assert music_stats.note_density(PIECE)[0] == pytest.approx(5 / 4)
    # A note ending exactly when the next starts does not overlap it.
    legato = notes((0, 1, 60), (1, 2, 62), (2, 3, 64))
    assert music_stats.polyphony(legato)[0] == pytest.approx(1.0)


def test_statistics_of_no_notes_are_zero_not_nan():
    for name, fn in music_stats.STATISTICS.items():
        value = fn(EMPTY)
        assert np.all(value == 0), name
    stats = music_stats.statistics([PIECE, EMPTY, PIECE])
    assert stats["pitch_class_histogram"].shape == (3, 12)
    assert stats["pitch_range"].shape == (3, 1)
    np.testing.assert_array_equal(stats["pitch_range"][:, 0], [12, 0, 12])


def test_degenerate_samples():
    assert music_stats.is_degenerate(np.array([], np.int64))  # silence
    assert music_stats.is_degenerate(np.array([9, 9, 9, 10, 11]))  # 3 of 5 are one id
    assert not music_stats.is_degenerate(np.array([9, 9, 10, 11]))  # exactly half is not more
    assert not music_stats.is_degenerate(np.arange(10, 30))


def test_overlap_area_and_kl():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    assert music_stats.overlap_area(x, x) == pytest.approx(1.0, abs=1e-4)
    assert music_stats.kl_divergence(x, x) == pytest.approx(0.0, abs=1e-9)
    far = x + 100.0
    assert music_stats.overlap_area(x, far) < 1e-6
    assert music_stats.kl_divergence(x, far) > 10.0
    # Two unit Gaussians one standard deviation apart overlap 2 Phi(-1/2) = 0.617.
    y = rng.normal(size=4000)
    assert music_stats.overlap_area(y, rng.normal(size=4000) + 1.0) == pytest.approx(0.617, abs=0.04)
    # A set of equal values (zero spread) is a narrow bump, not an error.
    assert music_stats.overlap_area(np.zeros(10), np.zeros(10)) == pytest.approx(1.0, abs=1e-4)
    assert music_stats.overlap_area(np.zeros(10), np.ones(10)) < 1e-6


def test_compare_sets_rewards_the_same_distribution():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(80, 1))
    same = rng.normal(size=(80, 1))
    shifted = rng.normal(size=(80, 1)) + 5.0
    close = music_stats.compare_sets(real, same)
    off = music_stats.compare_sets(real, shifted)
    assert close["overlap_area"] > 0.9 > 0.15 > off["overlap_area"]
    assert close["kl_divergence"] < off["kl_divergence"]
    assert off["generated_mean"] - off["real_mean"] == pytest.approx(5.0, abs=0.4)
    np.testing.assert_allclose(music_stats.intra_set_distances(np.array([[0.0], [3.0], [4.0]])), [3, 4, 1])
    np.testing.assert_allclose(
        music_stats.inter_set_distances(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [0.0, 1.0]])), [5, 1]
    )


def test_outside_range_counts_samples_beyond_every_real_value():
    real = np.array([[0.2], [0.3], [0.5]])
    generated = np.array([[0.2], [0.4], [0.5], [0.55], [0.1], [2.0]])  # the ends count as inside
    assert music_stats.outside_range(real, generated) == pytest.approx(3 / 6)
    assert music_stats.outside_range(real, real) == 0.0
    assert music_stats.outside_range(real, generated[:0]) == 0.0
    assert music_stats.outside_range(np.ones((3, 12)) / 12, np.ones((2, 12)) / 12) is None  # a histogram


def test_descriptors_of_a_scale_and_a_chord():
    """A C-major scale (0.5 s a note, velocity 80): its steps, register, gaps and lengths
    fall in known bins; a four-note chord starts one onset for four notes."""
    start = np.arange(8) * 0.5
    scale = notes(*zip(start, start + 0.5, [60, 62, 64, 65, 67, 69, 71, 72], strict=True))
    d = music_stats.descriptors(scale)
    assert d.shape == (88,)
    steps = np.zeros(25)
    steps[12 + 2], steps[12 + 1] = 5 / 7, 2 / 7  # whole and half steps up
    np.testing.assert_allclose(d[0:25], steps)
    np.testing.assert_allclose(d[25:37], steps[12:24])  # the same steps, mod 12
    register = np.zeros(22)
    register[10], register[11], register[12] = 4 / 8, 3 / 8, 1 / 8  # 60-65, 66-71, 72
    np.testing.assert_allclose(d[37:59], register)
    half_second = np.eye(12)[6]  # log2(0.5) = -1 lies in the 7th of 12 bins from -7 to 4
    np.testing.assert_allclose(d[59:71], half_second)  # onset gaps
    np.testing.assert_allclose(d[71:83], half_second)  # note lengths
    np.testing.assert_allclose(d[83:88], [80 / 127, 0, np.mean([60, 62, 64, 65, 67, 69, 71, 72]) / 127,
                                          np.std([60, 62, 64, 65, 67, 69, 71, 72]) / 24, 1.0])  # fmt: skip
    chord = notes((0, 1, 48), (0, 1, 55), (0, 1, 64), (0, 1, 72))
    assert music_stats.descriptors(chord)[87] == 0.25
    # The statistics cannot tell a piece from itself two octaves up; the register can.
    up = scale.copy()
    up["pitch"] += 24
    for fn in music_stats.STATISTICS.values():
        np.testing.assert_allclose(fn(up), fn(scale))
    assert not np.allclose(music_stats.descriptors(up)[37:59], d[37:59])
    assert not music_stats.descriptors(EMPTY).any()


def test_drums_are_in_no_pitch_statistic_or_key_and_in_the_instrumentation():
    kit = midi_io.make_notes(np.arange(8) * 0.5, np.arange(8) * 0.5 + 0.1, [36, 38, 42, 46] * 2, 100,
                             is_drum=True)  # fmt: skip
    band = np.concatenate([PIECE, kit])
    pitched = music_stats.statistics([PIECE])
    with_drums = music_stats.statistics([band], instrumentation=True)
    for name in music_stats.STATISTICS:
        np.testing.assert_array_equal(with_drums[name], pitched[name], err_msg=name)
    assert music_stats.estimate_key(band) == music_stats.estimate_key(PIECE)
    np.testing.assert_array_equal(music_stats.descriptors(band), music_stats.descriptors(PIECE))
    share = with_drums["instrument_share"][0]
    assert share[16] == pytest.approx(8 / 13) and share[0] == pytest.approx(5 / 13)  # drums; piano (0)
    assert with_drums["instruments_used"][0, 0] == 2
    assert with_drums["drum_density"][0, 0] == pytest.approx(8 / 4.0)  # 8 hits over the piece's 4 s
    assert "instrument_share" not in pitched  # only when asked (a codec with instruments)
