#!/usr/bin/env bash
# scripts/check_thread_safety.sh refuses locking mistakes: it fails on
# tests/fixtures/thread_safety/violations.cc naming each of its seven mistakes, and passes
# clean.cc, the same class with its locking right (so the failure is the analysis', not the
# flags').
#   tests/thread_safety_check_test.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: $0 BUILD_DIR}
fixtures=$root/tests/fixtures/thread_safety
check=$root/scripts/check_thread_safety.sh

rc=0
out=$("$check" "$build" "$fixtures/violations.cc") || rc=$?
if [[ $rc != 1 ]]; then
  echo "FAIL: violations.cc: exit $rc, expected 1"; echo "$out"; exit 1
fi
expected=(
  "violations.cc:10:.*reading variable 'count_' requires holding mutex 'mu_'"
  "violations.cc:12:.*writing variable 'count_' requires holding mutex 'mu_' exclusively"
  "violations.cc:14:.*calling function 'BumpLocked' requires holding mutex 'mu_' exclusively"
  "violations.cc:17:.*calling function 'Wait' requires holding mutex 'mu_' exclusively"
  "violations.cc:20:.*mutex 'mu_' is still held at the end of function"
  "violations.cc:24:.*acquiring mutex 'mu_' that is already held"
  "violations.cc:34:.*reading variable 'count_' requires holding mutex 'mu_'"
  "thread safety: 1 of 1 files fail"
)
for e in "${expected[@]}"; do
  grep -q -- "$e" <<<"$out" || { echo "FAIL: no line matching: $e"; echo "$out"; exit 1; }
done

rc=0
out=$("$check" "$build" "$fixtures/clean.cc") || rc=$?
if [[ $rc != 0 ]]; then
  echo "FAIL: clean.cc: exit $rc, expected 0"; echo "$out"; exit 1
fi
grep -q "thread safety: 1 files clean" <<<"$out" || { echo "FAIL: no summary for clean.cc"; echo "$out"; exit 1; }
echo "ok: the check refuses violations.cc's seven mistakes and passes clean.cc"
