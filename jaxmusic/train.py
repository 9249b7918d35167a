"""CLI: train (or resume) a model in a workdir.

  python -m jaxmusic.train --config configs/default.py --workdir runs/default \\
      [--config.batch_size=64 ...] [--multihost | --coordinator H:P --num_processes N --process_id I]

A run resumes from its workdir by itself; SIGTERM or SIGINT saves a checkpoint and
exits 0. The library is `jaxmusic.trainer.train_and_evaluate`.
"""

from __future__ import annotations

import jax

from jaxmusic import cli, host_memory, parallel, trainer


def _define_flags(fv, argv: list[str]) -> None:
    from absl import flags

    cli.define_config(fv, argv)
    flags.DEFINE_string(
        "workdir", None, "checkpoints and metrics go here; a run resumes from it", flag_values=fv
    )
    flags.DEFINE_bool("multihost", False, "join a multi-host run found from the environment", flag_values=fv)
    flags.DEFINE_string(
        "coordinator", None, "host:port of process 0 (multi-process GPUs/CPUs)", flag_values=fv
    )
    flags.DEFINE_integer("num_processes", None, "processes in the run (with --coordinator)", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "this process's rank (with --coordinator)", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)


@cli.entry_point
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()
    f, _ = cli.parse_flags(argv, _define_flags, prog="python -m jaxmusic.train", doc=__doc__)
    parallel.initialize_distributed(
        coordinator=f.coordinator, num_processes=f.num_processes, process_id=f.process_id, auto=f.multihost
    )
    workdir = cli.ensure_writable("--workdir", f.workdir)  # a bad bucket stops here, before any work
    metrics = trainer.train_and_evaluate(f.config, workdir)
    if jax.process_index() == 0:
        print(f"checkpoints: {workdir / 'checkpoints'}")
        print(f"metrics: {workdir / 'metrics.jsonl'} (TensorBoard: {workdir / 'tensorboard'})")
        if metrics:
            print("final evaluation: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
