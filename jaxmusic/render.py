"""MIDI -> WAV (a General MIDI soundfont synthesizer) and piano-roll PNG.

WAV: tinysoundfont renders offline with the small GM soundfont that pretty_midi's
wheel ships (TimGM6mb.sf2), so nothing but PyPI packages is needed. PNG: one bar
per note, pitch against time, with matplotlib.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np

from jaxmusic import midi_io
from jaxmusic.fileio import atomic_path

SAMPLE_RATE = 44_100
TAIL_SECONDS = 1.0  # let the last notes ring out


def soundfont_path() -> Path:
    """The GM soundfont inside pretty_midi's package."""
    import pretty_midi

    return Path(pretty_midi.__file__).with_name("TimGM6mb.sf2")


def to_wav(midi_path: str | os.PathLike, wav_path: str | os.PathLike) -> Path:
    """Renders a MIDI file to 16-bit stereo WAV at 44.1 kHz; returns the WAV path."""
    import tinysoundfont

    notes = midi_io.read(midi_path, include_drums=True).notes
    synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
    sfid = synth.sfload(str(soundfont_path()))
    programs = sorted({int(p) for p, d in zip(notes["program"], notes["is_drum"], strict=True) if not d})
    channels = {p: c for p, c in zip(programs, [c for c in range(16) if c != 9], strict=False)}
    for program, channel in channels.items():
        synth.program_select(channel, sfid, 0, program)
    synth.program_select(9, sfid, 128, 0, True)
    channel_of = [
        9 if d else channels.get(int(p), 0) for p, d in zip(notes["program"], notes["is_drum"], strict=True)
    ]
    # Events: (time, 0 = off before 1 = on at equal times, channel, pitch, velocity)
    pairs = list(zip(notes, channel_of, strict=True))
    events = sorted(
        [(float(n["end"]), 0, c, int(n["pitch"]), 0) for n, c in pairs]
        + [(float(n["start"]), 1, c, int(n["pitch"]), int(n["velocity"])) for n, c in pairs]
    )
    chunks, done = [], 0
    for time, on, channel, pitch, velocity in events:
        target = round(time * SAMPLE_RATE)
        if target > done:
            chunks.append(np.frombuffer(synth.generate(target - done), np.float32).copy())
            done = target
        if on:
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    chunks.append(np.frombuffer(synth.generate(int(TAIL_SECONDS * SAMPLE_RATE)), np.float32).copy())
    audio = np.concatenate(chunks)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with atomic_path(wav_path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return Path(wav_path)


def piano_roll(midi_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """Draws the notes of a MIDI file as a piano roll (pitch against time); returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notes = midi_io.read(midi_path, include_drums=True).notes
    fig, ax = plt.subplots(figsize=(12, 4), dpi=100)
    for pitch in np.unique(notes["pitch"]):
        sel = notes[notes["pitch"] == pitch]
        bars = list(zip(sel["start"], sel["end"] - sel["start"], strict=True))
        ax.broken_barh(bars, (pitch - 0.4, 0.8), facecolors="tab:blue", alpha=0.8)
    ax.set_xlim(0, float(notes["end"].max()) + 0.5)
    ax.set_ylim(int(notes["pitch"].min()) - 2, int(notes["pitch"].max()) + 2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch (MIDI note number)")
    ax.set_title(Path(midi_path).name)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return Path(png_path)
