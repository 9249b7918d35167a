"""CLI: new MIDI from a trained workdir.

  python -m jaxmusic.sample --workdir runs/default --out_dir samples \\
      [--num_outputs 4] [--num_notes 256 | --seconds 30] [--temperature 1.0] \\
      [--top_k 0] [--top_p 1.0] [--greedy] [--seed 0] [--genre classical] \\
      [--primer_midi song.mid | --primer_split validation] [--wav] [--png]

Loads the latest checkpoint with its config and codec (nothing else is needed,
except the dataset for --primer_split), writes O/sample_000.mid ... and
O/samples.json (per file: seed, settings, primer, genre, notes, seconds). The same
seed and settings give the same files byte for byte.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmusic import checkpoint as checkpoint_lib
from jaxmusic import codec as codec_lib
from jaxmusic import midi_io, models, sampler


class SampleError(Exception):
    """Bad input to sampling: names the flag or file and why."""


def load_workdir(workdir: str | os.PathLike) -> tuple[ml_collections.ConfigDict, codec_lib.Codec, Any, int]:
    """(config, codec, params, step) of the latest readable checkpoint in workdir."""
    ckpt = checkpoint_lib.Checkpointer(workdir, read_only=True)
    restored = ckpt.restore(None)
    if restored is None:
        raise SampleError(f"--workdir {workdir}: no checkpoint in it (train first: python -m jaxmusic.train)")
    config = ml_collections.ConfigDict(restored.config)
    codec = codec_lib.from_dict(restored.codec, source=f"{workdir} checkpoint {restored.step}")
    return config, codec, restored.state["params"], restored.step


def ensure_writable(flag: str, folder: str | os.PathLike) -> Path:
    """Creates `folder` if needed and checks a file can be written there (before long work)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SampleError(f"{flag} {folder}: cannot write there ({e.strerror or e})") from None
    return folder


def sampling_settings(temperature: float, top_k: int, top_p: float, greedy: bool) -> dict:
    """The sampler's settings, checked: {temperature, top_k, top_p, greedy}."""
    if not temperature > 0:
        raise SampleError(f"--temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise SampleError(f"--top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise SampleError(f"--top_k must be >= 0, got {top_k}")
    return {"temperature": temperature, "top_k": top_k, "top_p": top_p, "greedy": greedy}


def _settings(args: argparse.Namespace) -> dict:
    if args.num_outputs < 1:
        raise SampleError(f"--num_outputs must be >= 1, got {args.num_outputs}")
    if args.num_notes is not None and args.num_notes < 1:
        raise SampleError(f"--num_notes must be >= 1, got {args.num_notes}")
    if args.seconds is not None and not args.seconds > 0:
        raise SampleError(f"--seconds must be > 0, got {args.seconds}")
    return sampling_settings(args.temperature, args.top_k, args.top_p, args.greedy)


def _primers(args, config, codec: codec_lib.Codec) -> list[dict]:
    """One primer per output: {ids, genre index or None, description}."""
    if args.primer_midi is not None:
        try:
            notes = midi_io.read(args.primer_midi).notes
        except midi_io.MidiError as e:
            raise SampleError(f"--primer_midi {e}") from None
        unknown = int(codec.unknown_mask(notes).sum())
        ids = codec.encode(notes)  # unseen tuples become their nearest pseudo-note
        desc = {"kind": "midi", "path": str(args.primer_midi), "notes": len(ids),
                "notes_mapped_to_nearest": unknown}  # fmt: skip
        return [{"ids": ids, "genre": None, "primer": desc}] * args.num_outputs
    if args.primer_split is not None:
        from jaxmusic import input_pipeline

        try:
            input_pipeline.load_codec(config.data_dir, expected_fingerprint=codec.fingerprint)
            pieces = input_pipeline.load_pieces(config.data_dir, args.primer_split)
        except (input_pipeline.DataError, codec_lib.CodecError) as e:
            raise SampleError(f"--primer_split: {e}") from None
        rng = np.random.default_rng(args.seed)
        chosen = rng.choice(len(pieces), size=args.num_outputs, replace=len(pieces) < args.num_outputs)
        out = []
        for i in chosen:
            ids = pieces.sequences[i][1 : 1 + config.encoder_len]  # the piece's opening notes
            ids = ids[ids != codec_lib.EOS]
            desc = {"kind": "split", "split": args.primer_split, "piece": int(i), "notes": len(ids)}
            out.append({"ids": ids, "genre": int(pieces.genres[i]), "primer": desc})
        return out
    return [{"ids": [], "genre": None, "primer": {"kind": "none"}}] * args.num_outputs


def _genre(args, codec: codec_lib.Codec, primer_genre: int | None) -> int:
    if args.genre is not None:
        if args.genre not in codec.genres:
            raise SampleError(
                f"--genre {args.genre!r} is unknown; this model knows: {', '.join(codec.genres)}"
            )
        return codec.genres.index(args.genre)
    return primer_genre if primer_genre is not None else 0


def generate(args: argparse.Namespace) -> list[dict]:
    """Writes the samples and samples.json; returns the per-file records."""
    settings = _settings(args)
    out_dir = ensure_writable("--out_dir", args.out_dir)
    config, codec, params, step = load_workdir(args.workdir)
    model = models.from_config(config, codec.vocab_size, len(codec.genres))
    primers = _primers(args, config, codec)
    genres = [_genre(args, codec, p["genre"]) for p in primers]
    te, td = config.encoder_len, config.decoder_len
    window = jnp.asarray([sampler.primer_window(p["ids"], te) for p in primers], jnp.int32)
    genre = jnp.asarray(genres, jnp.int32)

    num_notes = args.num_notes if args.num_notes is not None else (None if args.seconds else 256)
    chunk_notes = num_notes or 256  # --seconds: write 256 notes at a time until long enough
    sample = sampler.make_sampler(
        *sampler.model_functions(model),
        vocab_size=codec.vocab_size,
        first_note_id=codec.first_note_id,
        phrase_len=td,
        num_phrases=math.ceil(chunk_notes / td),
    )
    key = jax.random.key(args.seed)
    written = np.zeros((len(primers), 0), np.int32)
    for call in range(64 if args.seconds else 1):  # --seconds: at most 64 chunks
        tokens = sample(params, window, genre, jax.random.fold_in(key, call), settings["temperature"],
                        settings["top_k"], settings["top_p"], settings["greedy"])  # fmt: skip
        tokens = np.asarray(tokens)[:, :chunk_notes]
        written = np.concatenate([written, tokens], axis=1)
        window = jnp.asarray(np.concatenate([np.asarray(window), tokens], axis=1)[:, -te:])
        if not args.seconds or all(_ended(codec, row, args.seconds) for row in written):
            break

    records = []
    for i, row in enumerate(written):
        notes = codec.decode(row)
        if args.seconds:
            notes = notes[notes["start"] < args.seconds]
            notes["end"] = np.minimum(notes["end"], args.seconds)
        path = out_dir / f"sample_{i:03d}.mid"
        midi_io.write(notes, path)
        records.append({
            "file": path.name,
            "seed": args.seed,
            "index": i,
            "settings": settings,
            "primer": primers[i]["primer"],
            "genre": codec.genres[genres[i]] if codec.genres else None,
            "notes": int(notes.shape[0]),
            "seconds": round(float(notes["end"].max()) if notes.shape[0] else 0.0, 3),
            "ended_with_eos": bool((row == codec_lib.EOS).any()),
            "checkpoint_step": step,
            "codec_fingerprint": codec.fingerprint,
        })  # fmt: skip
    if args.wav or args.png:
        from jaxmusic import render

        for r in records:
            midi = out_dir / r["file"]
            if args.png:
                r["png"] = render.piano_roll(midi, midi.with_suffix(".png")).name
            if args.wav:
                r["wav"] = render.to_wav(midi, midi.with_suffix(".wav")).name
    tmp = out_dir / ".samples.json.tmp"
    tmp.write_text(json.dumps(records, indent=1))
    os.replace(tmp, out_dir / "samples.json")
    return records


def _ended(codec: codec_lib.Codec, row: np.ndarray, seconds: float) -> bool:
    """A row is long enough once it ended (EOS) or its notes reach `seconds`."""
    if (row == codec_lib.EOS).any():
        return True
    notes = codec.decode(row)
    return bool(notes.shape[0]) and float(notes["start"].max()) >= seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxmusic.sample", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a training workdir (its latest checkpoint)")
    parser.add_argument("--out_dir", required=True, help="where sample_NNN.mid and samples.json go")
    parser.add_argument("--num_outputs", type=int, default=4, help="samples, generated as one batch")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--num_notes", type=int, default=None, help="notes per sample (default 256)")
    length.add_argument("--seconds", type=float, default=None, help="length per sample in seconds")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0, help="0: no top-k filtering")
    parser.add_argument("--top_p", type=float, default=1.0, help="nucleus mass in (0, 1]; 1: none")
    parser.add_argument("--greedy", action="store_true", help="always the most probable note (the seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--genre", default=None, help="a genre of the model's codec")
    primer = parser.add_mutually_exclusive_group()
    primer.add_argument("--primer_midi", type=Path, help="continue this MIDI file")
    primer.add_argument("--primer_split", help="open with pieces of this dataset split")
    parser.add_argument("--wav", action="store_true", help="also render each sample to WAV")
    parser.add_argument("--png", action="store_true", help="also draw each sample's piano roll")
    args = parser.parse_args(argv)
    from absl import logging

    logging.set_verbosity(logging.ERROR)  # orbax warns about every read-only open
    try:
        records = generate(args)
    except (SampleError, checkpoint_lib.CheckpointError, codec_lib.CodecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in records:
        extra = "".join(f", {r[k]}" for k in ("png", "wav") if k in r)
        print(
            f"{Path(args.out_dir) / r['file']}: {r['notes']} notes, {r['seconds']} s, "
            f"genre {r['genre']}{extra}"
        )
    print(f"described in {Path(args.out_dir) / 'samples.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
