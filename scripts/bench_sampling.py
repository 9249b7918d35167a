"""Notes per second of the jitted sampler for each way of drawing, on a config's shapes.

  .venv/bin/python scripts/bench_sampling.py [--config configs/default.py] [--vocab 2048] \\
      [--batch 1] [--notes 256]

Times `sampler.Sampler` calls (medians of 5, after a compiling call) on a freshly
initialized model: greedy, the model's own distribution (temperature 1, top_p 1),
temperature 0.9 and top_p 0.9 with every id at once and with the rhythm drawn
untempered (the CLIs' default; 20 onset-gap groups of the vocabulary's ids in turn,
as a codec's would be), each with the phrases re-encoded and with carried state,
beside `benchmarks.decode_floor`.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import configs
from jaxmusic import benchmarks, conditioning, lookback, models, sampler, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--notes", type=int, default=256)
    args = parser.parse_args()
    c = configs.load(args.config)
    model = models.from_config(c, args.vocab, 4)
    tx, _ = steps.make_optimizer(c)
    params = steps.init_state(model, tx, c, jax.random.key(0)).params
    # As inference samples a factored model: the plain model of its folded rows.
    model, params = models.plain_of(model), models.fold_factors(model, params)
    group = np.r_[np.full(8, 21), np.arange(args.vocab - 8) % 20]  # special ids, then 20 gaps in turn
    group[2] = 20  # EOS
    encode, step, complete, _ = sampler.model_functions(model, conditioning.Conditioner.from_config(c, None))
    spec = lookback.Spec.of(c, 8)
    sample = sampler.make_sampler(encode, step, complete, vocab_size=args.vocab, first_note_id=8,
                                  phrase_len=c.decoder_len, num_phrases=-(-args.notes // c.decoder_len),
                                  groups=np.eye(22, dtype=np.float32)[group], lookback_spec=spec)  # fmt: skip
    window = jnp.asarray([sampler.primer_window([], c.encoder_len)] * args.batch, jnp.int32)
    history = None if spec is None else np.zeros((args.batch, spec.window), np.int32)  # nothing read yet
    genre = conditioning.Condition(jnp.zeros(args.batch, jnp.int32))
    draws = {"greedy": dict(greedy=True), "temperature 1, top_p 1": dict(temperature=1.0, top_p=1.0),
             "temperature 0.9, top_p 0.9": dict(temperature=0.9, top_p=0.9),
             "0.9, 0.9, untempered rhythm (default)": dict(temperature=0.9, top_p=0.9,
                                                           untempered_rhythm=True)}  # fmt: skip
    print(f"{args.config}, vocabulary {args.vocab}, batch {args.batch}, {args.notes} notes: notes/s")
    for name, draw in draws.items():
        for carry in (False, True):
            settings = sampler.Settings(carry_state=carry, **draw)
            sample(params, window, genre, jax.random.key(0), settings, history).block_until_ready()
            times = []
            for r in range(5):
                t = time.perf_counter()
                sample(params, window, genre, jax.random.key(r + 1), settings, history).block_until_ready()
                times.append(time.perf_counter() - t)
            rate = args.batch * sample.notes_per_call / statistics.median(times)
            print(f"  {name:<38} {'carried' if carry else 'phrases':<8} {rate:9.0f}")
    floor = benchmarks.decode_floor(c, vocab_size=args.vocab)["notes_per_second"]
    print(f"  batch-1 floor (decoder weight products alone)  {floor:9.0f}")


if __name__ == "__main__":
    main()
