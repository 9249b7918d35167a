"""CLI: new MIDI from a trained workdir.

  python -m jaxmusic.sample --workdir runs/default --out_dir samples \\
      [--num_outputs 4] [--num_notes 256 | --seconds 30] [--temperature 0.9] \\
      [--top_k 0] [--top_p 0.9] [--nountempered_rhythm] [--greedy] [--carry_state] [--fixed_length] \\
      [--seed 0] [--genre classical] [--primer_midi song.mid | --primer_split validation] [--wav] [--png] \\
      [--instruments guitar,bass,drums] [--dtype bfloat16]

Loads the best checkpoint (the lowest validation NLL; --checkpoint latest for the
newest) with its config and codec (nothing else is needed,
except the dataset for --primer_split), writes O/sample_000.mid ... and
O/samples.json (per file: seed, settings, dtype, primer, genre, notes, seconds). With
--instruments only the band named plays (a codec with instruments; else, with the
config's `sampling.primer_instruments`, the primer's).
Sampling settings not given are the run's own (its config's `sampling`). The same
seed and settings give the same files byte for byte. The library is `jaxmusic.sample_files`.
"""

from __future__ import annotations

from jaxmusic import cli, codec, host_memory, midi_io, sample_files
from jaxmusic.errors import UsageError


def _define_flags(fv, argv: list[str]) -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "a training workdir (see --checkpoint)", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "where sample_NNN.mid and samples.json go", flag_values=fv)
    flags.DEFINE_integer("num_outputs", 4, "samples, generated as one batch", flag_values=fv)
    flags.DEFINE_integer("num_notes", None, f"notes per sample (default {sample_files.DEFAULT_NUM_NOTES})",
                         flag_values=fv)  # fmt: skip
    flags.DEFINE_float("seconds", None, "length per sample in seconds", flag_values=fv)
    cli.define_sampling_flags(fv)
    flags.DEFINE_bool("greedy", None, "always the most probable note (the seed)", flag_values=fv)
    flags.DEFINE_bool("fixed_length", None, "never end early: EOS is never drawn", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "primer choice and sampling", flag_values=fv)
    flags.DEFINE_string("genre", None, "a genre of the model's codec", flag_values=fv)
    flags.DEFINE_list("instruments", None, "the band, e.g. guitar,bass,drums: only these play (a codec "
                      "with instruments; General MIDI family names)", flag_values=fv)  # fmt: skip
    flags.DEFINE_string("primer_midi", None, "continue this MIDI file", flag_values=fv)
    flags.DEFINE_string("primer_split", None, "open with pieces of this dataset split", flag_values=fv)
    flags.DEFINE_bool("wav", False, "also render each sample to WAV", flag_values=fv)
    flags.DEFINE_bool("png", False, "also draw each sample's piano roll", flag_values=fv)
    flags.mark_flags_as_required(["workdir", "out_dir"], flag_values=fv)
    flags.mark_flags_as_mutual_exclusive(["num_notes", "seconds"], flag_values=fv)
    flags.mark_flags_as_mutual_exclusive(["primer_midi", "primer_split"], flag_values=fv)


def _primers(f, generator) -> list[sample_files.Primer]:
    if f.primer_midi is not None:
        try:
            return sample_files.primers_from_midi(f.primer_midi, generator.codec, f.num_outputs)
        except midi_io.MidiError as e:
            raise UsageError(f"--primer_midi {e}") from None
    if f.primer_split is not None:
        from jaxmusic import input_pipeline

        try:
            return sample_files.primers_from_split(generator, f.primer_split, f.num_outputs, f.seed)
        except (input_pipeline.DataError, codec.CodecError) as e:
            raise UsageError(f"--primer_split: {e}") from None
    return sample_files.no_primers(f.num_outputs)


@cli.entry_point
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()
    f, _ = cli.parse_flags(
        argv, _define_flags, prog="python -m jaxmusic.sample", doc=__doc__, log_level="error"
    )
    for flag, value in (("num_outputs", f.num_outputs), ("num_notes", f.num_notes)):
        if value is not None and value < 1:
            raise UsageError(f"--{flag} must be >= 1, got {value}")
    if f.seconds is not None and not f.seconds > 0:
        raise UsageError(f"--seconds must be > 0, got {f.seconds}")
    out_dir = cli.ensure_writable("--out_dir", f.out_dir)
    generator = cli.load_generator(f)
    more = {k: f[k].value for k in ("greedy", "fixed_length") if f[k].value is not None}
    request = sample_files.Request(
        settings=cli.sampling_settings(f, generator, **more), num_notes=f.num_notes, seconds=f.seconds,
        genre=f.genre, instruments=None if f.instruments is None else tuple(f.instruments), seed=f.seed,
        wav=f.wav, png=f.png,
    )  # fmt: skip
    if f.genre is not None and f.genre not in generator.codec.genres:
        raise UsageError(
            f"--genre {f.genre!r} is unknown; this model knows: {', '.join(generator.codec.genres)}"
        )
    records = sample_files.write(generator, _primers(f, generator), request, out_dir)
    for r in records:
        rendered = "".join(f", {r[k]}" for k in ("png", "wav") if k in r)
        print(f"{out_dir / r['file']}: {r['notes']} notes, {r['seconds']} s, genre {r['genre']}{rendered}")
    print(f"described in {out_dir / 'samples.json'} (checkpoint {generator.step}: {generator.checkpoint})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
