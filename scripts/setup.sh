#!/usr/bin/env bash
# Installs every Debian 12 package the project needs (idempotent) and builds it.
#   scripts/setup.sh            install packages, configure and build into build/
#   FLAP_SKIP_APT=1 ...         skip the package step (packages already present)
#   FLAP_BUILD_DIR=dir ...      build somewhere else
#   FLAP_CMAKE_ARGS="..." ...   more CMake options (word-split), e.g. -DFLAP_WARNINGS_AS_ERRORS=ON
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  # A GPU node on Debian 13 installs libtorch-cuda-dev (and python3-torch-cuda) first (docs/gpu.md).
  'libtorch-dev|libtorch-cuda-dev' libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev prometheus-cpp-dev libboost-program-options-dev
  libgtest-dev libgmock-dev
  libsndfile1-dev libsoxr-dev libarchive-dev libsentencepiece-dev
  nlohmann-json3-dev libxxhash-dev libcurl4-openssl-dev
  # Byte-level BPE (sharding/bpe_tokenizer.h): ICU's Unicode classes; its test's Python reference
  # implementation (tests/bpe_reference.py) needs the regex module.
  libicu-dev python3-regex
  # The zero-shot confusion plot (worker/inference.h).
  libpng-dev
  gnuplot-nox openssl
  'python3-torch|python3-torch-cuda' python3-torchaudio
  prometheus
  tar
  # tcmalloc for flap-worker: it keeps freed tensor buffers mapped (docs/benchmarks.md).
  libgoogle-perftools-dev
  # LibTorch 2.x's c10d headers include gloo's; a CUDA LibTorch comes with gloo's CUDA build.
  'libgloo-dev|libgloo-cuda-dev'
  openmpi-bin
  # Slurm's mpi/pmix plugin dlopens the unversioned libpmix.so, which only libpmix-dev
  # installs (docs/slurm.md); scripts/check_runtime_deps.sh checks this list is complete.
  # A | B: the first that this release has (Debian 13 renamed libraries in its 64-bit time_t move).
  slurm-wlm munge 'libpmix2|libpmix2t64' libpmix-dev
  # The multi-node tests' two hosts: network namespaces and a veth link (tests/two_nodes.h).
  iproute2 util-linux
  # Clang's thread-safety analysis over the coordinator and the worker (scripts/check_thread_safety.sh).
  clang
)

if [[ "${FLAP_SKIP_APT:-0}" != 1 ]]; then
  installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  missing=() updated=0
  for p in "${PACKAGES[@]}"; do
    if [[ $p == *'|'* ]]; then
      IFS='|' read -r -a choices <<<"$p"
      p=""
      for c in "${choices[@]}"; do installed "$c" && p=$c && break; done
      [[ -n $p ]] && continue
      (( updated )) || { $SUDO apt-get update -qq; updated=1; }
      for c in "${choices[@]}"; do
        [[ $(apt-cache policy "$c" 2>/dev/null | sed -n 's/^ *Candidate: //p') =~ ^(\(none\))?$ ]] || { p=$c; break; }
      done
      [[ -n $p ]] || { echo "setup: none of ${choices[*]} is available from apt" >&2; exit 1; }
    fi
    installed "$p" || missing+=("$p")
  done
  if (( ${#missing[@]} )); then
    echo "setup: installing ${missing[*]}"
    (( updated )) || $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

BUILD_DIR="${FLAP_BUILD_DIR:-build}"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# Paths relative to the checkout, so that clones in other folders share the cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache ${FLAP_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"${FLAP_JOBS:-2}"
