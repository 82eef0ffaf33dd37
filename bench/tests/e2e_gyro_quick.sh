#!/usr/bin/env bash
# bench/tests/e2e_gyro_quick.sh: scripts/gyro.lua --profile quick end to end in a temporary
# directory and database: all 14 points (2 models x 7 methods x 1 seed) FINISHED with their
# accuracies and epoch times, and the report has both tables, the command and the verdicts.
# usage: bash e2e_gyro_quick.sh WB_BINARY REPO_ROOT   (exit 0 pass, 1 fail, 77 skip)
set -u
WB=$(realpath "$1")
ROOT=$(realpath "$2")
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] ||
  { echo "dataset-fashion-mnist not installed: skipped"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
pass=0 fail=0
check() {
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name" >&2; fi
}
has() { grep -qF -- "$2" <<<"$1"; }
t0=$(date +%s)
out=$("$WB" run "$ROOT/scripts/gyro.lua" --profile quick --db "$T/g.sqlite" 2>err.txt); rc=$?
echo "quick profile: $(( $(date +%s) - t0 )) s (runs and report)"
check "gyro.lua exits 0" test $rc -eq 0
[ $rc -eq 0 ] || tail -30 err.txt >&2
check "16 runs announced" has "$out" "16 runs (2 models x 1 seeds x 8 methods)"
check "all ran" has "$out" "16 ran, 0 reused, 0 skipped (already finished), 0 failed"
md=results/gyro_quick.md
check "report written" test -s $md
check "CSV: a header and one row per point" test "$(wc -l < results/gyro_quick.csv)" = 17
check "CSV rows are finished points" test "$(grep -c ',FINISHED$' results/gyro_quick.csv)" = 16
m=$(cat $md 2>/dev/null)
check "command in the report" has "$m" "wb run $ROOT/scripts/gyro.lua --profile quick"
check "marked as the quick profile" has "$m" "Not the study's result."
check "two tables of 8 methods" test "$(grep -cE '^\| (none|dropout|gyro[0-9]+x[0-9]+|block[0-9]*|blockgyro) \| [0-9.]+% ' $md)" = 16
check "verdicts" test "$(grep -c 'paper: up to' $md)" = 12
check "failed runs counted" test "$(grep -cE '\| [0-9]+ of 1 \|$' $md)" = 16
csv=$("$WB" export --format csv --experiment gyro_quick --db "$T/g.sqlite")
check "best-epoch accuracy for every point" test "$(grep -c ',metric,eval/best_test_acc,' <<<"$csv")" = 16
best=$(grep ',metric,eval/final_test_acc,' <<<"$csv" | awk -F, '{ if ($(NF - 1) > m) m = $(NF - 1) } END { print m }')
check "best accuracy above 0.6 ($best)" awk -v a="$best" 'BEGIN { exit !(a > 0.6 && a <= 1) }'
out2=$("$WB" run "$ROOT/scripts/gyro.lua" --profile quick --db "$T/g.sqlite" 2>/dev/null)
check "a second run reuses every point" has "$out2" "0 ran, 16 reused"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
