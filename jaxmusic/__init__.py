"""jaxmusic: LSTM seq2seq music generation from MIDI in JAX/Flax.

Modules in the order data flows through them: midi_io (MIDI <-> notes), codec
(notes <-> pseudo-note ids), input_pipeline (dataset -> batches), batching (the
batch and its split over devices), lstm (the recurrence), models (the LSTM
encoder-decoder), parallel (the device mesh), steps (train and eval steps), train
(the loop), checkpoint (orbax), sampler and sample (new music), render (WAV, piano
roll), evaluate (likelihood, baselines, music statistics); beside them cli (what the
CLIs share), host_memory (a CPU's step temporaries kept mapped), codec_report,
metric_writer, music_stats (measures over notes), ngram (count baselines), lock, fuzz
and bench. docs/layout.md has one line on each.
"""
