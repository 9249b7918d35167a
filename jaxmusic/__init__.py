"""jaxmusic: LSTM seq2seq music generation from MIDI in JAX/Flax.

Modules in the order data flows through them: midi_io (MIDI <-> notes), codec
(notes <-> pseudo-note ids), input_pipeline (dataset -> batches), models (the LSTM
encoder-decoder), parallel (the device mesh), train (steps and the loop),
checkpoint (orbax), sampler and sample (new music), render (WAV, piano roll),
evaluate (likelihood, baselines, music statistics); beside them metric_writer,
metrics (measures over notes), ngram (count baselines) and bench.
"""
