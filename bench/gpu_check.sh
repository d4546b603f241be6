#!/usr/bin/env bash
# The GPU node check: on a machine with one NVIDIA GPU and PyTorch (CUDA) installed, but none
# of Debian's packages, builds the LibTorch-only core against PyTorch's LibTorch
# (FLAP_CORE_ONLY, the C++ ABI flag taken from torch), runs the core's tests with CUDA
# enabled (label unit and gpu: CUDA vs CPU forward, GPU -> CPU checkpoint, a one-rank NCCL
# group) and the training-step benchmark of the base preset (bf16 at r = 0, 0.5, 0.75, 2d and
# 1d, recon on and off; fp32 at r = 0 and 0.75), and writes every figure to a folder.
#
#   bench/gpu_check.sh                 on the GPU node (finishes in a few minutes)
#   bench/gpu_check.sh --prepare       here, before: copies GoogleTest's sources into .gpu-deps/
#                                      (the GPU node has no GTest; pass .gpu-deps along)
#   bench/gpu_check.sh --dry-run       the same steps on this machine's CPU and LibTorch, tiny
#                                      preset, few steps (CI runs this)
#
# Output: $OUT (or build-gpu/gpu_check) gets build.log, tests.log, bench.txt, bench.jsonl and
# environment.txt. Exit status: non-zero when the build or a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=gpu
case "${1:-}" in
  --prepare) mode=prepare ;;
  --dry-run) mode=dry ;;
  "") ;;
  *) echo "usage: $0 [--prepare | --dry-run]" >&2; exit 2 ;;
esac

if [[ $mode == prepare ]]; then
  src=/usr/src/googletest
  [[ -d $src ]] || { echo "gpu_check: $src missing (apt-get install googletest)" >&2; exit 1; }
  rm -rf .gpu-deps/googletest && mkdir -p .gpu-deps && cp -r "$src" .gpu-deps/googletest
  echo "gpu_check: GoogleTest sources in .gpu-deps/googletest"
  exit 0
fi

PY="${PYTHON:-python3}"
[[ $mode == dry ]] && PY=/usr/bin/python3
out="${OUT:-build-gpu/gpu_check}"
[[ $mode == dry ]] && out="${OUT:-build-core-dry/gpu_check}"
build="build-gpu"
[[ $mode == dry ]] && build="build-core-dry"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
start=$(date +%s)
say() { echo "gpu_check [$(( $(date +%s) - start )) s]: $*"; }

# What LibTorch to build against, and its C++ ABI.
read -r torch_version prefix abi cuda < <("$PY" - <<'PYEOF'
import torch
print(torch.__version__, torch.utils.cmake_prefix_path, int(torch._C._GLIBCXX_USE_CXX11_ABI),
      torch.version.cuda or "none")
PYEOF
)
cmake_args=(-DFLAP_CORE_ONLY=ON -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS=-D_GLIBCXX_USE_CXX11_ABI=$abi")
# Debian's python3-torch has no CMake files of its own; its LibTorch's are found by default.
[[ -f $prefix/Torch/TorchConfig.cmake ]] && cmake_args+=("-DCMAKE_PREFIX_PATH=$prefix")
if [[ ! -f /usr/include/gtest/gtest.h ]]; then
  gtest="${GTEST_SRC:-$PWD/.gpu-deps/googletest}"
  [[ -f $gtest/CMakeLists.txt ]] || { echo "gpu_check: no GoogleTest here: run '$0 --prepare' where it is and bring .gpu-deps/" >&2; exit 1; }
  cmake_args+=("-DFLAP_GTEST_SOURCE_DIR=$gtest")
fi
command -v ninja >/dev/null && cmake_args+=(-G Ninja)
if command -v ccache >/dev/null; then
  cmake_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  # Paths relative to the checkout, so that clones in other folders share the cache.
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
fi
{
  echo "torch $torch_version (CUDA $cuda), C++11 ABI $abi, cmake prefix $prefix"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  echo "cores: $(nproc)"
} | tee "$out/environment.txt"

say "configuring and building the core into $build"
jobs=$(nproc)
[[ $mode == dry ]] && jobs=2
if ! { cmake -S . -B "$build" "${cmake_args[@]}" && cmake --build "$build" -j"$jobs"; } >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  echo "gpu_check: the build failed (whole log: $out/build.log)" >&2
  exit 1
fi

say "running the core's tests"
labels="unit|gpu"
[[ $mode == dry ]] && labels="gpu"  # the CPU tests already run in the full build's ctest
if ! (cd "$build" && ctest -L "$labels" --output-on-failure --timeout 300 -j1) >"$out/tests.log" 2>&1; then
  tail -60 "$out/tests.log"
  echo "gpu_check: tests failed (whole log: $out/tests.log)" >&2
  exit 1
fi
grep -E "\*\*\*Skipped|\*\*\*Failed" "$out/tests.log" | sed 's/^/  /' || true
say "tests: $(grep -E 'tests passed' "$out/tests.log" | sed 's/tests passed, /passed, /' || echo '?')"

say "benchmarking the training step"
bench="$build/bench/train_step_bench"
: >"$out/bench.jsonl"
if [[ $mode == dry ]]; then
  runs=("--preset tiny --device cpu --precision bf16 --batch 8 --steps 2 --warmup 1 --ratios 0,0.75 --strategies 2d"
        "--preset tiny --device cpu --precision fp32 --batch 8 --steps 2 --warmup 1 --ratios 0,0.75 --strategies 2d --recon off")
else
  runs=("--preset base --device cuda --precision bf16 --steps 10 --warmup 3 --ratios 0,0.5,0.75 --strategies 2d,1d --recon on,off"
        "--preset base --device cuda --precision fp32 --steps 5 --warmup 2 --ratios 0,0.75 --strategies 2d --recon on")
fi
for args in "${runs[@]}"; do
  # shellcheck disable=SC2086
  "$bench" $args --out "$out/bench.jsonl" | tee -a "$out/bench.txt"
done
say "done: figures in $out"
