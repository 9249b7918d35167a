"""Band collections: instruments and drums (General MIDI families), on a 2-core CPU.

Build the collection with its instruments, then train:

  python -m data_pipeline.build --midi_dir path/to/genre_folders --data_dir data --instruments family
  python -m jaxmusic.train --config configs/bands.py --workdir runs/bands \\
      --config.data_dir=data/midi_pieces/<folder name>

On ../shared/data/bands (265 files) its best validation NLL, about 41% below the best
Kneser-Ney n-gram, comes at step 750 and it stops early at step 1,500: 30 to 70 minutes
as the machine goes (from its step time, 1.0 s on a fast day and 2.2 s on a slow one).
Its samples are evaluated played by their piece's band (`sampling.line_up`). The
figures: README, docs/evaluation.md; what was tried: docs/experiments.md.
"""

import ml_collections

from configs import multitrack


def get_config() -> ml_collections.ConfigDict:
    c = multitrack.get_config()
    c.data_dir = "data/midi_pieces/bands"  # built with --instruments family
    c.eval_every = 250  # a few hundred pieces overfit within an epoch or two: look often
    c.early_stopping = 3  # 750 steps past the best (every run's best so far: step 500 to 750)
    c.transpose_nearest = True  # a sparse band vocabulary: 62% of windows reach the common key, not 15%
    c.model.recent_notes = 64  # each part keeps to its few pitches (samples wandered over twice as many)
    c.sampling.line_up = "piece"  # evaluated samples play their piece's band, not the primer's part of it
    return c
