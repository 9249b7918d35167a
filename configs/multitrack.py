"""Real multi-track collections (POP909-size and up) on a CPU in about 30 minutes.

Build the collection, then train:

  python -m data_pipeline.build --midi_dir path/to/genre_folders --data_dir data
  python -m jaxmusic.train --config configs/multitrack.py --workdir runs/multitrack \\
      --config.data_dir=data/midi_pieces/<folder name>

On POP909 it reaches a validation NLL about 47% below the best Kneser-Ney n-gram,
with the lookback of configs/default.py (the figures: README, docs/evaluation.md; what
was tried: docs/experiments.md).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data_dir = "data/midi_pieces/pop909"  # the dataset folder (or a folder holding one)
    c.encoder_len = 64  # dense pop plays 6 to 12 notes a second: 32 notes are a bar or two
    c.num_train_steps = 3400  # about 2.5 epochs of POP909
    c.eval_every = 500  # each evaluation reads the whole validation split; the best is kept (W/best)
    c.early_stopping = 3  # a collection of a few hundred pieces stops when it starts to overfit
    c.optimizer.warmup_steps = 500  # past the unigram plateau of a large vocabulary before the peak rate
    c.model.decoder_dropout = 0.0  # read about 2.5 times a run: dropout only slowed it
    c.common_key = True  # every window in C major or A minor: samples keep their key as real pop does
    c.transpose = 0  # a random transposition would move it away again
    return c
