"""Does bfloat16 train as well as float32? The same runs in both, side by side.

  .venv/bin/python scripts/precision_check.py --data_dir data/midi_pieces/music21 \\
      [--config configs/default.py] [--steps N] [--seeds 0,1,2] [--workdir runs/precision] \\
      [--json F] [--config.x=y ...]

For each seed, trains the config twice on the same batches, with `model.dtype=float32`
and `model.dtype=bfloat16` (bfloat16 as the input of matrix products only: models.py's
policy), and evaluates both on the validation split, overall and per genre. On a CPU,
XLA rounds every bfloat16 product input as an accelerator does, so the comparison
holds for TPUs and GPUs too.

Two runs that differ only in rounding part ways after about a hundred steps (float32
against float32 on another revision does too), so one pair of runs measures the
chaos of training as much as the precision. The script therefore reports, besides
each pair:
- the mean over seeds of bfloat16 - float32, beside the spread of float32 alone
  across seeds (what "as good as" can be resolved to);
- each float32-trained model evaluated again with bfloat16 products: the precision's
  own cost on the same parameters, free of the chaos.
Runs are the config's full length by default: shorter ones end on a different
schedule, and over 600 steps of the default config float32 alone varied by 0.29 nats
across seeds (docs/accelerators.md). Workdirs are <workdir>/<dtype>_seed<k> (a second
call reuses finished runs).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _nll_by_genre(metrics: dict) -> dict[str, float]:
    return {
        k.split("/", 1)[1] if "/" in k else "all": v for k, v in metrics.items() if k.startswith("eval_nll")
    }


def _same_params_in_bfloat16(config, workdir: Path) -> dict[str, float]:
    """The float32 run's final parameters evaluated with bfloat16 products."""
    from jaxmusic import inference, input_pipeline

    generator = inference.Generator.load(workdir, dtype="bfloat16")
    got = generator.likelihood(input_pipeline.load_pieces(config.data_dir, config.eval_split))
    return _nll_by_genre(got)


def main(argv: list[str]) -> None:
    from absl import flags, logging

    from jaxmusic import trainer
    from jaxmusic.metric_writer import read_metrics

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    f = flags.FLAGS
    seeds = [int(s) for s in f.seeds.split(",")]
    nll: dict[str, dict[int, dict[str, float]]] = {"float32": {}, "bfloat16": {}}
    same_params = {}
    steps = f.steps or f.config.num_train_steps
    for seed in seeds:
        for dtype in nll:
            config = f.config.copy_and_resolve_references()
            config.data_dir, config.seed, config.model.dtype = f.data_dir, seed, dtype
            config.num_train_steps = config.eval_every = config.checkpoint_every = steps
            workdir = Path(f.workdir) / f"{dtype}_seed{seed}"
            print(f"--- {dtype}, seed {seed}: {steps} steps in {workdir}", file=sys.stderr)
            # A finished workdir trains no more and returns no metrics: its last evaluation then.
            metrics = (
                trainer.train_and_evaluate(config, workdir)
                or [r for r in read_metrics(workdir) if "eval_nll" in r][-1]
            )
            nll[dtype][seed] = _nll_by_genre(metrics)
            if dtype == "float32":
                same_params[seed] = _same_params_in_bfloat16(config, workdir)
    names = list(nll["float32"][seeds[0]])
    print(f"validation NLL (nats per note) after {steps} steps of {f.config_path}, seeds {f.seeds}")
    print(
        f"  {'seed':<5} {'':<12} {'float32':>9} {'bfloat16':>9} {'bf16 - f32':>11}"
        f" {'f32 params, bf16 products':>27}"
    )
    for seed in seeds:
        for name in names:
            a, b, c = nll["float32"][seed][name], nll["bfloat16"][seed][name], same_params[seed][name]
            print(f"  {seed:<5} {name:<12} {a:>9.4f} {b:>9.4f} {b - a:>+11.4f} {c - a:>+27.4f}")
    summary = {}
    for name in names:
        f32 = [nll["float32"][s][name] for s in seeds]
        diff = [nll["bfloat16"][s][name] - nll["float32"][s][name] for s in seeds]
        same = [same_params[s][name] - nll["float32"][s][name] for s in seeds]
        summary[name] = {
            "mean_bf16_minus_f32": statistics.mean(diff),
            "f32_std_over_seeds": statistics.stdev(f32) if len(f32) > 1 else 0.0,
            "max_abs_same_params_bf16_minus_f32": max(abs(x) for x in same),
        }
        s = summary[name]
        print(f"  {name:<12} mean bf16 - f32 {s['mean_bf16_minus_f32']:+.4f} (float32 alone varies by "
              f"{s['f32_std_over_seeds']:.4f} across seeds); same parameters: at most "
              f"{s['max_abs_same_params_bf16_minus_f32']:.4f}")  # fmt: skip
    if f.json:
        out = {"steps": steps, "config": f.config_path, "seeds": seeds, "nll": nll,
               "same_params_bf16": same_params, "summary": summary}  # fmt: skip
        Path(f.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    config_flags.DEFINE_config_file("config", "configs/default.py", "a configs/*.py file", lock_config=False)
    flags.DEFINE_string("data_dir", None, "what data_pipeline.build wrote")
    flags.DEFINE_integer("steps", 0, "training steps of each run (0: the config's num_train_steps)")
    flags.DEFINE_string("seeds", "0,1,2", "comma-separated seeds: one float32 and one bfloat16 run each")
    flags.DEFINE_string("workdir", "runs/precision", "runs go in <workdir>/<dtype>_seed<k>")
    flags.DEFINE_string("json", None, "write the figures here as JSON")
    flags.DEFINE_string("config_path", "configs/default.py", "the config's name, for the printout")
    flags.mark_flags_as_required(["data_dir"])
    app.run(main)
