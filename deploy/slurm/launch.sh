#!/bin/bash
# Launches a FLAP sweep on a Slurm cluster (docs/slurm.md): submits the coordinator job
# (coordinator.sbatch, which submits the sweep file) and, depending on it having started
# (--dependency=after:), the worker groups as a job array (workers.sbatch), then prints how to
# watch and cancel the sweep.
#
#   FLAP_RUN_DIR=/shared/runs/mask FLAP_DATA=/shared/data/clotho FLAP_BIN_DIR=/shared/flap/bin \
#     deploy/slurm/launch.sh configs/mask-sweep.ini
#
# The sweep file (and the base config beside it), the data, the binaries and FLAP_RUN_DIR must
# be on storage every node sees. Launching again on the same FLAP_RUN_DIR resumes: the
# coordinator reopens its journal and the groups resume trials from their checkpoints.
#
# Settings (environment variables; defaults in brackets). Both job scripts take more
# (FLAP_WORKER_ARGS, FLAP_COORDINATOR_ARGS, ...: see their headers); everything set here is
# exported to the jobs.
#   FLAP_RUN_DIR                  run folder on shared storage (required)
#   FLAP_DATA                     dataset folder on shared storage (required)
#   FLAP_GROUPS                   worker groups: array tasks [2]
#   FLAP_RANKS                    ranks per group: tasks of each step [1]
#   FLAP_SBATCH_ARGS              sbatch options for both jobs, e.g. "--partition=gpu --account=ml" [none]
#   FLAP_COORDINATOR_SBATCH_ARGS  sbatch options for the coordinator job, e.g. "--time=3-00:00:00" [none]
#   FLAP_WORKERS_SBATCH_ARGS      sbatch options for the worker array, e.g. "--gpus-per-task=1
#                                 --time=08:00:00" [none]
#   FLAP_TLS                      1: the coordinator serves TLS with the run's own CA, which the
#                                 groups and flapctl trust ($FLAP_RUN_DIR/coordinator-ca.pem);
#                                 0: plaintext (a network you trust only) [1]
#   SBATCH                        the sbatch command [sbatch]
#
# Prints "coordinator job: ID" and "worker job: ID" first, then the commands to watch and
# cancel. Exit codes: 0 submitted, 1 sbatch failed (nothing is left submitted), 2 bad usage.
set -euo pipefail

usage() { echo "usage: FLAP_RUN_DIR=DIR FLAP_DATA=DIR $0 SWEEP.ini   (see the comments at the top)" >&2; exit 2; }
[ $# -eq 1 ] || usage
[ -n "${FLAP_RUN_DIR:-}" ] || { echo "launch.sh: FLAP_RUN_DIR is not set" >&2; usage; }
[ -n "${FLAP_DATA:-}" ] || { echo "launch.sh: FLAP_DATA is not set" >&2; usage; }
[ -f "$1" ] || { echo "launch.sh: no sweep file $1" >&2; exit 2; }
FLAP_GROUPS=${FLAP_GROUPS:-2}
FLAP_RANKS=${FLAP_RANKS:-1}
FLAP_SBATCH_ARGS=${FLAP_SBATCH_ARGS:-}
FLAP_COORDINATOR_SBATCH_ARGS=${FLAP_COORDINATOR_SBATCH_ARGS:-}
FLAP_WORKERS_SBATCH_ARGS=${FLAP_WORKERS_SBATCH_ARGS:-}
SBATCH=${SBATCH:-sbatch}
FLAP_TLS=${FLAP_TLS:-1}
export FLAP_TLS
[[ $FLAP_GROUPS =~ ^[1-9][0-9]*$ ]] || { echo "launch.sh: FLAP_GROUPS must be a positive number, not '$FLAP_GROUPS'" >&2; exit 2; }
[[ $FLAP_RANKS =~ ^[1-9][0-9]*$ ]] || { echo "launch.sh: FLAP_RANKS must be a positive number, not '$FLAP_RANKS'" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$FLAP_RUN_DIR/logs"
# The jobs run elsewhere: every path they get is absolute.
FLAP_RUN_DIR=$(cd "$FLAP_RUN_DIR" && pwd)
FLAP_DATA=$(cd "$FLAP_DATA" && pwd)
FLAP_SWEEP_FILE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
export FLAP_RUN_DIR FLAP_DATA FLAP_SWEEP_FILE
# A worker group must not find the address or the end marker of an earlier run.
rm -f "$FLAP_RUN_DIR/coordinator.address" "$FLAP_RUN_DIR/sweeps.done"

# The sweep's name: `name` in its [sweep] section.
sweep=$(awk -F= '/^\[/ { in_sweep = ($0 ~ /^\[sweep\]/) } in_sweep && $1 ~ /^[ \t]*name[ \t]*$/ {
  gsub(/^[ \t]+|[ \t]+$/, "", $2); print $2; exit }' "$FLAP_SWEEP_FILE")

# shellcheck disable=SC2086  # the *_SBATCH_ARGS are lists of options
if ! coordinator=$($SBATCH --parsable --export=ALL --chdir="$FLAP_RUN_DIR" \
  --output="$FLAP_RUN_DIR/logs/coordinator-%j.out" \
  $FLAP_SBATCH_ARGS $FLAP_COORDINATOR_SBATCH_ARGS "$here/coordinator.sbatch"); then
  echo "launch.sh: the coordinator job was not submitted (sbatch's message above)" >&2
  exit 1
fi
coordinator=${coordinator%%;*}
# shellcheck disable=SC2086
if ! workers=$($SBATCH --parsable --export=ALL --chdir="$FLAP_RUN_DIR" \
  --dependency="after:$coordinator" --array="0-$((FLAP_GROUPS - 1))" --ntasks="$FLAP_RANKS" \
  --output="$FLAP_RUN_DIR/logs/workers-%A_%a.out" \
  $FLAP_SBATCH_ARGS $FLAP_WORKERS_SBATCH_ARGS "$here/workers.sbatch"); then
  scancel "$coordinator" || true
  echo "launch.sh: the worker array was not submitted (sbatch's message above); cancelled the coordinator job $coordinator" >&2
  exit 1
fi
workers=${workers%%;*}

flapctl=${FLAPCTL_BIN:-${FLAP_BIN_DIR:+$FLAP_BIN_DIR/}flapctl}
tls_line="
  export FLAP_COORDINATOR_INSECURE=1"
[ "$FLAP_TLS" = 0 ] || tls_line="
  export FLAP_COORDINATOR_TLS_CA=$FLAP_RUN_DIR/coordinator-ca.pem"
cat <<EOF
coordinator job: $coordinator
worker job: $workers (array of $FLAP_GROUPS group(s) x $FLAP_RANKS rank(s))
sweep: ${sweep:-?} from $FLAP_SWEEP_FILE
logs: $FLAP_RUN_DIR/logs/

Watch (once the coordinator job runs and has published its address):
  export FLAP_COORDINATOR=\$(cat $FLAP_RUN_DIR/coordinator.address)
  export FLAP_COORDINATOR_TOKEN_FILE=$FLAP_RUN_DIR/state/token$tls_line
  $flapctl sweep watch ${sweep:-SWEEP}
  squeue -j $coordinator,$workers
Cancel the sweep (the groups stop their trials and exit, then the coordinator job ends):
  $flapctl sweep cancel ${sweep:-SWEEP}
Or stop the jobs at once (the ranks still take a last checkpoint):
  scancel $workers $coordinator
Report, when the sweep ends: $FLAP_RUN_DIR/report/${sweep:-SWEEP}/report.md
EOF
