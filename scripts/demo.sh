#!/usr/bin/env bash
# The demo: a local ablation sweep. Installs and builds (scripts/setup.sh), generates the
# built-in synthetic dataset, then `flapctl sweep run` starts flap-coordinator and two worker
# groups on this machine and runs configs/demo-sweep.ini: tiny FLAP with masking ratio 0, 0.5
# or 0.75, two seeds each, every trial on the same budget of model FLOPs. It ends with the
# ablation report (DEMO_RUN/report/report.md), whose tables are printed here; the last one is
# retrieval per masking ratio on validation and on the test split at the checkpoint validation
# chose, with the FLOPs trained there.
# Ctrl-C stops everything cleanly; running the script again resumes the sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${FLAP_BUILD_DIR:-build}"
DATA="${FLAP_DEMO_DATA:-demo-data}"
RUN="${FLAP_DEMO_RUN:-demo-run}"

if [[ ! -f "$DATA/manifest.json" ]]; then
  "$BUILD_DIR/flapctl/flapctl" data synth --out "$DATA" --train 1000 --val 200 --test 200 --seed 1
fi
echo "== sweep configs/demo-sweep.ini: flap-coordinator + 2 worker groups (logs in $RUN/logs)"
"$BUILD_DIR/flapctl/flapctl" sweep run configs/demo-sweep.ini --dir "$RUN" --groups 2 --data "$DATA" \
  --interval 15 "$@"
echo
echo "== report: $RUN/report/report.md"
# The evaluation sets, then time to target in FLOPs and seconds, the paired differences against
# ratio 0, and last the retrieval per cell: validation, and the test split on the checkpoint
# validation chose, with the FLOPs trained there.
section() { sed -n "/^## $1/,/^## /p" "$RUN/report/report.md" | sed '$d'; }
section "Evaluation sets"
section "Equal budgets and time to target"
section "Paired differences"
section "Retrieval per cell"
