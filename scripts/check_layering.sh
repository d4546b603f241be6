#!/usr/bin/env bash
# The layering of the source tree (docs/architecture.md, "Layers"): every #include "..." of a
# tracked source file names a file of its own folder or of a folder on a lower layer, never one
# on its own layer in another folder or on a higher one. Test code may also include test
# support: the tests/ folder and any folder named testing/. Library code never does.
#
#   layer 0  common
#   layer 1  config
#   layer 2  worker/core  sharding  proto
#   layer 3  checkpoint  metrics
#   layer 4  coordinator
#   layer 5  worker
#   layer 6  flapctl
#   layer 7  tests  bench
#
# Source files: every .h and .cc outside build*/ folders and hidden ones.
# Test code: files named *_test.cc and every file under tests/, bench/ or a testing/ folder.
# Prints each file's includes with --list; exits 1 naming every include that breaks the rule.
set -euo pipefail
cd "$(dirname "$0")/.."

list=0
[[ "${1:-}" == "--list" ]] && list=1

# The room of a path: its top folder, worker/core counted as one of its own.
room() {
  case "$1" in
    worker/core/*) echo worker/core ;;
    */*) echo "${1%%/*}" ;;
    *) echo . ;;
  esac
}

layer() {
  case "$1" in
    common) echo 0 ;;
    config) echo 1 ;;
    worker/core | sharding | proto) echo 2 ;;
    checkpoint | metrics) echo 3 ;;
    coordinator) echo 4 ;;
    worker) echo 5 ;;
    flapctl) echo 6 ;;
    tests | bench) echo 7 ;;
    *) echo "" ;;
  esac
}

is_test_code() {
  case "$1" in
    *_test.cc | tests/* | bench/* | */testing/* | testing/*) return 0 ;;
    *) return 1 ;;
  esac
}

is_test_support() {
  case "$1" in
    tests/* | */testing/* | testing/*) return 0 ;;
    *) return 1 ;;
  esac
}

failures=0
mapfile -t files < <(find . \( -path './build*' -o -path './.*' \) -prune -o -type f \( -name '*.h' -o -name '*.cc' \) -print |
  sed 's#^\./##' | sort)
for file in "${files[@]}"; do
  if [[ -z "$(layer "$(room "$file")")" ]]; then
    echo "check_layering: $file is in a folder with no layer ($(room "$file")): add it to scripts/check_layering.sh and docs/architecture.md" >&2
    failures=$((failures + 1))
  fi
done

# file:line:text of every quoted include, in one pass.
while IFS=: read -r file line_no text; do
  [[ "$text" =~ \"([^\"]+)\" ]] || continue
  inc="${BASH_REMATCH[1]}"
  [[ "$inc" == */* ]] || continue  # a file beside it
  ((list)) && echo "$file: $inc"
  from=$(room "$file")
  from_layer=$(layer "$from")
  [[ -n "$from_layer" ]] || continue
  if is_test_support "$inc"; then
    if ! is_test_code "$file"; then
      echo "$file:$line_no: library code includes test support $inc" >&2
      failures=$((failures + 1))
    fi
    continue
  fi
  to=$(room "$inc")
  [[ "$to" == "$from" ]] && continue
  to_layer=$(layer "$to")
  [[ -n "$to_layer" ]] || continue  # not one of ours
  if ((to_layer > from_layer)); then
    echo "$file:$line_no: includes $inc: $from (layer $from_layer) may not include $to (layer $to_layer, higher)" >&2
    failures=$((failures + 1))
  elif ((to_layer == from_layer)); then
    echo "$file:$line_no: includes $inc: $from and $to are on one layer ($from_layer) and may not include each other" >&2
    failures=$((failures + 1))
  fi
done < <(grep -HnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "${files[@]}")

if ((failures > 0)); then
  echo "check_layering: $failures include(s) break the layering (docs/architecture.md, \"Layers\")" >&2
  exit 1
fi
echo "check_layering: ${#files[@]} files, every include points down"
