"""evaluation.form: repetition, returns and loops on notes with a known answer."""

import numpy as np
import pytest

from jaxmusic import codec_fit, midi_io
from jaxmusic.evaluation import form


def test_one_phrase_played_twice_repeats_all_its_second_half():
    phrase = np.arange(10, 42)  # 32 distinct notes
    twice = np.concatenate([phrase, phrase])
    for n in form.ORDERS:
        # The second playing's n-grams all occurred in the first; the ones across the seam did not.
        grams = twice.shape[0] - n + 1
        assert form.repetition(twice, n) == pytest.approx((32 - n + 1) / grams)
    lags = form.lag_histogram(twice, 8)
    assert lags[list(form.LAG_EDGES).index(32)] == 1.0  # every repeat comes back 32 notes later
    assert form.loop_share(twice) == 0.0  # a phrase of 32 played twice is form, not a loop


def test_a_piece_with_no_repeat_repeats_nothing():
    x = np.random.default_rng(0).permutation(500)
    assert all(form.repetition(x, n) == 0.0 for n in form.ORDERS)
    assert not form.lag_histogram(x).any() and form.loop_share(x) == 0.0
    assert form.repetition(x[:3], 4) == 0.0  # shorter than the n-gram: nothing to repeat


def test_a_loop_is_told_from_form():
    riff = np.array([5, 7, 9])
    loop = np.concatenate([np.arange(100, 120), np.tile(riff, 10), np.arange(200, 210)])
    assert form.loop_share(loop) == pytest.approx(30 / 60)  # the riff's 30 notes of 60
    assert form.loop_share(np.tile(riff, 3)) == 0.0  # three times is not yet a loop
    assert form.loop_share(np.full(12, 4)) == 1.0  # one note over and over
    lags = form.lag_histogram(loop, 8)
    assert lags[list(form.LAG_EDGES).index(2)] == 1.0  # a 3-note riff returns 3 notes later


def test_the_intervals_view_hears_a_transposed_repeat():
    start = np.arange(32) * 0.5
    melody = np.array([60, 62, 64, 65, 67, 65, 64, 62] * 2)
    notes = midi_io.make_notes(start, start + 0.4, np.concatenate([melody, melody + 5]), np.full(32, 80))
    codec = codec_fit.fit([notes], min_count=1)
    views = form.views(codec, codec.encode(notes))
    assert form.repetition(views["ids"], 8) < form.repetition(views["intervals"], 8)
    # A fourth higher, the same steps: the transposed half repeats in intervals, not in ids.
    stats = form.statistics(codec, [codec.encode(notes)])
    assert stats["repetition_8_intervals"][0, 0] > stats["repetition_8_ids"][0, 0]
    assert stats["lag_histogram"].shape == (1, len(form.LAG_EDGES))
    assert set(stats) == set(form.STATISTICS)


def test_the_pitches_view_hears_a_repeat_played_louder():
    start = np.arange(32) * 0.5
    melody = np.array([60, 62, 64, 65, 67, 65, 64, 62] * 2)
    velocity = np.concatenate([np.full(16, 40), np.full(16, 110)])
    notes = midi_io.make_notes(start, start + 0.4, np.concatenate([melody, melody]), velocity)
    codec = codec_fit.fit([notes], min_count=1)
    views = form.views(codec, codec.encode(notes))
    # Louder the second time: a new note id each, the same pitches and onsets.
    assert form.repetition(views["ids"], 16) < form.repetition(views["pitches"], 16)
    assert form.repetition(views["pitches"], 16) == pytest.approx(form.repetition(views["intervals"], 16))
