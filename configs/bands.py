"""Band collections: instruments and drums (General MIDI families), on a CPU in under 30 minutes.

Build the collection with its instruments, then train:

  python -m data_pipeline.build --midi_dir path/to/genre_folders --data_dir data --instruments family
  python -m jaxmusic.train --config configs/bands.py --workdir runs/bands \\
      --config.data_dir=data/midi_pieces/<folder name>

On ../shared/data/bands (265 files) it stops early at its best validation NLL, about
35% below the best Kneser-Ney n-gram (the figures: README, docs/evaluation.md; what was
tried: docs/experiments.md).
"""

import ml_collections

from configs import multitrack


def get_config() -> ml_collections.ConfigDict:
    c = multitrack.get_config()
    c.data_dir = "data/midi_pieces/bands"  # built with --instruments family
    c.eval_every = 250  # a few hundred pieces overfit within an epoch or two: look often
    c.early_stopping = 4  # a thousand steps past the best
    c.transpose_nearest = True  # a sparse band vocabulary: 62% of windows reach the common key, not 15%
    return c
