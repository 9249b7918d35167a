"""The seed's model: a 2 x 1024 LSTM encoder with dropout between its layers and a
2 x 1024 LSTM decoder, followed by a softmax over the pseudo-notes.

  python -m jaxmusic.train --config configs/paper.py --workdir runs/paper \\
      --config.data_dir=DATA_DIR

Meant for GPUs and TPUs (bfloat16 computation, float32 parameters); a step on a
2-core CPU takes seconds.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.batch_size = 0
    c.batch_size_per_device = 32  # each chip keeps its work as a slice grows (v4-8: 128 in all)
    c.num_train_steps = 50_000
    c.checkpoint_every = 1000
    c.eval_every = 2000
    c.log_every = 100
    c.encoder_len = 64
    c.decoder_len = 64
    c.model.hidden = 1024  # the seed: 1024 units in every layer
    c.model.dropout = 0.3  # the seed: dropout between the two encoder layers
    c.model.decoder_dropout = 0.0  # the seed: none in the decoder
    c.model.dtype = "bfloat16"
    c.model.key_input = False  # the seed's model exactly (--config.model.key_input=True adds it)
    c.model.density_input = False  # rides on the key input
    c.model.lookback = False  # the seed's model exactly (--config.model.lookback=True adds form)
    c.model.copy_group = False  # rides on the lookback
    c.model.factored = False  # the seed's one-hot rows alone (--config.model.factored=True adds parts)
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 1000
    c.optimizer.end_learning_rate = 1e-5
    c.optimizer.weight_decay = 0.0  # the seed's Adam (the default's 0.03 is unmeasured at this size)
    return c
