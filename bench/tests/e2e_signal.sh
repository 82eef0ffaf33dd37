#!/usr/bin/env bash
# bench/tests/e2e_signal.sh: interrupted runs. SIGINT and SIGTERM mid-run end the run KILLED
# with every metric logged so far (exit 130 / 143), even when the script wraps its work in
# pcall; a run whose process is killed with SIGKILL is marked FAILED by the next open; and a
# sweep stopped by SIGINT resumes, running only the points that did not finish.
# usage: bash e2e_signal.sh WB_BINARY REPO_ROOT   (exit 0 pass, 1 fail, 77 skip)
# Needs sqlite3 (the CLI) to read the database directly.
set -u
WB=$(realpath "$1")
command -v sqlite3 >/dev/null || { echo "sqlite3 not installed: skipped"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
pass=0 fail=0
check() {
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name" >&2; fi
}
has() { grep -qF -- "$2" <<<"$1"; }
DB=$T/sig.sqlite
q() { sqlite3 "$DB" "$1"; }
# wait_for FILE: up to 10 s for the script to create FILE
wait_for() { for _ in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.05; done; return 1; }

# The script logs one value per step forever; after 50 steps it creates the file ready.
cat >forever.lua <<'EOF'
local wb = require "wb"
local opt = wb.args { marker = "ready", guarded = false }
local run <close> = wb.experiment { name = "sig" }
local step = 0
local function work()
  step = step + 1
  run:log(step, { ["train/loss"] = 1 / step })
  local t = wb.time() while wb.time() - t < 0.001 do end
  if step == 50 then io.open(opt.marker, "w"):close() end
end
while true do
  if opt.guarded then pcall(work) else work() end
end
EOF

for sig in INT TERM; do
  rm -f ready
  "$WB" run forever.lua --db "$DB" 2>err.txt &
  pid=$!
  wait_for ready
  kill -$sig $pid
  wait $pid
  rc=$?
  id=$(q "select max(id) from runs")
  want=$([ $sig = INT ] && echo 130 || echo 143)
  check "SIG$sig: exit $want" test $rc -eq $want
  check "SIG$sig: run KILLED" test "$(q "select status||':'||error from runs where id=$id")" = "KILLED:interrupted by SIG$sig"
  n=$(q "select count(*) from metrics where run_id=$id")
  check "SIG$sig: metrics kept (>= 50)" test "$n" -ge 50
  check "SIG$sig: no step lost" test "$(q "select max(step) from metrics where run_id=$id")" = "$n"
  check "SIG$sig: end time and wall time" test "$(q "select end_ms>=start_ms and wall_s>0 from runs where id=$id")" = 1
  check "SIG$sig: message" has "$(cat err.txt)" "interrupted by SIG$sig"
done

# A pcall in the script cannot swallow the interrupt.
rm -f ready
"$WB" run forever.lua --db "$DB" --guarded 2>/dev/null &
pid=$!
wait_for ready
kill -INT $pid
timeout 10 tail --pid=$pid -f /dev/null
wait $pid
rc=$?
id=$(q "select max(id) from runs")
check "pcall-guarded loop: exit 130" test $rc -eq 130
check "pcall-guarded loop: KILLED" test "$(q "select status from runs where id=$id")" = KILLED

# SIGKILL leaves the run RUNNING; the next open of the store marks it FAILED.
rm -f ready
"$WB" run forever.lua --db "$DB" 2>/dev/null &
pid=$!
wait_for ready
kill -KILL $pid
wait $pid 2>/dev/null
id=$(q "select max(id) from runs")
check "SIGKILL: left RUNNING" test "$(q "select status from runs where id=$id")" = RUNNING
out=$("$WB" runs --db "$DB" 2>&1)
check "SIGKILL: next open marks it FAILED" test "$(q "select status from runs where id=$id")" = FAILED
check "SIGKILL: reason recorded" has "$(q "select error from runs where id=$id")" "ended without finishing the run"

# A sweep stopped by SIGINT resumes: only unfinished points run again.
cat >sweep.lua <<'EOF'
local wb = require "wb"
local opt = wb.args { slow = 0.0 }
local run <close> = wb.experiment { name = "sig-sweep", params = { points = 6 } }
local res = run:sweep(wb.grid { k = { 1, 2, 3, 4, 5, 6 } }, function(p, child)
  child:log(1, { ["eval/acc"] = p.k })
  io.open("done." .. p.k, "w"):close()
  local t = wb.time() while wb.time() - t < opt.slow do end
end)
print(string.format("ran %d skipped %d failed %d", res.ran, res.skipped, res.failed))
EOF
SDB=$T/sweep.sqlite
"$WB" run sweep.lua --db "$SDB" --slow 0.4 >/dev/null 2>&1 &
pid=$!
wait_for done.2 # point 2 has logged and is still busy for 0.4 s
kill -INT $pid
wait $pid
rc=$?
sq() { sqlite3 "$SDB" "$1"; }
check "sweep SIGINT: exit 130" test $rc -eq 130
check "sweep SIGINT: parent KILLED" test "$(sq "select status from runs where id=1")" = KILLED
check "sweep SIGINT: point 1 FINISHED, point 2 KILLED" \
  test "$(sq "select group_concat(name||':'||status, ' ') from runs where parent_id=1")" = "k=1:FINISHED k=2:KILLED"
check "sweep SIGINT: the killed point kept its metric" \
  test "$(sq "select count(*) from metrics m join runs r on r.id=m.run_id where r.name='k=2'")" = 1
out=$("$WB" run sweep.lua --db "$SDB" --slow 0.4 2>&1)
check "sweep resume: only unfinished points ran" has "$out" "ran 5 skipped 1 failed 0"
check "sweep resume: point 1 reported skipped" has "$out" "(k=1) already FINISHED as run 2: skipped"
check "sweep resume: every point FINISHED once" \
  test "$(sq "select count(distinct name)||':'||count(*) from runs where parent_id is not null and status='FINISHED'")" = "6:6"
parent2=$(sq "select max(id) from runs where parent_id is null")
check "sweep resume: parent tagged with the earlier sweep" \
  test "$(sq "select value from tags where run_id=$parent2 and key='wb.sweep_resumes'")" = 1
out=$("$WB" run sweep.lua --db "$SDB" --slow 0.0 2>&1)
check "sweep: other params start a new sweep" has "$out" "ran 6 skipped 0 failed 0"
out=$("$WB" run sweep.lua --db "$SDB" --slow 0.0 2>&1)
check "sweep: a finished sweep is skipped whole" has "$out" "ran 0 skipped 6 failed 0"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
