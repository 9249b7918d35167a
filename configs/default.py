"""The embedded default: a small model that learns real structure on a CPU in minutes.

Run (after `python -m data_pipeline.build --corpus music21 --data_dir data`):

  python -m jaxmusic.train --config configs/default.py --workdir runs/default

On the music21 corpus it should reach a validation NLL well below the unigram
baseline within its 2,000 steps (see the README for the measured figures).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # What data_pipeline.build wrote (the dataset folder, or a folder holding one).
    c.data_dir = "data/midi_pieces/music21"
    c.batch_size = 32  # global: split over every device of every host
    # Or the batch of each device instead (the global batch then grows with the devices);
    # exactly one of the two is > 0.
    c.batch_size_per_device = 0
    # More steps than the 2,000 of before: NLL 3.19 at 3,500 against 3.42 at 2,000
    # (docs/evaluation.md); 3,000 keeps the main job under 12 minutes on 2 cores from
    # an empty cache (3,500 took 12 min 13 s).
    c.num_train_steps = 3000  # optimizer steps
    c.checkpoint_every = 250  # steps between checkpoints (and one at the end)
    c.eval_every = 500  # steps between evaluations (and one at the end)
    c.log_every = 50  # steps between training-metric lines
    c.seed = 0  # parameters, dropout and batches all follow from it
    c.max_to_keep = 3  # checkpoints kept in the workdir

    c.encoder_len = 32  # Te: notes the encoder reads
    c.decoder_len = 32  # Td: notes the decoder predicts
    # True: truncated BPTT. Each batch row reads a piece window after window, and the
    # encoder starts from its state after the row's previous window (zeroed at a
    # piece's start), so the decoder starts from the whole piece so far, in training,
    # evaluation and sampling alike (needs encoder_len == decoder_len).
    c.carried_windows = False
    c.transpose = 3  # train-time transposition, up to this many semitones either way
    # True (with transpose = 0 and the key input of the piece so far): each training and
    # evaluation window is moved to C major or A minor by its piece's key so far, and
    # sampling moves the primer there and the notes back (jaxmusic.key_input). Measured
    # on POP909 and music21 in docs/evaluation.md; off until it is better on both.
    c.common_key = False
    c.eval_split = "validation"  # the split evaluated during training
    c.eval_batches = 0  # cap on evaluation batches (0: the whole split)
    # Fixed shards of the train split; global batch row r draws from shard
    # r * data_shards // batch_size, so batches do not depend on the host count
    # (any count dividing data_shards). 0: one shard per process.
    c.data_shards = 0

    c.model = ml_collections.ConfigDict()
    c.model.num_layers = 2  # LSTM layers in the encoder and in the decoder
    c.model.hidden = 256  # units per layer
    c.model.dropout = 0.2  # between encoder layers (the seed)
    # Between decoder layers (not in the seed): music21's train split is seen about 13
    # times in 3,000 steps, and 0.2 here took the validation NLL from 3.182 to 3.135
    # with samples as close to the real music (docs/evaluation.md).
    c.model.decoder_dropout = 0.2
    c.model.dtype = "float32"  # computation dtype; "bfloat16" on GPUs and TPUs
    # 0: one-hot input straight into the first layer's gates (the seed; a row gather).
    # > 0: an embedding of this size, then the input projection (Embedding + LSTM).
    c.model.embed_dim = 0
    # True: the Krumhansl-Schmuckler key of the encoder's notes is one more input of
    # the first layers, like the genre; sampling holds the primer's key (jaxmusic.key_input).
    c.model.key_input = True
    # What the key input reads in training and evaluation: "piece" (the piece from its
    # start through the encoder's last note: a key that holds beyond one window) or
    # "window" (the encoder's notes only; configs from before this field).
    c.model.key_context = "piece"
    # True: the genre and the key also add a learned row to the logits (a prior over
    # the vocabulary for each), not only to the first layers' gates. On music21 it kept
    # the key more often (65.6% against 50.4% of 256 samples) at the same NLL, but more
    # long samples lost their rhythm (docs/evaluation.md), so it is off.
    c.model.condition_output = False
    # True (with key_input): the note density (notes a second) of the same notes as the
    # key is one more input of the first layers; sampling holds the primer's. On music21,
    # over three training seeds, long samples hold their pace (largest drop 0.003 to
    # 0.022 against 0.019 to 0.063; 0 to 0.4% of them stall against 2.3 to 5.9%) for
    # 0.016 nat of NLL on average (docs/evaluation.md).
    c.model.density_input = True
    # How a stack's layers are scheduled: "wavefront" (all advance together in one
    # scan, layer k at time t - k: T + L - 1 sequential steps instead of L x T),
    # "layers" (one after another), "auto" (wavefront on TPUs and GPUs, layers on CPUs,
    # from measurements: docs/performance.md). The same function and parameters.
    c.model.stack_order = "auto"

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 3e-3  # peak, after warmup
    # Linear warmup from 0. 300, not 100: after a 100-step warmup some runs stalled or
    # spiked at the peak rate (steps 150 to 500) and never made it up (3.15 to 3.20
    # against 3.12); 300 ended 3.098 to 3.128 in three seeds and both dtypes, where 100
    # gave float32 3.122 to 3.136 and bfloat16 3.162 and 3.197 (docs/evaluation.md).
    c.optimizer.warmup_steps = 300
    c.optimizer.end_learning_rate = 3e-4  # cosine decay ends here at num_train_steps
    c.optimizer.b1 = 0.9  # Adam
    c.optimizer.b2 = 0.999  # Adam
    c.optimizer.grad_clip = 1.0  # global-norm gradient clipping
    # > 0: AdamW, a decoupled decay of the matrices (not the biases). 0.03 took the
    # validation NLL from 3.168 / 3.116 / 3.141 to 3.122 / 3.123 / 3.136 over three seeds
    # on music21 and from 5.485 to 5.396 on POP909 (configs/multitrack.py), with samples
    # as close to the real music (docs/evaluation.md).
    c.optimizer.weight_decay = 0.03
    return c
