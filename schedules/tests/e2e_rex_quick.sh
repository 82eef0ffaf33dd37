#!/usr/bin/env bash
# schedules/tests/e2e_rex_quick.sh: scripts/rex.lua --profile quick end to end in a temporary
# directory and database: every point of the sweep (2 models x 2 optimizers x 4 budgets x 12
# schedules x 1 seed) FINISHED with eval/acc and the logged lr; the report (Markdown and HTML)
# has the verdict per setting, the mean ranks, the accuracy-against-budget tables and charts and
# the lr curves, its SVG is well-formed XML; a second run of the same command resumes (runs
# nothing) and rewrites the report. Prints the quick profile's wall time.
# usage: bash e2e_rex_quick.sh WB_BINARY REPO_ROOT   (exit 0 pass, 1 fail, 77 skip)
# Skipped without Debian's dataset-fashion-mnist.
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
# the study in two parts: the MLP first, then everything, which reuses the MLP's points
out1=$("$WB" run "$ROOT/scripts/rex.lua" --profile quick --models mlp --db "$T/rex.sqlite" 2>err.txt); rc=$?
check "MLP part exits 0" test $rc -eq 0
check "MLP part ran its 96 points" has "$out1" "96 ran, 0 reused, 0 skipped (already finished), 0 failed"
out=$("$WB" run "$ROOT/scripts/rex.lua" --profile quick --db "$T/rex.sqlite" 2>err.txt); rc=$?
t1=$(date +%s)
echo "quick profile: $((t1 - t0)) s (runs and reports)"
check "rex.lua exits 0" test $rc -eq 0
[ $rc -eq 0 ] || tail -30 err.txt >&2
check "192 runs announced" has "$out" "192 runs (2 models x 2 optimizers x 4 budgets x 1 seeds x 12 schedules)"
check "MLP points reused" has "$out" "96 of 192 points reused from earlier runs"
check "the rest ran" has "$out" "96 ran, 96 reused, 0 skipped (already finished), 0 failed"
check "prints where the report is" has "$out" "rex: report results/rex_quick.md (HTML: results/rex_quick.html, CSV: results/rex_quick.csv)"
check "CSV: a header and one row per point" test "$(wc -l < results/rex_quick.csv)" = 193
check "CSV rows are finished points" test "$(grep -c ',FINISHED$' results/rex_quick.csv)" = 192
md=results/rex_quick.md html=results/rex_quick.html
check "Markdown report written" test -s $md
check "HTML report written" test -s $html

runs=$("$WB" runs --experiment rex_quick --status FINISHED --db "$T/rex.sqlite")
check "194 FINISHED runs (two study runs + 192 points)" test "$(grep -c ' FINISHED ' <<<"$runs")" = 194
csv=$("$WB" export --format csv --experiment rex_quick --db "$T/rex.sqlite")
check "eval/acc for every point" test "$(grep -c ',metric,eval/acc,' <<<"$csv")" = 192
check "train/lr logged" test "$(grep -c ',metric,train/lr,' <<<"$csv")" -gt 10000
# accuracy from the store: the best run of the quick profile is well above chance (0.1)
best=$(grep ',metric,eval/acc,' <<<"$csv" | awk -F, '{ if ($(NF - 1) > m) m = $(NF - 1) } END { print m }')
check "best accuracy above 0.6 ($best)" awk -v a="$best" 'BEGIN { exit !(a > 0.6 && a <= 1) }'
show=$("$WB" show 1 --db "$T/rex.sqlite" 2>&1)
check "report recorded as artifacts" has "$show" "results/rex_quick.html (report)"

m=$(cat $md)
check "the command is in the report" has "$m" "wb run $ROOT/scripts/rex.lua --profile quick"
check "the reused points are in the report" has "$m" "96 of the 192 points were reused from earlier rex runs"
check "marked as the quick profile" has "$m" "Not the study's result."
check "verdict section" has "$m" "## The paper's claim, setting by setting"
check "16 verdict rows" test "$(grep -cE '^\| (mlp|cnn) \| (sgd|adam) \| [0-9]+% \|' $md)" = 16
check "verdict count" grep -qE "wb's runs agree with the claim in [0-9]+ of 16 settings against every schedule run, and in [0-9]+ of 16 against the other profiles" $md
check "mean rank table" has "$m" "| schedule | mean rank | low budgets (<= 25%) | high budgets (>= 50%) |"
for s in constant step multistep exponential linear cosine onecycle poly invsqrt "plateau:factor=0.5:patience=2" rex "rex:d=0.9"; do
  check "mean rank of $s" grep -qE "^\| (\*\*)?$s(\*\*)? \| (\*\*)?[0-9]+\.[0-9]+" $md
done
check "accuracy-against-budget tables" test "$(grep -c ': accuracy against budget' $md)" = 4
check "lr table" has "$m" "| rex | 1.0000 |"

h=$(cat $html)
check "six charts" test "$(grep -c '<svg ' $html)" = 6
check "bands drawn" has "$h" "<polygon points="
check "text is escaped" has "$h" "&lt;= 25%"
if command -v python3 >/dev/null; then
  check "SVG is well-formed XML" python3 -c '
import re, sys, xml.etree.ElementTree as ET
for s in re.findall(r"<svg .*?</svg>", open(sys.argv[1]).read(), re.S):
    ET.fromstring(s)' $html
fi

# resuming: nothing left to run; the report is written again
rm -f $md $html
out2=$("$WB" run "$ROOT/scripts/rex.lua" --profile quick --db "$T/rex.sqlite" 2>/dev/null); rc=$?
check "rerun exits 0" test $rc -eq 0
check "rerun reuses every point" has "$out2" "0 ran, 192 reused, 0 skipped (already finished), 0 failed"
check "rerun rewrites the report" test -s $md -a -s $html

# a bad schedule list fails before any run
err=$("$WB" run "$ROOT/scripts/rex.lua" --schedules rex,warmcos --db "$T/rex.sqlite" 2>&1); rc=$?
check "unknown schedule is an error" test $rc -ne 0
check "it lists the known schedules" has "$err" "unknown schedule 'warmcos'; known schedules: constant, step"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
