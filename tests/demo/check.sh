#!/usr/bin/env bash
# ctest `demo`: runs scripts/demo (README command #1) on the binaries of this
# build (DEMO_SKIP_BUILD=1: no install, no build) and checks what it prints:
# the table with a row per job, every job terminal, each succeeded job's first
# output URL and its local files, those files on disk with the sizes shown, the
# log tail, and all of it within a minute of wall time.
# Usage: check.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
src=$1 build=$2
work=$(mktemp -d /tmp/predictd-demo-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "--- demo output ---"
  cat "$work/out.txt"
  echo "FAIL: $*"
  exit 1
}

t0=$(date +%s%N)
rc=0
DEMO_SKIP_BUILD=1 BUILD_DIR=$build DEMO_WORK_DIR=$work "$src/scripts/demo" >"$work/out.txt" 2>&1 || rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$rc" = 0 ] || fail "scripts/demo exited $rc"
echo "demo_wall_ms=$ms"
[ "$ms" -lt 60000 ] || fail "the demo took ${ms} ms, over a minute"

jobs=$(sed -n 's/.*waiting for \([0-9]*\) jobs.*/\1/p' "$work/out.txt")
[ -n "$jobs" ] || fail "no 'waiting for N jobs' line"
grep -Eq '^id +model +status +units +credits +first output URL$' "$work/out.txt" || fail "no table header"

rows=0 files=0 problems=()
last_status="" last_id="" last_files=0
end_row() {
  if [ "$last_status" = succeeded ] && [ "$last_files" = 0 ]; then problems+=("job $last_id: succeeded without a local file"); fi
}
while IFS= read -r line; do
  if [[ $line =~ ^([0-9]+)\ +([^ ]+)\ +([a-z]+)\ +(.*)$ ]]; then
    end_row
    last_id=${BASH_REMATCH[1]} last_status=${BASH_REMATCH[3]} last_files=0
    rows=$((rows + 1))
    rest=${BASH_REMATCH[4]}
    case $last_status in
      succeeded)
        [[ $rest =~ ^[0-9]+\ +[0-9]+\ +https://[^\ ]+$ ]] ||
          problems+=("job $last_id: no units, credits and first output URL in '$rest'") ;;
      failed | canceled) ;;
      *) problems+=("job $last_id is not terminal: $last_status") ;;
    esac
  elif [[ $line =~ ^\ +local:\ (/[^ ]+)\ \(([0-9]+)\ B\)$ ]]; then
    path=${BASH_REMATCH[1]} bytes=${BASH_REMATCH[2]}
    last_files=$((last_files + 1)) files=$((files + 1))
    if [ ! -f "$path" ]; then
      problems+=("job $last_id: $path does not exist")
    elif [ "$(stat -c %s "$path")" != "$bytes" ]; then
      problems+=("job $last_id: $path has $(stat -c %s "$path") bytes, the table says $bytes")
    fi
  elif [[ $line =~ ^\ +not\ archived:\ (.*)$ ]]; then
    problems+=("job $last_id: not archived: ${BASH_REMATCH[1]}")
  fi
done <"$work/out.txt"
end_row
[ "$rows" = "$jobs" ] || problems+=("$rows rows in the table for $jobs jobs")
grep -q '^--- predictd log (tail) ---$' "$work/out.txt" || problems+=("no log tail")
tail_lines=$(sed -n '/^--- predictd log (tail) ---$/,/^(files kept in /p' "$work/out.txt" | grep -Evc '^(---|\(files kept in )')
[ "$tail_lines" -gt 0 ] || problems+=("the log tail is empty")
[ ${#problems[@]} = 0 ] || fail "$(printf '%s\n' "${problems[@]}")"
echo "demo: $rows jobs terminal, $files local files checked, ${ms} ms"
