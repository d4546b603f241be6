#!/usr/bin/env bash
# Installs every Debian 12 package the project needs (idempotent) and builds it.
#   scripts/setup.sh            install packages, configure and build into build/
#   FLAP_SKIP_APT=1 ...         skip the package step (packages already present)
#   FLAP_BUILD_DIR=dir ...      build somewhere else
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev prometheus-cpp-dev libboost-program-options-dev
  libgtest-dev libgmock-dev
  libsndfile1-dev libsoxr-dev libarchive-dev libsentencepiece-dev
  nlohmann-json3-dev libxxhash-dev libcurl4-openssl-dev
  gnuplot-nox openssl
  python3-torch python3-torchaudio
  prometheus
  tar
  # tcmalloc for flap-worker: it keeps freed tensor buffers mapped (docs/benchmarks.md).
  libgoogle-perftools-dev
  libgloo-dev
  openmpi-bin
  # Slurm's mpi/pmix plugin dlopens the unversioned libpmix.so, which only libpmix-dev
  # installs (docs/slurm.md); scripts/check_runtime_deps.sh checks this list is complete.
  slurm-wlm munge libpmix2 libpmix-dev
)

if [[ "${FLAP_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if (( ${#missing[@]} )); then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

BUILD_DIR="${FLAP_BUILD_DIR:-build}"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# Paths relative to the checkout, so that clones in other folders share the cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build "$BUILD_DIR" -j"${FLAP_JOBS:-2}"
