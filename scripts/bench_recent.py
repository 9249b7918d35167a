"""What the recent counts' head costs (`models.recent_logits`), against the plain head.

  .venv/bin/python scripts/bench_recent.py [--batch 32] [--steps 32] [--vocab 18246] \\
      [--instruments 17] [--hidden 256] [--sounded 20] [--repeats 7] [--rounds 3]

Times `jax.value_and_grad` of a cross-entropy over the logits float32[B, T, V], taken as
they are ("plain") and through `recent_logits` ("recent": each id's group's count, and
each instrument's probability kept), with the counts, the decoder outputs and the
logits arguments of the program (constants would be folded at compile time). Groups
and instruments are drawn at random over the vocabulary, as many groups as
`recent.groups` gives a codec of that many instruments (128 pitches each); `--sounded`
groups have counts at each step. The defaults are `configs/bands.py` on
../shared/data/bands (vocabulary 18,246, 17 instruments). Host memory is kept as the
CLIs keep it. Needs no TensorFlow.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxmusic import benchmarks, host_memory, lookback, models


def _inputs(batch: int, steps: int, vocab: int, instruments: int, hidden: int, sounded: int):
    rng = np.random.default_rng(0)
    num_groups = 128 * instruments
    group = rng.integers(0, num_groups, vocab).astype(np.int32)
    groups = models.Factors(np.stack([group, group % instruments], axis=1))
    counts = np.zeros((batch, steps, num_groups), np.float32)
    rows = np.arange(batch)[:, None, None], np.arange(steps)[None, :, None]
    np.add.at(counts, (*rows, rng.integers(0, num_groups, (batch, steps, sounded))), 1.0)
    arrays = dict(
        x=rng.normal(size=(batch, steps, hidden)), logits=rng.normal(size=(batch, steps, vocab)),
        counts=counts, kernel=rng.normal(size=(hidden, 1)) * 0.01,
        table=rng.normal(size=(lookback.NUM_BUCKETS, 1)) * 0.1,
    )  # fmt: skip
    target = jnp.asarray(rng.integers(0, vocab, (batch, steps)))
    return groups, target, {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}


def _program(groups: models.Factors, target: jax.Array, recent: bool):
    def loss(a):
        logits = a["logits"]
        if recent:
            by_count = lambda ids: jnp.take(a["table"], ids, axis=0)  # noqa: E731
            logits = models.recent_logits(a["x"], logits, a["counts"], a["kernel"], by_count, groups,
                                          jnp.float32)  # fmt: skip
        picked = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), target[..., None], axis=-1)
        return -picked.mean()

    return jax.jit(jax.value_and_grad(loss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32, help="decoder steps T")
    parser.add_argument("--vocab", type=int, default=18246)
    parser.add_argument("--instruments", type=int, default=17)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--sounded", type=int, default=20, help="groups counted at each step")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    host_memory.keep_freed_memory()  # as the CLIs do, before JAX starts its CPU client
    groups, target, inputs = _inputs(args.batch, args.steps, args.vocab, args.instruments, args.hidden,
                                     args.sounded)  # fmt: skip
    fns = {"plain": _program(groups, target, False), "recent": _program(groups, target, True)}
    medians = benchmarks.alternated_medians(fns, (inputs,), args.rounds, args.repeats)
    device = jax.devices()[0]
    shape = f"[{args.batch}, {args.steps}, {args.vocab}]"
    on = f"{device.device_kind} ({device.platform})"
    print(f"\nlogits {shape}, {args.instruments} instruments, cross-entropy forward + backward on {on}; "
          f"median of {args.rounds} rounds x {args.repeats} calls\n")  # fmt: skip
    plain = medians["plain"]
    print("| head | ms | / plain |\n|---|---|---|")
    for name, m in medians.items():
        print(f"| {name} | {m * 1e3:.1f} | {m / plain:.2f}x |")


if __name__ == "__main__":
    main()
