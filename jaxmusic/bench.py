"""CLI: how fast the real train step and the sampler run on this machine.

  python -m jaxmusic.bench --config configs/default.py [--steps 20] [--batch 32] \\
      [--vocab 2048] [--sampler_rounds 3] [--json bench.json] [--config.model.hidden=1024 ...]

Runs training's own train step (jit + shard_map over every device, state
donated) on synthetic batches of the config's shapes: a burn-in that includes
compilation, then timed steps, each ending in a device sync. Reports steps/s,
notes/s, the step time's median and spread, FLOPs per step from the model's shapes
(`train_flops`), achieved GFLOP/s, and MFU twice: against the device's published dense
peak for the compute dtype (`PEAK_TFLOPS`, by `device_kind`; a kind not in the table
says so) and against a large matrix product measured in the same run (8192^3 on an
accelerator, 2048^3 on a CPU, which has no published peak), times the device count.
Then the compiled step's memory per device (`memory_analysis`), the sampler's notes/s
at batch 1 and 64, and the floor under batch-1 sampling: the decoder's weight products
alone (`decode_floor`). The sampler with carried state is timed in `--sampler_rounds`
rounds alternated with the Python loop of decode_step and the floor, and reported as
medians of the rounds' ratios, each round's kept beside them (a shared machine's speed
swings by a third between minutes). Imports no TensorFlow. The library is
`jaxmusic.benchmarks`.
"""

from __future__ import annotations

import json

from jaxmusic import benchmarks, cli, fileio, host_memory
from jaxmusic import codec as codec_lib
from jaxmusic.errors import UsageError


def _spread(rounds: list[float] | None, fmt: str) -> str:
    """' [lowest..highest]' of a measurement's rounds (empty for fewer than two)."""
    return f" [{min(rounds):{fmt}}..{max(rounds):{fmt}}]" if rounds and len(rounds) > 1 else ""


def _table(r: dict) -> str:
    rows = [
        ("device", f"{r['device_count']} x {r['device_kind']} ({r['platform']})"),
        (
            "shapes",
            f"batch {r['batch_size']}, {r['encoder_len']}+{r['decoder_len']} notes, "
            f"{r['num_layers']} x {r['hidden']} LSTM, vocabulary {r['vocab_size']}, {r['dtype']}",
        ),
        ("steps/s", f"{r['steps_per_second']:.2f}"),
        ("notes/s (trained targets)", f"{r['notes_per_second']:.0f}"),
        (
            "step time median (min..max, IQR)",
            f"{r['step_seconds_median'] * 1e3:.1f} ms "
            f"({r['step_seconds_min'] * 1e3:.1f}..{r['step_seconds_max'] * 1e3:.1f}, "
            f"{r['step_seconds_iqr'] * 1e3:.1f})",
        ),
        ("FLOPs per step", f"{r['flops_per_step'] / 1e9:.2f} G"),
        ("achieved", f"{r['gflops_per_second']:.1f} GFLOP/s"),
        (f"peak, measured {r['peak_matmul_size']}^3 matmul", f"{r['peak_gflops_per_second']:.1f} GFLOP/s"),
        ("MFU against the measured peak", f"{r['mfu']:.1%}"),
        (
            "MFU against the published peak",
            f"{r['mfu_published']:.1%} of {r['published_peak_gflops_per_second'] / 1e3:.1f} TFLOP/s"
            if r["mfu_published"] is not None
            else f"unknown: no published {r['dtype']} peak for device kind {r['device_kind']!r} "
            "(benchmarks.PEAK_TFLOPS)",
        ),
    ]
    if r["memory_per_device_bytes"]:
        mem = r["memory_per_device_bytes"]
        rows.append((
            "memory per device (compiled step)",
            f"{mem['total'] / 2**20:.1f} MiB (arguments {mem['argument'] / 2**20:.1f}, "
            f"temporaries {mem['temp'] / 2**20:.1f})",
        ))  # fmt: skip
    for b in sorted({int(k.rsplit("batch", 1)[1]) for k in r if k.startswith("sampler_notes")}):
        rate, compile_s = r[f"sampler_notes_per_second_batch{b}"], r[f"sampler_compile_seconds_batch{b}"]
        loop = r[f"sampler_python_loop_notes_per_second_batch{b}"]
        rows.append((f"sampler, batch {b}: notes/s (compile)", f"{rate:.0f} ({compile_s:.1f} s)"))
        against = f"{r[f'sampler_carried_over_loop_batch{b}']:.2f}x the loop"
        against += _spread(r.get(f"sampler_carried_over_loop_rounds_batch{b}"), ".2f")
        if f"sampler_carried_over_floor_batch{b}" in r:
            floor = f"{r[f'sampler_carried_over_floor_batch{b}']:.0%} of the floor"
            floor += _spread(r.get(f"sampler_carried_over_floor_rounds_batch{b}"), ".0%")
            against = f"{floor}, {against}"
        carried = r[f"sampler_carried_notes_per_second_batch{b}"]
        label = f"sampler with carried state, batch {b}: notes/s"
        rows.append((label, f"{carried:.0f} ({against}; medians [rounds])"))
        rows.append((f"python loop of decode_step, batch {b}: notes/s", f"{loop:.0f}"))
    rows.append((
        "batch-1 floor: decoder weight products alone",
        f"{r['decode_floor_notes_per_second']:.0f} notes/s ({r['decode_weight_bytes_per_note'] / 1e6:.1f} MB "
        f"per note at {r['decode_floor_gb_per_second']:.0f} GB/s)",
    ))  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _define_flags(fv, argv: list[str]) -> None:
    from absl import flags

    cli.define_config(fv, argv, lock=False)
    flags.DEFINE_integer("steps", 20, "timed steps after the burn-in", flag_values=fv)
    flags.DEFINE_integer("batch", None, "global batch (default: the config's)", flag_values=fv)
    flags.DEFINE_integer("vocab", 2048, "vocabulary of the synthetic batches", flag_values=fv)
    flags.DEFINE_integer("genres", 4, "genres of the synthetic batches", flag_values=fv)
    flags.DEFINE_integer("sampler_rounds", 3, "alternated rounds of the carried sampler against the "
                         "Python loop of decode_step and the batch-1 floor", flag_values=fv)  # fmt: skip
    flags.DEFINE_string("json", None, "write the results here as JSON", flag_values=fv)


@cli.entry_point
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()
    f, _ = cli.parse_flags(argv, _define_flags, prog="python -m jaxmusic.bench", doc=__doc__)
    config = f.config
    if f.batch is not None:  # a global batch, whatever the config gives
        config.batch_size, config.batch_size_per_device = f.batch, 0
    if f.steps < 1 or f.sampler_rounds < 1 or f.vocab <= codec_lib.NUM_SPECIAL + f.genres:
        raise UsageError(
            f"need --steps >= 1, --sampler_rounds >= 1 and --vocab > {codec_lib.NUM_SPECIAL + f.genres}"
        )
    result = benchmarks.run(
        config, steps=f.steps, vocab_size=f.vocab, num_genres=f.genres, sampler_rounds=f.sampler_rounds
    )
    print(_table(result))
    if f.json:
        fileio.atomic_write(f.json, json.dumps(result, indent=1))
        print(f"wrote {f.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
