"""jaxmusic: LSTM seq2seq music generation from MIDI in JAX/Flax.

Modules, in the order data flows through them: midi_io (MIDI <-> notes), codec
(notes <-> pseudo-note ids), metrics (measures over notes).
"""
