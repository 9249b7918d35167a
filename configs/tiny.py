"""A tiny model for tests and smoke runs: compiles and steps in a second on a CPU.

python -m jaxmusic.train --config configs/tiny.py --workdir runs/tiny --config.data_dir=DIR
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.batch_size = 8  # global
    c.num_train_steps = 20
    c.checkpoint_every = 10
    c.eval_every = 10
    c.log_every = 5
    c.encoder_len = 6
    c.decoder_len = 4
    c.transpose = 0
    c.preview_samples = 0  # tests that listen turn it on
    c.model.hidden = 16
    c.model.dropout = 0.0  # so results do not depend on how the batch is split
    c.model.decoder_dropout = 0.0
    c.model.recent_notes = 0  # on in the tests that need it: compiling it makes a tiny run 1.6x as long
    c.optimizer.learning_rate = 1e-2
    c.optimizer.warmup_steps = 2
    c.optimizer.end_learning_rate = 1e-3
    return c
