"""The embedded default: a small model that learns real structure on a CPU in minutes.

Run (after `python -m data_pipeline.build --corpus music21 --data_dir data`):

  python -m jaxmusic.train --config configs/default.py --workdir runs/default

On the music21 corpus it reaches a validation NLL about 40% below the best
Kneser-Ney n-gram in its 3,000 steps (the figures: README, docs/evaluation.md; what
was tried for each field: docs/experiments.md).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data_dir = "data/midi_pieces/music21"  # what data_pipeline.build wrote (or a folder holding one)
    c.batch_size = 32  # global: split over every device of every host
    c.batch_size_per_device = 0  # or this per device instead (exactly one of the two > 0)
    c.num_train_steps = 3000  # keeps the main job under 12 minutes on 2 cores
    c.checkpoint_every = 250  # steps between checkpoints (and one at the end)
    c.eval_every = 500  # steps between evaluations (and one at the end)
    c.log_every = 50  # steps between training-metric lines
    c.seed = 0  # parameters, dropout and batches all follow from it
    c.max_to_keep = 3  # checkpoints kept in the workdir (and W/best: the lowest validation NLL's)
    c.early_stopping = 0  # evaluations without a lower validation NLL before the run stops (0: never)

    c.encoder_len = 32  # Te: notes the encoder reads
    c.decoder_len = 32  # Td: notes the decoder predicts
    c.carried_windows = False  # truncated BPTT: each row reads a piece window after window (Te == Td)
    c.transpose = 3  # train-time transposition, up to this many semitones either way
    c.common_key = False  # every window moved to C major or A minor by its key (needs transpose 0)
    c.transpose_nearest = False  # a moved note the vocabulary lacks takes its nearest length and loudness
    c.eval_split = "validation"  # the split evaluated during training
    c.eval_batches = 0  # cap on evaluation batches (0: the whole split)
    c.preview_samples = 2  # samples heard in TensorBoard at each evaluation (0: none; jaxmusic.preview)
    c.preview_notes = 128  # notes each
    c.data_shards = 0  # fixed shards of the train split, so batches do not depend on hosts (0: one a host)

    c.model = ml_collections.ConfigDict()
    c.model.num_layers = 2  # LSTM layers in the encoder and in the decoder
    c.model.hidden = 256  # units per layer
    c.model.dropout = 0.2  # between encoder layers (the seed)
    c.model.decoder_dropout = 0.2  # between decoder layers: music21 is read about 13 times a run
    c.model.dtype = "float32"  # the input type of products; "bfloat16" on GPUs and TPUs
    c.model.embed_dim = 0  # 0: one-hot input straight into the gates (the seed); > 0: an embedding first
    c.model.key_input = True  # the key of the notes read so far is an input: samples hold their key
    c.model.key_context = "piece"  # the key of the piece so far ("window": the encoder's notes only)
    c.model.condition_output = False  # genre and key also as logit priors: lost rhythm in long samples
    c.model.density_input = True  # the note density beside the key: long samples hold their pace
    c.model.stack_order = "auto"  # "wavefront" on TPUs and GPUs, "layers" on CPUs (lstm.stack)
    c.model.lookback = True  # each decoder step reads (and may copy) what followed its longest earlier match
    c.model.lookback_window = 1024  # notes back a lookback match may end
    c.model.copy_group = True  # a copy may keep its note's pitch and onset and vary its loudness and length
    c.model.factored = True  # each id also learns through its parts (pitch on its instrument, velocity, ...)
    c.model.recent_notes = 0  # > 0: each id's logit reads how often its pitch sounded in this many notes back

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 3e-3  # peak, after warmup
    c.optimizer.warmup_steps = 300  # linear from 0; shorter warmups stalled some runs at the peak rate
    c.optimizer.end_learning_rate = 3e-4  # cosine decay ends here at num_train_steps
    c.optimizer.b1 = 0.9  # Adam
    c.optimizer.b2 = 0.999  # Adam
    c.optimizer.grad_clip = 1.0  # global-norm gradient clipping
    c.optimizer.weight_decay = 0.03  # AdamW's decay of the matrices (0: plain Adam)

    # How jaxmusic.sample and jaxmusic.evaluate draw notes unless told otherwise (sampler.Settings).
    c.sampling = ml_collections.ConfigDict()
    c.sampling.temperature = 0.9  # divides the logits
    c.sampling.top_k = 0  # draw among the k most probable notes (0: all)
    c.sampling.top_p = 0.9  # nucleus mass (1: none)
    c.sampling.untempered_rhythm = True  # each onset gap from the model's own distribution, then the note
    c.sampling.untempered_copy = True  # a lookback note taken as often as the model says, not sharpened
    c.sampling.primer_instruments = True  # the primer's instruments play on (a codec with instruments)
    c.sampling.untempered_instruments = True  # each note's instrument as often as the model says
    c.sampling.line_up = "primer"  # jaxmusic.evaluate: the settings' instruments (piece: its piece's band)
    c.sampling.greedy = False  # always the most probable note (the seed's inference)
    c.sampling.carry_state = False  # the decoder goes on from phrase to phrase instead of re-encoding
    c.sampling.fixed_length = False  # EOS never drawn
    c.sampling.min_notes = 1  # EOS not drawn before this many notes
    return c
