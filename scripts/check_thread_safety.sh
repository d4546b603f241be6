#!/usr/bin/env bash
# Clang's thread-safety analysis over the coordinator and the worker: every .cc file under
# coordinator/ and worker/ (worker/core and the tests included), and under checkpoint/ and
# metrics/ whose classes they use, is parsed by Debian's clang++
# with -fsyntax-only -Wthread-safety -Werror, using the flags its build gives it
# (BUILD_DIR/compile_commands.json). It fails when a GUARDED_BY member is touched without its
# mutex, a REQUIRES function is called without it, a lock is taken twice or not released, ...
# (common/thread_annotations.h, common/mutex.h; docs/architecture.md, "Locking").
#
#   scripts/check_thread_safety.sh [-j N] [-v] BUILD_DIR [FILE...]
#
#   BUILD_DIR  a configured build folder (CMake writes compile_commands.json; proto/'s
#              generated headers must be built: `ninja -C BUILD_DIR flap_proto`)
#   FILE...    check these files instead of the whole list; a file the build does not compile
#              (a test fixture) gets the flags of coordinator/service.cc
#   -j N       files parsed in parallel (default 2)
#   -v         print each file's time
#
# Prints the warnings of each failing file and a summary line; exits 0 when every file is clean,
# 1 when one is not, 2 on bad usage or a missing tool.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

jobs=2 verbose=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -j) jobs=$2; shift 2 ;;
    -v) verbose=1; shift ;;
    -*) echo "check_thread_safety: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [-j N] [-v] BUILD_DIR [FILE...]" >&2; exit 2; }
build=$1; shift
[[ $build = /* ]] || build=$PWD/$build
db=$build/compile_commands.json
[[ -f $db ]] || { echo "check_thread_safety: no $db (configure BUILD_DIR with CMake first)" >&2; exit 2; }
clang=${CLANGXX:-clang++}
command -v "$clang" >/dev/null || { echo "check_thread_safety: $clang is missing (Debian package clang)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "check_thread_safety: python3 is missing" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

files=()
for f in "$@"; do
  [[ -f $f ]] || { echo "check_thread_safety: no file $f" >&2; exit 2; }
  files+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
done

# One shell command line a file, from the build's command for it: the compiler becomes clang++,
# the output and GCC-only options go, the analysis comes in.
python3 - "$db" "$root" "$tmp" "$clang" "${files[@]}" <<'EOF'
import json, os, shlex, sys

db, root, tmp, clang = sys.argv[1:5]
wanted = sys.argv[5:]
entries = {}
for e in json.load(open(db)):
    path = os.path.normpath(os.path.join(e["directory"], e["file"]))
    args = e.get("arguments") or shlex.split(e["command"])
    entries[path] = (e["directory"], args)

FOLDERS = ("coordinator", "worker", "checkpoint", "metrics")

# Options GCC takes and Clang refuses or warns about.
GCC_ONLY_PREFIXES = ("-fno-semantic-interposition", "-fconcepts-diagnostics-depth", "-Wduplicated-",
                     "-Wlogical-op", "-Wuseless-cast", "-Wno-maybe-uninitialized", "-Wno-stringop",
                     "-Wno-class-memaccess", "-fno-lifetime-dse")

def command(directory, args, source):
    out = [clang]
    rest = list(args)
    while rest and os.path.basename(rest[0]) in ("ccache", "sccache"):
        rest.pop(0)
    rest.pop(0)  # the compiler
    skip = False
    for a in rest:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if a in ("-c", "-MD", "-MMD") or a.startswith(GCC_ONLY_PREFIXES):
            continue
        if os.path.normpath(os.path.join(directory, a)) in entries or a.endswith((".cc", ".cpp")):
            continue  # the source file, put back below
        out.append(a)
    out += ["-fsyntax-only", "-Wthread-safety", "-Werror", "-Wno-unknown-warning-option", source]
    return "cd " + shlex.quote(directory) + " && " + " ".join(shlex.quote(a) for a in out)

if wanted:
    ref = entries.get(os.path.join(root, "coordinator/service.cc"))
    if ref is None:
        sys.exit("check_thread_safety: coordinator/service.cc is not in " + db)
    todo = [(w, entries.get(w, ref)) for w in wanted]
else:
    todo = sorted((p, e) for p, e in entries.items()
                  if p.endswith(".cc") and os.path.relpath(p, root).split(os.sep)[0] in FOLDERS)
    if not todo:
        sys.exit("check_thread_safety: no file of " + ", ".join(FOLDERS) + " in " + db)
with open(os.path.join(tmp, "list"), "w") as lst:
    for i, (path, (directory, args)) in enumerate(todo):
        with open(os.path.join(tmp, "%d.sh" % i), "w") as f:
            f.write(command(directory, args, path) + "\n")
        lst.write("%d %s\n" % (i, os.path.relpath(path, root)))
EOF

[[ -d $build/proto/gen ]] || echo "check_thread_safety: warning: $build/proto/gen is missing (build flap_proto first)" >&2

start=$(date +%s)
# Each file: its output in N.log, "exit-code milliseconds" in N.rc.
export tmp
cut -d' ' -f1 "$tmp/list" | xargs -P "$jobs" -I{} bash -c '
  t0=$(date +%s%N)
  rc=0; bash "$tmp/{}.sh" >"$tmp/{}.log" 2>&1 || rc=$?
  echo "$rc $(( ($(date +%s%N) - t0) / 1000000 ))" >"$tmp/{}.rc"' || true

failed=0 total=0
while read -r i name; do
  total=$((total + 1))
  read -r rc ms <"$tmp/$i.rc" || { rc=1 ms=0; }
  [[ $verbose = 1 ]] && printf '%6d ms  %s\n' "$ms" "$name"
  if [[ $rc != 0 ]]; then
    failed=$((failed + 1))
    echo "== $name (clang++ exit $rc)"
    cat "$tmp/$i.log"
  fi
done <"$tmp/list"
elapsed=$(( $(date +%s) - start ))
if [[ $failed -gt 0 ]]; then
  echo "thread safety: $failed of $total files fail ($elapsed s, -j $jobs)"
  exit 1
fi
echo "thread safety: $total files clean ($elapsed s, -j $jobs)"
