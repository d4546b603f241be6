#!/usr/bin/env bash
# Installs and builds (scripts/setup.sh), checks that everything the build and the tests load
# at run time came with setup.sh's packages (scripts/check_runtime_deps.sh: stops here, naming
# the package, if not), rehearses the GPU node check on the CPU (bench/gpu_check.sh --dry-run),
# then runs every test with ctest.
#   scripts/test.sh                 all tests
#   scripts/test.sh -L unit         one label: unit | integration | slow
#   scripts/test.sh -LE slow        everything but the slow ones
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${FLAP_BUILD_DIR:-build}"
scripts/check_runtime_deps.sh "$BUILD_DIR"
# With no ctest filter, the GPU node check's CPU rehearsal too: the LibTorch-only core built
# alone, its GPU tests (skipped here, saying why) and the benchmark (bench/gpu_check.sh).
if (( $# == 0 )) && [[ "${FLAP_SKIP_GPU_DRY_RUN:-0}" != 1 ]]; then
  bench/gpu_check.sh --dry-run
fi
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j"${FLAP_TEST_JOBS:-1}" "$@"
