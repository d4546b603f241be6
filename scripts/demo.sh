#!/usr/bin/env bash
# The demo: installs and builds (scripts/setup.sh), generates the built-in synthetic dataset,
# trains the tiny FLAP model with masking and reconstruction on (configs/demo.ini), and
# prints the audio-text retrieval table of the untrained and the trained model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${FLAP_BUILD_DIR:-build}"
DATA="${FLAP_DEMO_DATA:-demo-data}"
OUT="${FLAP_DEMO_OUT:-demo-run}"

if [[ ! -f "$DATA/manifest.json" ]]; then
  "$BUILD_DIR/flapctl/flapctl" data synth --out "$DATA" --train 2000 --eval 200 --seed 1
fi
echo "== untrained model"
"$BUILD_DIR/worker/flap-worker" eval --config configs/demo.ini --data.path "$DATA" >/dev/null
echo "== training (configs/demo.ini): progress every 50 steps"
"$BUILD_DIR/worker/flap-worker" train --config configs/demo.ini --data.path "$DATA" \
  --train.output_dir "$OUT" "$@" >/dev/null
echo "summary: $OUT/summary.json, model: $OUT/model.pt"
