"""Runs the tiny config under a chosen device and process count (for test_parallel.py).

  python tests/distributed_run.py --devices 4 --data_dir D --workdir W [--stop_at N]
      [--coordinator 127.0.0.1:PORT --num_processes 2 --process_id I] [--set key=value ...]
      [--sigterm_at STEP]

Simulated CPU devices must be set before JAX starts, hence a process of its own.
"""

import argparse
import os
import signal
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--stop_at", type=int, default=None)
    parser.add_argument("--coordinator")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    parser.add_argument("--set", action="append", default=[], help="config key=value (ints; 0 / 1: bools)")
    parser.add_argument("--sigterm_at", type=int, default=None, help="SIGTERM to this process at this step")
    args = parser.parse_args()
    jax.config.update("jax_num_cpu_devices", args.devices)

    from configs import tiny
    from jaxmusic import parallel, trainer

    if args.sigterm_at is not None:  # a preemption notice at a known step, not at a moment of a race
        check = trainer._Stop.__call__

        def noticed(stop, step):
            if step == args.sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return check(stop, step)

        trainer._Stop.__call__ = noticed

    parallel.initialize_distributed(
        coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
    )
    config = tiny.get_config()
    config.data_dir = args.data_dir
    config.log_every = 1  # every loss in metrics.jsonl, and a host sync every step
    for item in args.set:
        key, value = item.split("=")
        *parents, name = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[name] = type(node[name])(int(value))  # ints, and 0 / 1 for a bool field
    assert jax.device_count() == args.devices * (args.num_processes or 1), jax.devices()
    trainer.train_and_evaluate(config, args.workdir, stop_at=args.stop_at)


if __name__ == "__main__":
    main()
