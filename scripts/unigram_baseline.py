"""The NLL of always predicting the training split's note frequencies.

  .venv/bin/python scripts/unigram_baseline.py DATA_DIR [--split validation]

The reference a trained model must beat: per-target NLL (nats) over every note and
EOS of the split, with add-one smoothing over the vocabulary. The same targets as
`jaxmusic.train`'s evaluation.
"""

import argparse

import numpy as np

from jaxmusic import input_pipeline


def unigram_nll(data_dir: str, split: str) -> float:
    codec = input_pipeline.load_codec(data_dir)
    train = input_pipeline.load_pieces(data_dir, "train")
    counts = np.bincount(np.concatenate([s[1:] for s in train.sequences]), minlength=codec.vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    held = input_pipeline.load_pieces(data_dir, split)
    return float(-np.mean(logp[np.concatenate([s[1:] for s in held.sequences])]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("--split", default="validation")
    args = parser.parse_args()
    print(f"unigram NLL on {args.split}: {unigram_nll(args.data_dir, args.split):.4f} nats")
