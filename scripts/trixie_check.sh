#!/usr/bin/env bash
# The tree on the next Debian and on a CUDA LibTorch, proven without a GPU: builds the tree in a
# Debian 13 (trixie) root made with debootstrap, against Debian 13's LibTorch 2.6 and every
# other dependency from Debian 13 (GCC 14, gRPC, protobuf, RocksDB, prometheus-cpp, Boost,
# Open MPI, Slurm, ...), and runs its tests there.
#
#   scripts/trixie_check.sh cpu [CTEST ARGS]  (a) CPU LibTorch 2.6: the whole tree, warnings as
#                                             errors, then scripts/test.sh's whole suite (or the
#                                             ctest selection given) in the root
#   scripts/trixie_check.sh core              the LibTorch-only core (FLAP_CORE_ONLY), warnings as
#                                             errors, and its unit tests on CPU LibTorch 2.6 (CI)
#   scripts/trixie_check.sh cuda              (b) CUDA LibTorch 2.6 + CUDA 12.4 + NCCL 2.22: the
#                                             whole tree built and linked with CUDA and NCCL; then
#                                             every test binary that can start without cuDNN
#   scripts/trixie_check.sh clean             removes the cached roots
#
# Before landing a change that touches worker/core, a CMakeLists.txt or a dependency's API, run
# `scripts/trixie_check.sh cpu` (docs/gpu.md).
#
# Roots are cached in $FLAP_TRIXIE_DIR (default /var/cache/flap-trixie): base (debootstrap, about
# 1 minute), cpu and cuda (copies of base with their packages; cuda is about 10 GB). A root is
# built from nothing when absent and reused, packages and ccache included, when present. The
# checkout is bind-mounted at /flap in the root; builds go to build-trixie-{core,cpu,cuda}/.
# Needs root (debootstrap, chroot, mounts) and Debian's archive; every mount is undone and every
# process left in the root is killed on exit.
#
# cuDNN: Debian's libtorch-cuda needs libcudnn.so.9, which Debian does not ship: its
# nvidia-cudnn package downloads cuDNN from the vendor when the licence is accepted. Here the
# download is declined (debconf), so the CUDA binaries link (with
# -Wl,--unresolved-symbols=ignore-in-shared-libs: what libtorch_cuda.so itself takes from cuDNN
# is left unresolved; every symbol of the project's own objects is still checked) but those
# that load libtorch_cuda.so cannot start; the run names each of them.
#
# Prints what each build is against (LibTorch, CUDA, NCCL, compiler) and the test counts.
# Exit status: 0 when everything built and every test that ran passed.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-}
[[ $mode =~ ^(cpu|core|cuda|clean)$ ]] || {
  sed -n '7,17p' "$0" >&2
  exit 2
}
shift
[[ $(id -u) == 0 ]] || { echo "trixie_check: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }

cache=${FLAP_TRIXIE_DIR:-/var/cache/flap-trixie}
mirror=${FLAP_TRIXIE_MIRROR:-http://deb.debian.org/debian}
start=$(date +%s)
say() { echo "trixie_check [$(($(date +%s) - start)) s]: $*"; }

mkdir -p "$cache"
lock() { # lock FD NAME: one run at a time per root
  eval "exec $1>\"\$cache/$2.lock\""
  flock -w 3600 "$1" || { echo "trixie_check: the $2 root in $cache is in use by another run" >&2; exit 1; }
}

if [[ $mode == clean ]]; then
  for r in base cpu cuda; do
    lock 9 "$r"
    rm -rf --one-file-system "${cache:?}/$r"
  done
  say "removed the roots in $cache"
  exit 0
fi

root=$cache/$mode
[[ $mode == core ]] && root=$cache/cpu
lock 8 "$(basename "$root")"

# --- mounts, undone on exit ---------------------------------------------------------------------
mounted=()
cleanup() {
  local p
  for p in /proc/[0-9]*; do  # processes a test left running in the root
    [[ $(readlink "$p/root" 2>/dev/null) == "$root" ]] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  # ip netns (the multinode tests) mounts the root's /run/netns; the tests remove the namespaces.
  mountpoint -q "$root/run/netns" && umount -l "$root/run/netns"
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() { # bind SRC DIR [r]: DIR in the root shows SRC (recursively with r)
  mkdir -p "$root/$2"
  mountpoint -q "$root/$2" && umount -R -l "$root/$2"
  if [[ ${3:-} == r ]]; then mount --rbind "$1" "$root/$2" && mount --make-rslave "$root/$2"; else mount --bind "$1" "$root/$2"; fi
  mounted+=("$root/$2")
}
in_root() { chroot "$root" env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive CI="${CI:-}" "$@"; }

# --- the roots ----------------------------------------------------------------------------------
lock 9 base
if [[ ! -f $cache/base/.flap-base ]]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap; }
  rm -rf --one-file-system "$cache/base"
  say "debootstrap trixie into $cache/base"
  debootstrap --variant=minbase --components=main,contrib,non-free,non-free-firmware trixie "$cache/base" "$mirror" \
    >"$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # No service starts from a package's install script in the root.
  printf '#!/bin/sh\nexit 101\n' >"$cache/base/usr/sbin/policy-rc.d"
  chmod 755 "$cache/base/usr/sbin/policy-rc.d"
  touch "$cache/base/.flap-base"
fi
if [[ ! -f $root/.flap-base ]]; then
  rm -rf --one-file-system "$root"
  cp -a "$cache/base" "$root"
fi
flock -u 9
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The host's name resolves in the root as on the host (Slurm and the address files use it).
cp /etc/hosts "$root/etc/hosts"
host=$(hostname)
getent hosts "$host" >/dev/null || echo "127.0.1.1 $host" >>"$root/etc/hosts"
grep -qw "$host" "$root/etc/hosts" || echo "127.0.1.1 $host" >>"$root/etc/hosts"
echo "$host" >"$root/etc/hostname"

# The root a mount point of its own, so that `unshare --mount` in it (tests/two_nodes.h) can
# make its mounts private.
mount --bind "$root" "$root"
mounted+=("$root")
bind /proc proc
bind /sys sys r  # with its cgroup mounts, which slurmd needs
bind /dev dev r
bind "$src" flap

apt_install() { # the packages not yet installed in the root
  local missing=() p
  for p in "$@"; do
    in_root dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]}"
  in_root apt-get update -qq
  in_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$root/tmp/apt.log" 2>&1 || {
    tail -30 "$root/tmp/apt.log" >&2
    return 1
  }
}

toolchain=(build-essential cmake ninja-build ccache pkg-config libgtest-dev libgmock-dev)
build_info() { # the build folder's build_info.txt, prefixed
  sed "s/^/trixie_check: $1: /" "$src/$2/build_info.txt"
}
count() { # a ctest log's counts line
  grep -E 'tests passed|tests failed out of' "$1" | tail -1
}

case $mode in
core)
  apt_install "${toolchain[@]}" libtorch-dev libopenblas0-pthread libgloo-dev
  say "configuring and building the core (FLAP_CORE_ONLY) in build-trixie-core"
  in_root bash -c 'cd /flap && export CCACHE_DIR=/root/.cache/ccache CCACHE_BASEDIR=/flap &&
    cmake -S . -B build-trixie-core -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLAP_CORE_ONLY=ON \
      -DFLAP_WARNINGS_AS_ERRORS=ON -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null &&
    cmake --build build-trixie-core -j"${0}"' "${FLAP_JOBS:-2}"
  build_info core build-trixie-core
  say "running the core's unit tests"
  set +e
  in_root bash -c 'cd /flap/build-trixie-core && ctest --output-on-failure --timeout 900 -L unit' | tee "$root/tmp/ctest.log"
  rc=${PIPESTATUS[0]}
  set -e
  say "core on $(head -1 "$src/build-trixie-core/build_info.txt"): $(count "$root/tmp/ctest.log")"
  exit "$rc"
  ;;
cpu)
  say "scripts/test.sh in the root (installs Debian 13's packages, builds build-trixie-cpu, runs the tests)"
  set +e
  in_root bash -c 'cd /flap && FLAP_BUILD_DIR=build-trixie-cpu FLAP_SKIP_GPU_DRY_RUN=1 \
    FLAP_SKIP_TRIXIE=1 FLAP_CMAKE_ARGS=-DFLAP_WARNINGS_AS_ERRORS=ON scripts/test.sh "$@"' test "$@" 2>&1 | tee "$root/tmp/test.log"
  rc=${PIPESTATUS[0]}
  set -e
  build_info cpu build-trixie-cpu || true
  grep -A200 'The following tests did not run' "$root/tmp/test.log" | grep -E '^\s+[0-9]+ - .*\(Skipped\)' |
    sed 's/^\s*/trixie_check: skipped: /' || true
  grep -A200 'The following tests FAILED' "$root/tmp/test.log" | grep -E '^\s+[0-9]+ - ' |
    sed 's/^\s*/trixie_check: failed: /' || true
  say "cpu: $(count "$root/tmp/test.log" || echo 'no test ran')"
  exit "$rc"
  ;;
cuda)
  # The vendor's cuDNN download is declined (see the top of this file).
  echo 'nvidia-cudnn nvidia-cudnn/question select I Decline' | in_root debconf-set-selections
  apt_install "${toolchain[@]}" libtorch-cuda-dev python3-torch-cuda nvidia-cuda-dev nvidia-cuda-toolkit libnccl-dev \
    libgloo-cuda-dev
  say "scripts/setup.sh in the root (the rest of Debian 13's packages; builds build-trixie-cuda)"
  in_root bash -c 'cd /flap && FLAP_BUILD_DIR=build-trixie-cuda FLAP_CMAKE_ARGS="-DFLAP_WARNINGS_AS_ERRORS=ON
    -DCMAKE_EXE_LINKER_FLAGS=-Wl,--unresolved-symbols=ignore-in-shared-libs
    -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--unresolved-symbols=ignore-in-shared-libs
    -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST" scripts/setup.sh' >"$root/tmp/setup.log" 2>&1 || {
    tail -60 "$root/tmp/setup.log"
    say "cuda: the build failed"
    exit 1
  }
  grep -iE 'warning' "$root/tmp/setup.log" | sed 's/^/trixie_check: cuda: /' || true
  build_info cuda build-trixie-cuda
  grep -q 'CUDA compiled in: ON' "$src/build-trixie-cuda/build_info.txt" || { say "cuda: CUDA is not compiled in"; exit 1; }
  grep -q 'NCCL compiled in: ON' "$src/build-trixie-cuda/build_info.txt" || { say "cuda: NCCL is not compiled in"; exit 1; }
  # Every program the build made, linked; those that cannot start say why.
  mapfile -t programs < <(cd "$src/build-trixie-cuda" && find . -type f -perm -u+x -not -path '*/CMakeFiles/*' \
    -not -name '*.so*' -not -name '*.sh' | sed 's|^\./||' | sort)
  ran=0 passed=0 failed=0 cannot=0 nocudnn=0 unstartable=()
  for p in "${programs[@]}"; do
    missing=$(in_root ldd "/flap/build-trixie-cuda/$p" 2>/dev/null | awk '/not found/ { print $1 }' | sort -u | tr '\n' ' ')
    if [[ -n $missing ]]; then
      echo "trixie_check: cannot start (${missing% } not found): $p"
      cannot=$((cannot + 1))
      unstartable+=("$p")
    fi
  done
  for p in "${programs[@]}"; do
    [[ $p == *_test ]] || continue
    [[ " ${unstartable[*]} " == *" $p "* ]] && continue
    # A test binary that runs one of the programs that cannot start (their paths are compiled
    # in: FLAP_WORKER_BIN, ...) is not run: every test of it that trains would fail for that.
    needs=""
    for u in "${unstartable[@]}"; do
      grep -qF "/flap/build-trixie-cuda/$u" "$src/build-trixie-cuda/$p" && needs+="$u "
    done
    if [[ -n $needs ]]; then
      echo "trixie_check: not run: $p runs ${needs% }, which cannot start without cuDNN"
      nocudnn=$((nocudnn + 1))
      continue
    fi
    ran=$((ran + 1))
    log=$root/tmp/$(basename "$p").log
    if in_root bash -c 'cd "/flap/build-trixie-cuda/$(dirname "$0")" && timeout 1800 "./$(basename "$0")" --gtest_brief=1' \
      "$p" >"$log" 2>&1; then
      passed=$((passed + 1))
      echo "trixie_check: passed: $p: $(grep -E '^\[  PASSED  \]' "$log")"
    elif grep -qE 'libcudnn|exited with 127' "$log"; then
      # It started, but a program it runs in turn (flap-worker through flapctl) did not: the
      # loader's exit code 127, cuDNN missing.
      nocudnn=$((nocudnn + 1))
      echo "trixie_check: failed where a program it runs could not start without cuDNN (exit 127): $p:" \
        "$(grep -E '^\[  (PASSED|FAILED)  \] [0-9]+' "$log" | tr '\n' ' ')"
    else
      failed=$((failed + 1))
      tail -40 "$log"
      echo "trixie_check: FAILED: $p"
    fi
  done
  say "cuda: ${#programs[@]} programs built and linked; $cannot cannot start without cuDNN; $nocudnn test binaries" \
    "not run or failed because they run one of those; of the others: $passed passed, $failed failed"
  ((failed == 0))
  ;;
esac
