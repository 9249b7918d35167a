"""What a config's train step needs in memory per device, from its shapes.

  .venv/bin/python scripts/memory_estimate.py --config configs/paper.py --vocab 8518 --genres 1 \\
      --devices 8

Parameters and Adam's two moments are float32 and replicated on every device; the
activations kept for the backward pass scale with the per-device batch. The
compiled step's own figures (XLA's memory analysis: arguments, outputs,
temporaries) come from compiling it here for the CPU, which computes bfloat16 in
float32, so they bound a GPU/TPU's from above.
"""

import argparse

import jax

import configs
from jaxmusic import batching, conditioning, models, parallel, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/paper.py")
    parser.add_argument("--vocab", type=int, default=8518, help="codec vocab_size (POP909: 8518)")
    parser.add_argument("--genres", type=int, default=4)
    parser.add_argument("--devices", type=int, default=8, help="devices sharing the global batch")
    args = parser.parse_args()
    c = configs.load(args.config)
    model = models.from_config(c, args.vocab, args.genres)
    tx, _ = steps.make_optimizer(c)
    state = jax.eval_shape(lambda: steps.init_state(model, tx, c, jax.random.key(0)))
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    total = parallel.global_batch_size(c, args.devices)
    per_device = total // args.devices
    print(f"{args.config}: vocab {args.vocab}, hidden {c.model.hidden} x {c.model.num_layers} layers")
    print(f"parameters: {n_params:,} = {n_params * 4 / 2**20:.0f} MiB float32")
    print(
        f"parameters + gradients + Adam moments: {n_params * 16 / 2**20:.0f} MiB (replicated on each device)"
    )
    mesh = parallel.make_mesh(jax.devices()[:1])
    conditioner = conditioning.Conditioner.from_config(c, None)  # synthetic ids: no key to tell
    step = steps.make_train_step(model, tx, mesh, jax.random.key(1), conditioner)
    b, te, td = per_device, c.encoder_len, c.decoder_len
    batch = batching.abstract(b, te, td, lookback=c.model.lookback)
    m = step.lower(state, batch).compile().memory_analysis()
    gib = 2**30
    print(f"compiled step, per-device batch {b} ({total} over {args.devices} devices), {te}+{td} notes:")
    sizes = (m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes)
    print(
        "  arguments {:.2f} GiB, outputs {:.2f} GiB, temporaries {:.2f} GiB".format(*(x / gib for x in sizes))
    )


if __name__ == "__main__":
    main()
