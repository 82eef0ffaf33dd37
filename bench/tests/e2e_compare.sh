#!/usr/bin/env bash
# bench/tests/e2e_compare.sh: `wb compare` against statistics computed by hand: groups of
# FINISHED runs by the params that vary (seed left out) or by --group-by, --where filters, the
# final value of a metric (its last step), NaN runs counted apart, FAILED runs and runs without
# the metric left out, and the errors for a bad --where, an unknown param, metric or experiment.
# usage: bash e2e_compare.sh WB_BINARY REPO_ROOT   (exit 0 pass, 1 fail, 77 skip)
set -u
WB=$(realpath "$1")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
pass=0 fail=0
check() {
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name" >&2; fi
}
has() { grep -qF -- "$2" <<<"$1"; }
# row_is CSV KEY EXPECTED...: the CSV row starting with KEY (the first row when KEY is "") has the expected fields (numbers
# within 1e-5 relative; "-" must match exactly)
row_is() {
  local csv=$1 key=$2; shift 2
  local row
  if [ -z "$key" ]; then
    row=$(sed -n 2p <<<"$csv" | tr -d '\r')
  else
    row=$(tr -d '\r' <<<"$csv" | awk -v p="$key," 'index($0, p) == 1' | head -1)
  fi
  [ -n "$row" ] || { echo "no row $key in: $csv" >&2; return 1; }
  awk -F, -v want="$*" -v key="$key" '{
    n = split(want, w, " "); k = key == "" ? 0 : split(key, kk, ",")
    for (i = 1; i <= n; i++) {
      got = $(i + k); e = w[i]
      if (e == "-" || got == "-") { if (got != e) bad = 1; continue }
      d = got - e; if (d < 0) d = -d
      s = e < 0 ? -e : e; if (s < 1) s = 1
      if (d > 1e-5 * s) bad = 1
    }
    if (bad) { print "row " $0 " != " want > "/dev/stderr"; exit 1 }
  }' <<<"$row"
}

# Runs with known final values of eval/acc (logged at step 2 after a decoy value at step 1).
cat >make.lua <<'EOF'
local wb = require "wb"
local rows = {
  -- lr, model, seed, final eval/acc, status
  { 0.1, "mlp", 1, 0.80 }, { 0.1, "mlp", 2, 0.82 }, { 0.1, "mlp", 3, 0.84 },
  { 0.01, "mlp", 1, 0.70 }, { 0.01, "mlp", 2, 0.74 },
  { 0.001, "mlp", 1, 0 / 0 }, { 0.001, "mlp", 2, 0.5 },
  { 0.1, "mlp", 4, 0.0, "FAILED" },
  { 0.1, "cnn", 1, 0.90 }, { 0.1, "cnn", 2, 0.92 },
}
for _, r in ipairs(rows) do
  local run = wb.experiment { name = "cmp", params = { lr = r[1], model = r[2], seed = r[3] } }
  run:log(1, { ["eval/acc"] = 0.123 })
  run:log(2, { ["eval/acc"] = r[4] })
  run:finish(r[5])
end
local other = wb.experiment { name = "cmp", params = { lr = 0.1, model = "mlp", seed = 9 } }
other:log(1, { ["train/loss"] = 1 })
other:finish()
EOF
"$WB" run make.lua --db cmp.sqlite >/dev/null 2>&1 || { echo "make.lua failed"; exit 1; }
cmp() { "$WB" compare --db cmp.sqlite --experiment cmp --metric eval/acc "$@"; }

# By the params that vary (lr, model); t(0.975, 1) = 12.706204736, t(0.975, 2) = 4.302652730.
# lr 0.1 mlp: 0.80 0.82 0.84 -> mean 0.82, std 0.02, ci 4.30265273 * 0.02 / sqrt(3) = 0.0496828
# lr 0.01 mlp: 0.70 0.74 -> mean 0.72, std 0.0282843, ci 12.7062047 * 0.02 = 0.254124
# lr 0.001 mlp: NaN, 0.5 -> n 1, mean 0.5, one NaN
# lr 0.1 cnn: 0.90 0.92 -> mean 0.91, std 0.0141421, ci 12.7062047 * 0.01 = 0.127062
out=$(cmp --format csv 2>&1)
check "csv header" test "$(head -1 <<<"$out" | tr -d '\r')" = "lr,model,n,mean,std,ci95,ci_low,ci_high,nan"
check "lr 0.1 mlp" row_is "$out" "0.1,mlp" 3 0.82 0.02 0.0496828 0.770317 0.869683 0
check "lr 0.01 mlp" row_is "$out" "0.01,mlp" 2 0.72 0.0282843 0.254124 0.465876 0.974124 0
check "lr 0.001 mlp (NaN apart)" row_is "$out" "0.001,mlp" 1 0.5 - - - - 1
check "lr 0.1 cnn" row_is "$out" "0.1,cnn" 2 0.91 0.0141421 0.127062 0.782938 1.03706 0
check "four groups, in order of first run" test "$(tail -n +2 <<<"$out" | cut -d, -f1,2 | tr -d '\r' | tr '\n' ' ')" \
  = "0.1,mlp 0.01,mlp 0.001,mlp 0.1,cnn "
out=$(cmp)
check "text table" grep -qE "^0\.1 +mlp +3 +0\.82 +0\.02 +0\.04968" <<<"$out"
check "text: what was left out" has "$out" "left out: 1 not FINISHED, 1 without eval/acc, 0 by --where"

# --group-by and --where
# seed over mlp runs with lr >= 0.01: seed 1 {0.80, 0.70}, seed 2 {0.82, 0.74}, seed 3 {0.84}
out=$(cmp --format csv --group-by seed --where 'model=mlp, lr>=0.01')
check "group-by seed: seed 1" row_is "$out" "1" 2 0.75 0.0707107 0.635310 0.114690 1.385310 0
check "group-by seed: seed 2" row_is "$out" "2" 2 0.78 0.0565685 0.508248 0.271752 1.288248 0
check "group-by seed: seed 3" row_is "$out" "3" 1 0.84 - - - - 0
out=$(cmp --format csv --group-by lr,model --where "lr = 0.1 and model != 'cnn'")
check "where with and / != / quotes" test "$(tail -n +2 <<<"$out" | cut -d, -f1-3 | tr -d '\r')" = "0.1,mlp,3"
out=$(cmp --format csv --group-by lr --group-by model --where 'lr<0.05')
check "where <, repeated --group-by" test "$(tail -n +2 <<<"$out" | cut -d, -f1-3 | tr -d '\r' | tr '\n' ' ')" = "0.01,mlp,2 0.001,mlp,1 "
out=$(cmp --format csv --where 'lr=0.10')
check "where compares numbers as numbers" test "$(tail -n +2 <<<"$out" | cut -d, -f1-2 | tr -d '\r' | tr '\n' ' ')" = "mlp,3 cnn,2 "
out=$(cmp --format csv --where 'lr=0.1,model=mlp')
check "no varying param: one group" row_is "$out" "" 3 0.82 0.02 0.0496828 0.770317 0.869683 0

# errors
out=$(cmp --where 'lr~0.1' 2>&1); rc=$?
check "bad --where: usage error" test $rc -eq 2
check "bad --where: message" has "$out" "expected one of = == != < <= > >= after 'lr'"
out=$(cmp --where 'lr=0.1 or seed=2' 2>&1); rc=$?
check "bad --where joiner" has "$out" "expected ',' or 'and' before 'or seed=2'"
out=$(cmp --group-by width 2>&1); rc=$?
check "unknown --group-by param fails" test $rc -ne 0
check "unknown --group-by lists params" has "$out" "no selected run has that param; params: lr, model, seed"
out=$("$WB" compare --db cmp.sqlite --experiment cmp --metric eval/acc2 2>&1); rc=$?
check "unknown metric fails" test $rc -ne 0
check "unknown metric lists metrics" has "$out" "metrics logged: eval/acc, train/loss"
out=$("$WB" compare --db cmp.sqlite --experiment nope --metric eval/acc 2>&1); rc=$?
check "unknown experiment" has "$out" "experiment 'nope' has no runs"
out=$("$WB" compare --db cmp.sqlite --metric eval/acc 2>&1); rc=$?
check "missing --experiment" test $rc -eq 2
out=$(cmp --where 'lr>5' 2>&1); rc=$?
check "where matching nothing" has "$out" "and passes --where"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
