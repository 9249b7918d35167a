"""CLI: new MIDI from a trained workdir.

  python -m jaxmusic.sample --workdir runs/default --out_dir samples \\
      [--num_outputs 4] [--num_notes 256 | --seconds 30] [--temperature 0.9] \\
      [--top_k 0] [--top_p 0.9] [--nountempered_rhythm] [--greedy] [--carry_state] [--fixed_length] \\
      [--seed 0] [--genre classical] [--primer_midi song.mid | --primer_split validation] [--wav] [--png] \\
      [--dtype bfloat16]

Loads the latest checkpoint with its config and codec (nothing else is needed,
except the dataset for --primer_split), writes O/sample_000.mid ... and
O/samples.json (per file: seed, settings, dtype, primer, genre, notes, seconds). The same
seed and settings give the same files byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from jaxmusic import checkpoint as checkpoint_lib
from jaxmusic import cli, host_memory, midi_io, sampler
from jaxmusic import codec as codec_lib

DEFAULT_NUM_NOTES = 256
# --seconds: notes are written this many at a time until every sample is long enough
# (or ended), at most MAX_SECONDS_CALLS times.
SECONDS_CHUNK_NOTES = 256
MAX_SECONDS_CALLS = 64


def _check(f) -> sampler.Settings:
    if f.num_outputs < 1:
        raise cli.UsageError(f"--num_outputs must be >= 1, got {f.num_outputs}")
    if f.num_notes is not None and f.num_notes < 1:
        raise cli.UsageError(f"--num_notes must be >= 1, got {f.num_notes}")
    if f.seconds is not None and not f.seconds > 0:
        raise cli.UsageError(f"--seconds must be > 0, got {f.seconds}")
    return sampler.Settings(temperature=f.temperature, top_k=f.top_k, top_p=f.top_p, greedy=f.greedy,
                            carry_state=f.carry_state, fixed_length=f.fixed_length,
                            min_notes=f.min_notes, untempered_rhythm=f.untempered_rhythm)  # fmt: skip


def _primers(f, config, codec: codec_lib.Codec) -> list[dict]:
    """One primer per output: {ids, genre index or None, description}."""
    if f.primer_midi is not None:
        try:
            notes = midi_io.read(f.primer_midi).notes
        except midi_io.MidiError as e:
            raise cli.UsageError(f"--primer_midi {e}") from None
        unknown = int(codec.unknown_mask(notes).sum())
        ids = codec.encode(notes)  # unseen tuples become their nearest pseudo-note
        desc = {"kind": "midi", "path": str(Path(f.primer_midi)), "notes": len(ids),
                "notes_mapped_to_nearest": unknown}  # fmt: skip
        return [{"ids": ids, "genre": None, "primer": desc}] * f.num_outputs
    if f.primer_split is not None:
        from jaxmusic import input_pipeline

        try:
            input_pipeline.load_codec(config.data_dir, expected_fingerprint=codec.fingerprint)
            pieces = input_pipeline.load_pieces(config.data_dir, f.primer_split)
        except (input_pipeline.DataError, codec_lib.CodecError) as e:
            raise cli.UsageError(f"--primer_split: {e}") from None
        rng = np.random.default_rng(f.seed)
        chosen = rng.choice(len(pieces), size=f.num_outputs, replace=len(pieces) < f.num_outputs)
        out = []
        for i in chosen:
            ids = pieces.sequences[i][1 : 1 + config.encoder_len]  # the piece's opening notes
            ids = ids[ids != codec_lib.EOS]
            desc = {"kind": "split", "split": f.primer_split, "piece": int(i), "notes": len(ids)}
            out.append({"ids": ids, "genre": int(pieces.genres[i]), "primer": desc})
        return out
    return [{"ids": [], "genre": None, "primer": {"kind": "none"}}] * f.num_outputs


def _genre(f, codec: codec_lib.Codec, primer_genre: int | None) -> int:
    if f.genre is not None:
        if f.genre not in codec.genres:
            raise cli.UsageError(
                f"--genre {f.genre!r} is unknown; this model knows: {', '.join(codec.genres)}"
            )
        return codec.genres.index(f.genre)
    return primer_genre if primer_genre is not None else 0


def generate(f) -> list[dict]:
    """Writes the samples and samples.json for parsed flags; returns the per-file records."""
    settings = _check(f)
    out_dir = cli.ensure_writable("--out_dir", f.out_dir)
    loaded = checkpoint_lib.load_for_inference(f.workdir, f.dtype)
    config, codec = loaded.config, loaded.codec
    primers = _primers(f, config, codec)
    genres = [_genre(f, codec, p["genre"]) for p in primers]
    num_notes = f.num_notes or (SECONDS_CHUNK_NOTES if f.seconds else DEFAULT_NUM_NOTES)
    written = sampler.generate(
        loaded.sampler(num_notes), loaded.params, [p["ids"] for p in primers], genres,
        encoder_len=config.encoder_len, num_notes=num_notes, settings=settings, key=jax.random.key(f.seed),
        max_calls=MAX_SECONDS_CALLS if f.seconds else 1,
        done=(lambda rows: all(_ended(codec, row, f.seconds) for row in rows)) if f.seconds else None,
        piece_key_weights=loaded.piece_key_weights,
        common_key=loaded.common_key_tables,
    )  # fmt: skip

    records = []
    for i, row in enumerate(written):
        notes = codec.decode(row)
        if f.seconds:
            notes = notes[notes["start"] < f.seconds]
            notes["end"] = np.minimum(notes["end"], f.seconds)
        path = out_dir / f"sample_{i:03d}.mid"
        midi_io.write(notes, path)
        records.append({
            "file": path.name,
            "seed": f.seed,
            "index": i,
            "settings": settings.to_dict(),
            "primer": primers[i]["primer"],
            "genre": codec.genres[genres[i]] if codec.genres else None,
            "notes": int(notes.shape[0]),
            "seconds": round(float(notes["end"].max()) if notes.shape[0] else 0.0, 3),
            "ended_with_eos": bool((row == codec_lib.EOS).any()),
            "checkpoint_step": loaded.step,
            "dtype": config.model.dtype,  # the products' input type
            "codec_fingerprint": codec.fingerprint,
        })  # fmt: skip
    if f.wav or f.png:
        from jaxmusic import render

        for r in records:
            midi = out_dir / r["file"]
            if f.png:
                r["png"] = render.piano_roll(midi, midi.with_suffix(".png")).name
            if f.wav:
                r["wav"] = render.to_wav(midi, midi.with_suffix(".wav")).name
    cli.atomic_write(out_dir / "samples.json", json.dumps(records, indent=1))
    return records


def _ended(codec: codec_lib.Codec, row: np.ndarray, seconds: float) -> bool:
    """A row is long enough once it ended (EOS) or its notes reach `seconds`."""
    if (row == codec_lib.EOS).any():
        return True
    notes = codec.decode(row)
    return bool(notes.shape[0]) and float(notes["start"].max()) >= seconds


def define_sampling_flags(fv) -> None:
    """--temperature, --top_k, --top_p, --carry_state, --min_notes, --untempered_rhythm
    (`sampler.Settings`) and --dtype (`checkpoint.load_for_inference`); shared with
    jaxmusic.evaluate."""
    from absl import flags

    # The defaults: the best worst-statistic overlap over music21 and POP909 of a
    # --sweep (docs/evaluation.md); 1.0 and 1.0 draw from the model's own distribution.
    flags.DEFINE_float("temperature", 0.9, "divides the logits (> 0)", flag_values=fv)
    flags.DEFINE_integer("top_k", 0, "draw among the k most probable notes; 0: all", flag_values=fv)
    flags.DEFINE_float("top_p", 0.9, "nucleus mass in (0, 1]; 1: none", flag_values=fv)
    flags.DEFINE_bool("carry_state", False, "the decoder goes on from phrase to phrase (no re-encoding)",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_integer("min_notes", 1, "EOS is not drawn before this many notes", flag_values=fv)
    # On: the best worst-statistic overlap over the two collections of a --sweep (POP909's
    # chords no longer crowded by the truncation; music21 the same within noise).
    flags.DEFINE_bool("untempered_rhythm", True, "each note's onset gap (or EOS) from the model's own "
                      "distribution; temperature, top_k, top_p choose among the notes of that gap "
                      "(--nountempered_rhythm: every id at once)", flag_values=fv)  # fmt: skip
    flags.DEFINE_string("dtype", None, "the input type of the model's products: float32 or bfloat16 "
                        "(default: the checkpoint's config.model.dtype)", flag_values=fv)  # fmt: skip


def _define_flags(fv, argv: list[str]) -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "a training workdir (its latest checkpoint)", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "where sample_NNN.mid and samples.json go", flag_values=fv)
    flags.DEFINE_integer("num_outputs", 4, "samples, generated as one batch", flag_values=fv)
    flags.DEFINE_integer("num_notes", None, f"notes per sample (default {DEFAULT_NUM_NOTES})", flag_values=fv)
    flags.DEFINE_float("seconds", None, "length per sample in seconds", flag_values=fv)
    define_sampling_flags(fv)
    flags.DEFINE_bool("greedy", False, "always the most probable note (the seed)", flag_values=fv)
    flags.DEFINE_bool("fixed_length", False, "never end early: EOS is never drawn", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "primer choice and sampling", flag_values=fv)
    flags.DEFINE_string("genre", None, "a genre of the model's codec", flag_values=fv)
    flags.DEFINE_string("primer_midi", None, "continue this MIDI file", flag_values=fv)
    flags.DEFINE_string("primer_split", None, "open with pieces of this dataset split", flag_values=fv)
    flags.DEFINE_bool("wav", False, "also render each sample to WAV", flag_values=fv)
    flags.DEFINE_bool("png", False, "also draw each sample's piano roll", flag_values=fv)
    flags.mark_flags_as_required(["workdir", "out_dir"], flag_values=fv)
    flags.mark_flags_as_mutual_exclusive(["num_notes", "seconds"], flag_values=fv)
    flags.mark_flags_as_mutual_exclusive(["primer_midi", "primer_split"], flag_values=fv)


@cli.entry_point
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()
    f, _ = cli.parse_flags(
        argv, _define_flags, prog="python -m jaxmusic.sample", doc=__doc__, log_level="error"
    )
    records = generate(f)
    for r in records:
        rendered = "".join(f", {r[k]}" for k in ("png", "wav") if k in r)
        path = Path(f.out_dir) / r["file"]
        print(f"{path}: {r['notes']} notes, {r['seconds']} s, genre {r['genre']}{rendered}")
    print(f"described in {Path(f.out_dir) / 'samples.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
