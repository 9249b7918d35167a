#!/usr/bin/env bash
# Steps/s of a config on 1, 2 and 4 simulated CPU devices with the global batch fixed.
#   bash scripts/device_scaling.sh DATA_DIR [CONFIG] [STEPS] [ROUNDS]
# On one CPU this measures the cost of splitting the batch and of the all-reduces,
# not a speed-up: the simulated devices share the same cores. Runs are interleaved
# (1, 2, 4, 1, 2, 4, ...) so that machine noise falls on all of them alike; each
# prints the median of its logged steps/s after the first (compiling) interval.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: device_scaling.sh DATA_DIR [CONFIG] [STEPS] [ROUNDS]}
CONFIG=${2:-configs/default.py}
STEPS=${3:-200}
ROUNDS=${4:-2}
TMP=$(mktemp -d)
for round in $(seq "$ROUNDS"); do
  for n in 1 2 4; do
    XLA_FLAGS="--xla_force_host_platform_device_count=$n" .venv/bin/python -m jaxmusic.train \
      --config "$CONFIG" --workdir "$TMP/r$round-d$n" --config.data_dir="$DATA" \
      --config.num_train_steps="$STEPS" --config.log_every=25 --config.eval_every=100000 \
      --config.checkpoint_every=100000 > /dev/null 2>&1
    .venv/bin/python - "$TMP/r$round-d$n" "$n" <<'PY'
import statistics, sys
from jaxmusic.metric_writer import read_metrics
rates = [r["steps_per_second"] for r in read_metrics(sys.argv[1]) if "steps_per_second" in r][1:]
print(f"devices {sys.argv[2]}: {statistics.median(rates):.2f} steps/s")
PY
  done
done
rm -rf "$TMP"
