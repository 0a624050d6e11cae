#!/usr/bin/env bash
# Run make targets one after another, keep going after a failure, and end with a pytest-style summary.
#   tests/run-suite.sh lint sanity unit scenario-backup+scenario-core molecule-app ...
# A step joined with + runs its targets side by side (scenarios that share nothing but the CPU: own containers,
# own network; each one's output is shown once it ends). Each target's output is kept in .tmp/logs/<target>.log.
# Exit status: non-zero if any target failed.
set -uo pipefail
mkdir -p .tmp/logs
passed=() failed=() times=()
start=$(date +%s)
record() { # target verdict seconds
  if [ "$2" = PASSED ]; then passed+=("$1"); else failed+=("$1"); fi
  times+=("$(printf '%-44s %-6s %6ss' "$1" "$2" "$3")")
  printf -- '----- %s %s in %ss\n' "$1" "$2" "$3"
}
for step in "$@"; do
  t0=$(date +%s)
  if [[ $step != *+* ]]; then
    printf '\n===== %s =====\n' "$step"
    if make --no-print-directory "$step" 2>&1 | tee ".tmp/logs/$step.log"; then verdict=PASSED; else verdict=FAILED; fi
    record "$step" "$verdict" "$(($(date +%s) - t0))"
    continue
  fi
  IFS=+ read -ra targets <<<"$step"
  printf '\n===== %s (side by side) =====\n' "${targets[*]}"
  declare -A pid=() rc=() took=()
  for t in "${targets[@]}"; do
    (
      make --no-print-directory "$t" >".tmp/logs/$t.log" 2>&1
      status=$?
      echo "$(($(date +%s) - t0))" >".tmp/logs/$t.seconds"
      exit $status
    ) &
    pid[$t]=$!
  done
  for t in "${targets[@]}"; do
    wait "${pid[$t]}"
    rc[$t]=$?
  done
  for t in "${targets[@]}"; do
    printf '\n===== %s =====\n' "$t"
    cat ".tmp/logs/$t.log"
    took[$t]=$(cat ".tmp/logs/$t.seconds" 2>/dev/null || echo "?")
    if [ "${rc[$t]}" -eq 0 ]; then verdict=PASSED; else verdict=FAILED; fi
    record "$t" "$verdict" "${took[$t]}"
  done
  times+=("$(printf '%-44s %-6s %6ss' "  (side by side, wall)" "" "$(($(date +%s) - t0))")")
  unset pid rc took
done
elapsed=$(($(date +%s) - start))
echo
echo "===== wall time per step ====="
printf '%s\n' "${times[@]}"
printf '%-44s %-6s %6ss\n' "total" "" "$elapsed"
echo
echo "===== short test summary ====="
for s in "${passed[@]}"; do echo "PASSED $s"; done
for s in "${failed[@]}"; do echo "FAILED $s (log: .tmp/logs/$s.log)"; done
summary="${#passed[@]} passed"
[ ${#failed[@]} -eq 0 ] || summary="${#failed[@]} failed, $summary"
echo "===== $summary in ${elapsed}s ====="
[ ${#failed[@]} -eq 0 ]
