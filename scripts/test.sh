#!/usr/bin/env bash
# Installs and builds (scripts/setup.sh), checks that everything the build and the tests load
# at run time came with setup.sh's packages (scripts/check_runtime_deps.sh: stops here, naming
# the package, if not), rehearses the GPU node check on the CPU (bench/gpu_check.sh --dry-run),
# builds the LibTorch-only core and runs its unit tests against Debian 13's LibTorch 2.6
# (scripts/trixie_check.sh core), then runs every test with ctest.
#   scripts/test.sh                 all tests
#   scripts/test.sh -L unit         one label: unit | integration | slow | static (the Clang checks)
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
# With no ctest filter, the LibTorch-only core and its unit tests on Debian 13's LibTorch 2.6 as
# well (scripts/trixie_check.sh core: a Debian 13 root made with debootstrap and cached; the
# LibTorch 2.x code paths run there). The whole tree on 2.6 is scripts/trixie_check.sh cpu.
if (( $# == 0 )) && [[ "${FLAP_SKIP_TRIXIE:-0}" != 1 ]]; then
  if [[ $(id -u) == 0 ]]; then
    scripts/trixie_check.sh core
  else
    echo "test.sh: the LibTorch 2.6 core check is skipped: scripts/trixie_check.sh needs root (debootstrap, chroot)"
  fi
fi
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j"${FLAP_TEST_JOBS:-1}" "$@"
