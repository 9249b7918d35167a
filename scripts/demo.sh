#!/usr/bin/env bash
# The main job on the bundled default corpus, on a CPU: converts music21's corpus to
# MIDI (cached), builds the dataset, trains configs/default.py, writes four samples
# (MIDI, WAV, piano-roll PNG), evaluates the model against baselines and the real
# music (report, plots, and one HTML page with every sample to listen to), and prints
# what it wrote, the page first. Run it again and it reuses
# the dataset and resumes (or finishes) training.
# Run scripts/setup.sh first (the README's first command does both).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DATA=data
WORKDIR=runs/default

if [ -f "$DATA/midi_pieces/music21/1.0.0/dataset_info.json" ]; then
  echo "dataset: $DATA/midi_pieces/music21/1.0.0 (already built)"
else
  "$PY" -m data_pipeline.build --corpus music21 --data_dir "$DATA"
fi
"$PY" -m jaxmusic.train --config configs/default.py --workdir "$WORKDIR" \
  --config.data_dir="$DATA/midi_pieces/music21"
"$PY" -m jaxmusic.sample --workdir "$WORKDIR" --out_dir "$WORKDIR/samples" --num_outputs 4 \
  --num_notes 256 --png --wav
"$PY" -m jaxmusic.evaluate --workdir "$WORKDIR" --json "$WORKDIR/eval.json" --plots "$WORKDIR/eval_plots"
echo "the run's page: $WORKDIR/eval.html (open it in a browser; it needs no server)"
echo "wrote: dataset $DATA/midi_pieces/music21/1.0.0, checkpoints $WORKDIR/checkpoints," \
  "metrics $WORKDIR/metrics.jsonl (TensorBoard: $WORKDIR/tensorboard, with samples to hear)," \
  "samples $WORKDIR/samples/, evaluation $WORKDIR/eval.json and $WORKDIR/eval_plots/"
