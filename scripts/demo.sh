#!/usr/bin/env bash
# The demo: a local ablation sweep. Installs and builds (scripts/setup.sh), generates the
# built-in synthetic dataset, then `flapctl sweep run` starts flap-coordinator and two worker
# groups on this machine and runs configs/demo-sweep.ini: tiny FLAP with masking ratio 0, 0.5
# or 0.75, two seeds each, every trial on the same training time budget. It ends with the
# ablation report (DEMO_RUN/report/report.md), whose tables are printed here; the last one is
# masking ratio against retrieval at the end of the equal budget and the time to the target.
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
sed -n '/^## Retrieval per cell/,/^## Trials/p' "$RUN/report/report.md" | sed '$d'
sed -n '/^## Equal budgets/,/^## Retrieval per cell/p' "$RUN/report/report.md" | sed '$d'
