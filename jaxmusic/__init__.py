"""jaxmusic: LSTM seq2seq music generation from MIDI in JAX/Flax.

Modules in the order data flows through them: midi_io (MIDI <-> notes), codec and
codec_fit (notes <-> pseudo-note ids), conditioning (genre, key, density), windows
and input_pipeline (dataset -> batches), batching, lstm and models (the LSTM
encoder-decoder), parallel, steps and trainer (training), checkpoint, inference and
sampler (new music), sample_files and render (files), evaluation (the report);
docs/layout.md has one line on each, and the rules the import graph keeps.
"""
