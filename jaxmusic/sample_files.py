"""New music as files: primers (a MIDI file, a dataset split, or none), continuations
written as MIDI (and WAV and a piano roll), and samples.json describing each file.

  primers = sample_files.primers_from_split(generator, "validation", count=4, seed=0)
  records = sample_files.write(generator, primers, sample_files.Request(...), out_dir)

The same seed and settings give the same files byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from jaxmusic import codec as codec_lib
from jaxmusic import fileio, inference, midi_io, sampler
from jaxmusic.errors import UsageError

DEFAULT_NUM_NOTES = 256
# By length in seconds: notes are written this many at a time until every sample is
# long enough (or ended), at most MAX_SECONDS_CALLS times.
SECONDS_CHUNK_NOTES = 256
MAX_SECONDS_CALLS = 64


@dataclasses.dataclass(frozen=True)
class Primer:
    """What a sample continues: ids int32[n] (may be empty), its genre index (None: the
    request's or the first), and how samples.json describes it."""

    ids: np.ndarray
    genre: int | None
    description: dict


@dataclasses.dataclass(frozen=True)
class Request:
    """How the samples are made: notes each (num_notes) or a length in seconds, the genre
    by name (None: the primer's, else the codec's first), the instruments that play by
    name (None: as the settings say), sampling settings and seed, and whether to render
    WAV and PNG beside each MIDI file."""

    settings: sampler.Settings
    num_notes: int | None = None
    seconds: float | None = None
    genre: str | None = None
    instruments: tuple[str, ...] | None = None
    seed: int = 0
    wav: bool = False
    png: bool = False


def primers_from_midi(path: str | os.PathLike, codec: codec_lib.Codec, count: int) -> list[Primer]:
    """`count` copies of a MIDI file's notes as a primer; tuples the codec has never seen
    become their nearest pseudo-note (an instrument it has never seen: the nearest
    family's), and the description says how many.

    Raises:
      midi_io.MidiError: the file cannot be read.
    """
    notes = midi_io.read(path, include_drums=codec.has_drums).notes
    ids = codec.encode(notes)
    seen = codec_lib.played_instruments(codec)
    desc = {"kind": "midi", "path": str(Path(path)), "notes": len(ids),
            "notes_mapped_to_nearest": int(codec.unknown_mask(notes).sum()),
            "notes_of_instruments_not_in_the_codec": int((~seen[codec.instruments.of(notes)]).sum()),
            }  # fmt: skip
    return [Primer(ids, None, desc)] * count


def primers_from_split(generator: inference.Generator, split: str, count: int, seed: int) -> list[Primer]:
    """The openings (encoder_len notes) of `count` pieces of a split of the model's
    dataset, drawn with `seed`, each with its genre.

    Raises:
      input_pipeline.DataError, codec.CodecError: the dataset cannot give them.
    """
    from jaxmusic import input_pipeline

    data_dir = generator.config.data_dir
    input_pipeline.load_codec(data_dir, expected_fingerprint=generator.codec.fingerprint)
    pieces = input_pipeline.load_pieces(data_dir, split)
    chosen = np.random.default_rng(seed).choice(len(pieces), size=count, replace=len(pieces) < count)
    out = []
    for i in chosen:
        ids = pieces.sequences[i][1 : 1 + generator.config.encoder_len]  # the piece's opening notes
        ids = ids[ids != codec_lib.EOS]
        desc = {"kind": "split", "split": split, "piece": int(i), "notes": len(ids)}
        out.append(Primer(ids, int(pieces.genres[i]), desc))
    return out


def no_primers(count: int) -> list[Primer]:
    """`count` empty primers: samples from nothing but BOS."""
    return [Primer(np.zeros(0, np.int32), None, {"kind": "none"})] * count


def write(generator: inference.Generator, primers: list[Primer], request: Request,
          out_dir: str | os.PathLike) -> list[dict]:  # fmt: skip
    """Writes out_dir/sample_NNN.mid (and .wav, .png) for each primer and samples.json;
    returns samples.json's records.

    Raises:
      UsageError: a genre the codec does not know, instruments it does not have.
    """
    codec = generator.codec
    genres = [_genre(codec, request.genre, p.genre) for p in primers]
    line_ups = None
    if request.instruments is not None:
        try:
            line_up = codec.instruments.line_up(request.instruments)
        except codec_lib.CodecError as e:
            raise UsageError(f"--instruments: {e}") from None
        played, names = codec_lib.played_instruments(codec), codec.instruments.names()
        unplayed = [n for n in request.instruments if not played[names.index(n)]]
        if unplayed:
            raise UsageError(f"--instruments {', '.join(unplayed)}: no note of the training data was theirs")
        line_ups = np.stack([line_up] * len(primers))
    num_notes = request.num_notes or (SECONDS_CHUNK_NOTES if request.seconds else DEFAULT_NUM_NOTES)
    seconds = request.seconds
    written = generator.generate(
        [p.ids for p in primers], genres, num_notes=num_notes, settings=request.settings, seed=request.seed,
        max_calls=MAX_SECONDS_CALLS if seconds else 1, line_ups=line_ups,
        done=(lambda rows: all(_ended(codec, row, seconds) for row in rows)) if seconds else None,
    )  # fmt: skip
    with fileio.staged_folder(out_dir) as local:  # a bucket gets each file whole, samples.json last
        return _write_files(generator, primers, request, genres, written, local)


def _write_files(generator, primers, request, genres, written, out_dir: Path) -> list[dict]:
    """`write`'s files, into a local folder."""
    codec, seconds = generator.codec, request.seconds
    records = []
    for i, row in enumerate(written):
        notes = codec.decode(row)
        if seconds:
            notes = notes[notes["start"] < seconds]
            notes["end"] = np.minimum(notes["end"], seconds)
        path = out_dir / f"sample_{i:03d}.mid"
        midi_io.write(notes, path)
        records.append(_record(generator, request, i, path.name, primers[i], genres[i], notes, row))
    if request.wav or request.png:
        from jaxmusic import render

        for r in records:
            midi = out_dir / r["file"]
            if request.png:
                r["png"] = render.piano_roll(midi, midi.with_suffix(".png")).name
            if request.wav:
                r["wav"] = render.to_wav(midi, midi.with_suffix(".wav")).name
    fileio.atomic_write(out_dir / "samples.json", json.dumps(records, indent=1))
    return records


def _record(
    generator, request: Request, index: int, name: str, primer: Primer, genre: int, notes, row
) -> dict:
    """One file's entry of samples.json."""
    codec = generator.codec
    return {
        "file": name,
        "seed": request.seed,
        "index": index,
        "settings": request.settings.to_dict(),
        **({"line_up": list(request.instruments)} if request.instruments is not None else {}),
        "primer": primer.description,
        "genre": codec.genres[genre] if codec.genres else None,
        "notes": int(notes.shape[0]),
        "seconds": round(float(notes["end"].max()) if notes.shape[0] else 0.0, 3),
        "ended_with_eos": bool((row == codec_lib.EOS).any()),
        "checkpoint_step": generator.step,
        "checkpoint": generator.checkpoint,
        "dtype": generator.config.model.dtype,  # the products' input type
        "codec_fingerprint": codec.fingerprint,
        **({"instruments": _instruments(notes)} if codec.instruments.has_drums else {}),
    }


def _instruments(notes: np.ndarray) -> dict[str, int]:
    """Notes per instrument (General MIDI family, or drums) of a sample, most played first."""
    names, counts = np.unique(midi_io.instrument_index(notes), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {midi_io.INSTRUMENT_NAMES[names[i]]: int(counts[i]) for i in order}


def _genre(codec: codec_lib.Codec, name: str | None, primer_genre: int | None) -> int:
    if name is not None:
        if name not in codec.genres:
            raise UsageError(f"genre {name!r} is unknown; this model knows: {', '.join(codec.genres)}")
        return codec.genres.index(name)
    return primer_genre if primer_genre is not None else 0


def _ended(codec: codec_lib.Codec, row: np.ndarray, seconds: float) -> bool:
    """A row is long enough once it ended (EOS) or its notes reach `seconds`."""
    if (row == codec_lib.EOS).any():
        return True
    notes = codec.decode(row)
    return bool(notes.shape[0]) and float(notes["start"].max()) >= seconds
