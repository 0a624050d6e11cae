#!/usr/bin/env bash
# Run make targets one after another, keep going after a failure, and end with a pytest-style summary.
#   tests/run-suite.sh lint sanity unit molecule-common ...
# Each step's output is shown and kept in .tmp/logs/<step>.log. Exit status: non-zero if any step failed.
set -uo pipefail
mkdir -p .tmp/logs
passed=() failed=()
start=$(date +%s)
for step in "$@"; do
  printf '\n===== %s =====\n' "$step"
  t0=$(date +%s)
  if make --no-print-directory "$step" 2>&1 | tee ".tmp/logs/$step.log"; then
    passed+=("$step"); verdict=PASSED
  else
    failed+=("$step"); verdict=FAILED
  fi
  printf -- '----- %s %s in %ss\n' "$step" "$verdict" "$(( $(date +%s) - t0 ))"
done
elapsed=$(( $(date +%s) - start ))
echo
echo "===== short test summary ====="
for s in "${passed[@]}"; do echo "PASSED $s"; done
for s in "${failed[@]}"; do echo "FAILED $s (log: .tmp/logs/$s.log)"; done
summary="${#passed[@]} passed"
[ ${#failed[@]} -eq 0 ] || summary="${#failed[@]} failed, $summary"
echo "===== $summary in ${elapsed}s ====="
[ ${#failed[@]} -eq 0 ]
