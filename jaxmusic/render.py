"""Notes -> sound (a General MIDI soundfont synthesizer) and pictures (piano rolls).

Sound: tinysoundfont renders offline with the small GM soundfont that pretty_midi's
wheel ships (TimGM6mb.sf2), so nothing but PyPI packages is needed; `synthesize` gives
the samples, `to_wav` a WAV file, `compressed` Ogg/Opus bytes (soundfile) for pages and
TensorBoard. Pictures: one bar per note, pitch against time: `piano_roll` a PNG file
with axes (matplotlib); `roll_pixels` a plain raster, quick to make for pages and
TensorBoard, and `png` its PNG bytes.
"""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import numpy as np

from jaxmusic import midi_io
from jaxmusic.fileio import atomic_path

SAMPLE_RATE = 44_100
TAIL_SECONDS = 1.0  # let the last notes ring out
OPUS_RATE = 24_000  # a rate Opus takes; the synthesizer's GM sounds hold little above 12 kHz


def soundfont_path() -> Path:
    """The GM soundfont inside pretty_midi's package."""
    import pretty_midi

    return Path(pretty_midi.__file__).with_name("TimGM6mb.sf2")


def synthesize(notes: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32[frames, 2] in [-1, 1]: notes (midi_io.NOTE_DTYPE[n]) played by the GM
    soundfont, each on its program's channel (drums on channel 10), with a
    TAIL_SECONDS ring-out; a mix past full scale is scaled down whole, never clipped."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=sample_rate)
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
        target = round(time * sample_rate)
        if target > done:
            chunks.append(np.frombuffer(synth.generate(target - done), np.float32).copy())
            done = target
        if on:
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    chunks.append(np.frombuffer(synth.generate(int(TAIL_SECONDS * sample_rate)), np.float32).copy())
    audio = np.concatenate(chunks).reshape(-1, 2)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return audio / peak if peak > 1.0 else audio  # a loud band's mix: scaled to full scale, not clipped


def to_wav(midi_path: str | os.PathLike, wav_path: str | os.PathLike) -> Path:
    """Renders a MIDI file to 16-bit stereo WAV at 44.1 kHz; returns the WAV path."""
    audio = synthesize(midi_io.read(midi_path, include_drums=True).notes)
    pcm = (audio * 32767).astype("<i2")
    with atomic_path(wav_path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return Path(wav_path)


def compressed(notes: np.ndarray) -> bytes:
    """The notes as Ogg/Opus bytes, mono at OPUS_RATE (about 17 kbit/s: 2.2 KB a second)."""
    import soundfile

    mono = synthesize(notes, OPUS_RATE).mean(axis=1)
    out = io.BytesIO()
    soundfile.write(
        out, mono, OPUS_RATE, format="OGG", subtype="OPUS", compression_level=0.96
    )  # past 0.96 libsndfile's Opus is 3x slower
    return out.getvalue()


def piano_roll(midi_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """Draws the notes of a MIDI file as a piano roll (pitch against time); returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notes = midi_io.read(midi_path, include_drums=True).notes
    fig, ax = plt.subplots(figsize=(12, 4), dpi=100)
    instrument = midi_io.instrument_index(notes)
    for i in np.unique(instrument):
        colour = INSTRUMENT_COLOURS[i] / 255
        for pitch in np.unique(notes["pitch"][instrument == i]):
            sel = notes[(instrument == i) & (notes["pitch"] == pitch)]
            bars = list(zip(sel["start"], sel["end"] - sel["start"], strict=True))
            ax.broken_barh(bars, (pitch - 0.4, 0.8), facecolors=colour, alpha=0.85)
        ax.plot([], [], "s", color=colour, label=midi_io.INSTRUMENT_NAMES[i])
    if len(np.unique(instrument)) > 1:
        ax.legend(fontsize=7, loc="upper right", ncol=2)
    if notes.shape[0]:
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


def roll_pixels(notes: np.ndarray, *, px_per_second: float = 40.0, px_per_pitch: int = 4,
                max_width: int = 860) -> np.ndarray:  # fmt: skip
    """uint8[height, width, 3]: the notes as bars on white, pitch up, time right (at most
    max_width pixels: a long piece is squeezed), louder notes darker; a faint line at
    every C."""
    if not notes.shape[0]:
        return np.full((px_per_pitch * 12, 64, 3), 255, np.uint8)
    lo, hi = int(notes["pitch"].min()) - 1, int(notes["pitch"].max()) + 1
    scale = min(px_per_second, max_width / max(float(notes["end"].max()), 1e-3))
    width = int(np.ceil(float(notes["end"].max()) * scale)) + 2
    img = np.full(((hi - lo + 1) * px_per_pitch, width, 3), 255, np.uint8)
    for c in range(lo - lo % 12 + 12 if lo % 12 else lo, hi + 1, 12):  # the Cs
        img[(hi - c) * px_per_pitch + px_per_pitch - 1] = 225
    colours = INSTRUMENT_COLOURS[midi_io.instrument_index(notes)]
    for n, colour in zip(notes, colours, strict=True):
        top = (hi - int(n["pitch"])) * px_per_pitch
        a = int(float(n["start"]) * scale)
        b = max(int(float(n["end"]) * scale), a + 1)
        shade = 1.0 - 0.75 * int(n["velocity"]) / 127  # 0.25 (loud) .. 1
        img[top : top + px_per_pitch - 1, a:b] = (255 - (255 - colour) * (1.25 - shade)).astype(np.uint8)
    return img


def png(pixels: np.ndarray) -> bytes:
    """uint8[height, width, 3 or 4] pixels as PNG bytes."""
    import matplotlib.image

    out = io.BytesIO()
    matplotlib.image.imsave(out, pixels, format="png")
    return out.getvalue()


# A colour per General MIDI family and the drums (`midi_io.instrument_index`), as piano rolls
# draw them: matplotlib's tab20, the first colour (blue) the piano's, dark grey the drums'.
INSTRUMENT_COLOURS = np.array(
    [(31, 119, 180), (174, 199, 232), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
     (197, 176, 213), (140, 86, 75), (227, 119, 194), (247, 182, 210), (188, 189, 34), (219, 219, 141),
     (23, 190, 207), (158, 218, 229), (255, 187, 120), (152, 223, 138), (60, 60, 60)], np.float64,
)  # fmt: skip
