"""One LSTM stack's forward and backward, wavefront against layer by layer, on this machine.

  .venv/bin/python scripts/bench_stack.py [--hidden 256] [--batch 32] [--steps 64] \\
      [--layers 2] [--dtype float32|bfloat16] [--repeats 20] [--rounds 3]

Times `jax.grad` of a loss over `lstm.stack` (outputs, final states; every weight,
bias, initial state and the first layer's gates differentiated) for each order the
model can run (`model.stack_order`): "wavefront" (T + L - 1 sequential steps, each
doing every layer's products), "layers" in rows, and on a CPU "layers" in the column
layout. Rounds alternate the orders; the table gives the median of each order's round
medians and its ratio to the wavefront. This is what "auto" (wavefront on TPUs and
GPUs, layers on CPUs) was chosen from; on a GPU or TPU it shows what the wavefront
gains there. Host memory is kept as the CLIs keep it (`jaxmusic.host_memory`; before
2026-12-02 it was not, so a CPU mapped fresh temporaries at every call). Needs no
TensorFlow.
"""

from __future__ import annotations

import argparse

import jax

from jaxmusic import benchmarks, host_memory, lstm, models


def _args(hidden: int, batch: int, steps: int, layers: int):
    keys = iter(jax.random.split(jax.random.key(0), 4 * layers + 4))

    def normal(shape, scale=0.1):
        return jax.random.normal(next(keys), shape) * scale

    h4 = 4 * hidden
    return (
        normal((steps, batch, h4)),
        tuple(normal((hidden, h4)) for _ in range(layers)),
        tuple(normal((hidden, h4)) for _ in range(layers - 1)),
        tuple(normal((h4,)) for _ in range(layers - 1)),
        tuple(normal((batch, hidden)) for _ in range(layers)),
        tuple(normal((batch, hidden)) for _ in range(layers)),
        normal((batch, h4)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64, help="time steps T")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=sorted(models.DTYPES))
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    host_memory.keep_freed_memory()  # as the CLIs do, before JAX starts its CPU client
    dtype = models.DTYPES[args.dtype]
    inputs = _args(args.hidden, args.batch, args.steps, args.layers)
    on_cpu = jax.devices()[0].platform == "cpu"
    orders = {"wavefront": ("wavefront", False), "layers (rows)": ("layers", False)}
    if on_cpu:
        orders["layers (columns)"] = ("layers", True)

    def grad_of(order: str, column: bool):
        def loss(*a):
            hs, c, h = lstm.stack(*a, dtype=dtype, order=order, column=column)
            return (hs**2).sum() + sum((x**2).sum() for x in c + h)

        return jax.jit(jax.grad(loss, argnums=tuple(range(len(inputs)))))

    fns = {name: grad_of(*spec) for name, spec in orders.items()}
    medians = benchmarks.alternated_medians(fns, inputs, args.rounds, args.repeats)
    device = jax.devices()[0]
    shapes = f"{args.layers} x {args.hidden} LSTM stack, batch {args.batch}, {args.steps} steps, {args.dtype}"
    print(f"\n{shapes}, forward + backward on {device.device_kind} ({device.platform}); "
          f"median of {args.rounds} rounds x {args.repeats} calls\n")  # fmt: skip
    wave = medians["wavefront"]
    print("| order | sequential steps | ms | / wavefront |\n|---|---|---|---|")
    for name, m in medians.items():
        seq = args.steps + args.layers - 1 if name == "wavefront" else args.steps * args.layers
        print(f"| {name} | 2 x {seq} | {m * 1e3:.1f} | {m / wave:.2f}x |")


if __name__ == "__main__":
    main()
