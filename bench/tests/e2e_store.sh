#!/usr/bin/env bash
# bench/tests/e2e_store.sh: the program against a difficult database: locked by another process
# (the store's "database is locked" message after the busy timeout, nothing written), not a
# database, truncated, and shared by two `wb run` processes at once (both succeed, nothing lost).
# usage: bash e2e_store.sh WB_BINARY REPO_ROOT   (exit 0 pass, 1 fail, 77 skip)
# Needs sqlite3 (the CLI) to hold a lock and to read the database directly.
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

cat >log.lua <<'EOF'
local wb = require "wb"
local opt = wb.args { steps = 10, tag = "a", spin = 0.0 }
local run <close> = wb.experiment { name = "store", params = opt }
for step = 1, opt.steps do
  run:log(step, { ["train/loss"] = 1 / step, ["train/step"] = step })
  if step % 500 == 0 then run:tag("progress", step) end
  local t = wb.time() while wb.time() - t < opt.spin do end
end
EOF

# ---- locked: another process holds an exclusive transaction for longer than the busy timeout
DB=locked.sqlite
"$WB" run log.lua --db $DB >/dev/null 2>&1
(echo "BEGIN EXCLUSIVE;"; sleep 3; echo "COMMIT;") | sqlite3 $DB &
holder=$!
sleep 0.5
out=$(WB_BUSY_TIMEOUT_MS=300 "$WB" run log.lua --db $DB 2>&1); rc=$?
check "locked: wb run fails" test $rc -ne 0
check "locked: the store's message" has "$out" "database is locked"
check "locked: message names the database" has "$out" "locked.sqlite"
wait $holder
check "locked: nothing half-written" test "$(sqlite3 $DB "select count(*) from runs")" = 1
out=$("$WB" run log.lua --db $DB 2>&1); rc=$?
check "after the lock: wb run succeeds" test $rc -eq 0

# ---- not a database
echo "these are not the bytes of a database" >junk.sqlite
out=$("$WB" run log.lua --db junk.sqlite 2>&1); rc=$?
check "not a database: wb run fails" test $rc -ne 0
check "not a database: message" has "$out" "junk.sqlite: file is not a wb result store (not a database)"
out=$("$WB" runs --db junk.sqlite 2>&1); rc=$?
check "not a database: wb runs fails" test $rc -ne 0
check "not a database: wb runs message" has "$out" "not a wb result store"
check "not a database: file untouched" test "$(cat junk.sqlite)" = "these are not the bytes of a database"

# ---- truncated
cp $DB trunc.sqlite
truncate -s $(($(stat -c %s trunc.sqlite) / 2)) trunc.sqlite
out=$("$WB" run log.lua --db trunc.sqlite 2>&1); rc=$?
check "truncated: wb run fails" test $rc -ne 0
check "truncated: malformed message" has "$out" "trunc.sqlite: database disk image is malformed"
out=$("$WB" show 1 --db trunc.sqlite 2>&1); rc=$?
check "truncated: wb show fails" test $rc -ne 0

# ---- a database in a directory that cannot be created
echo file >notadir
out=$("$WB" run log.lua --db notadir/x.sqlite 2>&1); rc=$?
check "bad directory: wb run fails" test $rc -ne 0
check "bad directory: message names the path" has "$out" "notadir"

# ---- two writers at once
DB=shared.sqlite
"$WB" run log.lua --db $DB --steps 3000 --spin 0.0004 --tag one >one.out 2>&1 &
a=$!
"$WB" run log.lua --db $DB --steps 3000 --spin 0.0004 --tag two >two.out 2>&1 &
b=$!
wait $a; ra=$?
wait $b; rb=$?
check "concurrent: first succeeds" test $ra -eq 0
check "concurrent: second succeeds" test $rb -eq 0
check "concurrent: both FINISHED" test "$(sqlite3 $DB "select group_concat(status) from runs")" = "FINISHED,FINISHED"
check "concurrent: every metric row written" test "$(sqlite3 $DB "select count(*) from metrics")" = 12000
check "concurrent: the two runs overlapped in time" test "$(sqlite3 $DB "select a.start_ms < b.end_ms and b.start_ms < a.end_ms from runs a, runs b where a.id=1 and b.id=2")" = 1
check "concurrent: params of each" test "$(sqlite3 $DB "select group_concat(value) from (select value from params where key='tag' order by value)")" = "one,two"
[ $ra -eq 0 ] || cat one.out >&2
[ $rb -eq 0 ] || cat two.out >&2

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
