"""Batches per second of the training input pipeline at a config's shapes.

  .venv/bin/python scripts/bench_input.py --config configs/default.py --data_dir DATA_DIR

Compare with the steps per second that `jaxmusic.train` logs: input must be far
faster than training so that it never limits it.
"""

import argparse
import statistics
import time

import configs
from jaxmusic import conditioning, parallel
from jaxmusic import input_pipeline as ip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--batches", type=int, default=500)
    args = parser.parse_args()
    c = configs.load(args.config)
    batch = parallel.global_batch_size(c)
    codec = ip.load_codec(args.data_dir)
    pieces = ip.load_pieces(args.data_dir, "train")
    it = ip.train_batches(
        [pieces], shard_ids=[0], batch_size=batch, encoder_len=c.encoder_len, decoder_len=c.decoder_len,
        seed=0, transpose=codec.transpose_tables(c.transpose),
        conditioner=conditioning.Conditioner.from_config(c, codec),
    )  # fmt: skip
    for _ in range(20):  # warm up: tf.data start and prefetch
        next(it)
    rates = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(args.batches // 5):
            next(it)
        rates.append(args.batches // 5 / (time.perf_counter() - t))
    print(f"{statistics.median(rates):.0f} batches/s (median of 5; batch {batch}, "
          f"{c.encoder_len}+{c.decoder_len} tokens, transpose +-{c.transpose})")  # fmt: skip


if __name__ == "__main__":
    main()
