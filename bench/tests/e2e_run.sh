#!/usr/bin/env bash
# bench/tests/e2e_run.sh: `wb run` end to end: options from the command line and --config,
# --help, unknown options and bad values, what a run records (params, metrics with NaN, tags,
# artifacts, script digest, git commit), syntax and runtime errors, os.exit, and the commands
# around it (runs, show, export, report, version, help, unknown command), and WB_OP_PROFILE.
# usage: bash e2e_run.sh WB_BINARY REPO_ROOT   (exit 0 pass, 1 fail, 77 skip)
# Needs sqlite3 (the CLI) to read the database directly.
set -u
WB=$(realpath "$1")
command -v sqlite3 >/dev/null || { echo "sqlite3 not installed: skipped"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
pass=0 fail=0
check() { # check NAME COMMAND...: counts a pass when COMMAND succeeds
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name" >&2; fi
}
has() { grep -qF -- "$2" <<<"$1"; }      # has TEXT NEEDLE
q() { sqlite3 "$DB" "$1"; }              # one query on the current database

cat >train.lua <<'EOF'
local wb = require "wb"
local opt = wb.args { lr = 0.05, epochs = 3, model = "mlp", verbose = false }
local run <close> = wb.experiment { name = "e2e", params = opt }
for step = 1, opt.epochs do
  run:log(step, { ["train/loss"] = 1 / step, ["eval/acc"] = step / 10 })
end
run:log(opt.epochs + 1, { ["train/loss"] = 0 / 0 })
run:tag("note", "hello")
run:artifact("model.ckpt", "checkpoint")
print("model=" .. opt.model .. " lr=" .. opt.lr .. " verbose=" .. tostring(opt.verbose))
EOF

# ---- a run with overrides; the default database is results/wb.sqlite
out=$("$WB" run train.lua --lr 0.1 --epochs=4 --verbose 2>&1); rc=$?
DB=results/wb.sqlite
check "run exits 0" test $rc -eq 0
check "overrides reach the script" has "$out" "model=mlp lr=0.1 verbose=true"
check "default database created" test -f $DB
check "run FINISHED" test "$(q "select status from runs where id=1")" = FINISHED
check "params recorded" test "$(q "select group_concat(key||'='||value, ' ') from (select * from params where run_id=1 order by key)")" \
  = "epochs=4 lr=0.1 model=mlp seed=0 verbose=true"
check "metrics recorded" test "$(q "select count(*) from metrics where run_id=1 and key='train/loss'")" = 5
check "NaN kept as is_nan" test "$(q "select is_nan from metrics where run_id=1 and key='train/loss' and step=5")" = 1
check "tag recorded" test "$(q "select value from tags where run_id=1 and key='note'")" = hello
check "command line recorded" test "$(q "select value from tags where run_id=1 and key='wb.command'")" \
  = "wb run train.lua --lr 0.1 --epochs=4 --verbose"
check "artifact recorded" test "$(q "select path||':'||kind from artifacts where run_id=1")" = "model.ckpt:checkpoint"
sha=$(sha256sum train.lua | cut -d' ' -f1)
check "script sha256" test "$(q "select script_sha256 from runs where id=1")" = "$sha"
check "system info" test "$(q "select script||','||device||','||(threads>0)||','||(peak_rss_kb>0)||','||(wall_s>=0)||','||(host<>'') from runs where id=1")" \
  = "train.lua,cpu,1,1,1,1"
check "no git outside a repository" test "$(q "select ifnull(git_commit,'none') from runs where id=1")" = none

# ---- --config JSON, and the command line over it
cat >cfg.json <<'EOF'
{"lr": 0.3, "model": "cnn", "epochs": 2, "verbose": true}
EOF
out=$("$WB" run train.lua --config cfg.json --epochs 3 2>&1)
check "config values" has "$out" "model=cnn lr=0.3 verbose=true"
check "command line wins over config" test "$(q "select value from params where run_id=2 and key='epochs'")" = 3
echo '{"lr": [1, 2]}' >bad.json
out=$("$WB" run train.lua --config bad.json 2>&1); rc=$?
check "config: bad value type" test $rc -ne 0
check "config: message names the option" has "$out" "option lr must be a number, string or boolean"
echo '{"lr": ' >broken.json
out=$("$WB" run train.lua --config broken.json 2>&1); rc=$?
check "config: invalid JSON" test $rc -ne 0
check "config: invalid JSON message" has "$out" "is not valid JSON"

# ---- unknown options and bad values; --help
n_runs=$(q "select count(*) from runs")
out=$("$WB" run train.lua --lrr 0.1 2>&1); rc=$?
check "unknown option fails" test $rc -ne 0
check "unknown option lists the known ones" has "$out" "unknown option --lrr (from the command line); the script's options are: --epochs, --lr, --model, --verbose"
out=$("$WB" run train.lua --epochs 2.5 2>&1); rc=$?
check "bad integer fails" test $rc -ne 0
check "bad integer message" has "$out" 'option --epochs (from the command line): expected an integer, got "2.5"'
out=$("$WB" run train.lua --verbose maybe 2>&1)
check "bad boolean message" has "$out" "expected a boolean"
out=$("$WB" run train.lua --help 2>&1); rc=$?
check "--help exits 0" test $rc -eq 0
check "--help lists options with defaults" has "$out" "--lr 0.05"
check "--help shows string defaults" has "$out" '--model "mlp"'
check "no run created by these" test "$(q "select count(*) from runs")" = "$n_runs"

# ---- errors in scripts
printf 'local wb = require "wb"\nlocal run <close> = wb.experiment { name = "e2e-err" }\nlocal x = = 1\n' >syntax.lua
out=$("$WB" run syntax.lua 2>&1); rc=$?
check "syntax error exits non-zero" test $rc -ne 0
check "syntax error names file:line" has "$out" "syntax.lua:3:"
cat >runtime.lua <<'EOF'
local wb = require "wb"
local run <close> = wb.experiment { name = "e2e-err" }
run:log(1, { ["train/loss"] = 2.5 })
local function step(t) return t.field.value end
step({})
EOF
out=$("$WB" run runtime.lua 2>&1); rc=$?
check "runtime error exits non-zero" test $rc -ne 0
check "runtime error names file:line" has "$out" "runtime.lua:4:"
check "runtime error prints a traceback" has "$out" "stack traceback:"
check "traceback names the caller" has "$out" "runtime.lua:5:"
id=$(q "select max(id) from runs")
check "runtime error: run FAILED" test "$(q "select status from runs where id=$id")" = FAILED
check "runtime error: message recorded" has "$(q "select error from runs where id=$id")" "runtime.lua:4: attempt to index a nil value"
check "runtime error: metrics kept" test "$(q "select value from metrics where run_id=$id")" = 2.5
cat >noclose.lua <<'EOF'
local wb = require "wb"
local run = wb.experiment { name = "e2e-err" }
error("failed without <close>")
EOF
"$WB" run noclose.lua >/dev/null 2>&1; rc=$?
id=$(q "select max(id) from runs")
check "run without <close>: exit non-zero" test $rc -ne 0
check "run without <close>: FAILED by the host" test "$(q "select status from runs where id=$id")" = FAILED
check "run without <close>: message" has "$(q "select error from runs where id=$id")" "noclose.lua:3: failed without <close>"
printf 'local wb = require "wb"\nlocal run = wb.experiment { name = "e2e-exit" }\nos.exit(3)\n' >exit3.lua
"$WB" run exit3.lua >/dev/null 2>&1; rc=$?
id=$(q "select max(id) from runs")
check "os.exit(3) exit code" test $rc -eq 3
check "os.exit(3) run FAILED" test "$(q "select status||':'||error from runs where id=$id")" = "FAILED:os.exit(3)"
printf 'local wb = require "wb"\nlocal run <close> = wb.experiment { name = "e2e-exit" }\nos.exit(true)\n' >exit0.lua
"$WB" run exit0.lua >/dev/null 2>&1; rc=$?
id=$(q "select max(id) from runs")
check "os.exit(true) exit code" test $rc -eq 0
check "os.exit(true) run FINISHED" test "$(q "select status from runs where id=$id")" = FINISHED
printf 'print(pcall(function() os.exit(4) end))\nprint("not reached")\n' >exit4.lua
out=$("$WB" run exit4.lua 2>&1); rc=$?
check "os.exit inside pcall still exits" test $rc -eq 4
check "os.exit inside pcall: nothing after it runs" test -z "$out"
printf 'local wb = require "wb"\nlocal run <close> = wb.experiment { name = "e2e-noargs" }\n' >noargs.lua
out=$("$WB" run noargs.lua --lr 1 2>&1); rc=$?
check "option for a script without wb.args fails" test $rc -ne 0
check "option without wb.args message" has "$out" "declares no options"

# ---- git commit and dirty flag of the script's repository
if command -v git >/dev/null; then
  mkdir repo && cp train.lua repo/ && (cd repo && git init -q && git add train.lua &&
    git -c user.name=t -c user.email=t@t commit -qm init) >/dev/null 2>&1
  "$WB" run repo/train.lua --db git.sqlite >/dev/null 2>&1
  head=$(git -C repo rev-parse HEAD)
  check "git commit recorded" test "$(sqlite3 git.sqlite "select git_commit||':'||git_dirty from runs where id=1")" = "$head:0"
  echo "-- changed" >>repo/train.lua
  "$WB" run repo/train.lua --db git.sqlite >/dev/null 2>&1
  check "git dirty flag" test "$(sqlite3 git.sqlite "select git_dirty from runs where id=2")" = 1
fi

# ---- progress lines: plain (not a terminal) every 5% or every `every` steps; a terminal
# gets one line redrawn in place
cat >progress.lua <<'EOF'
local wb = require "wb"
local opt = wb.args { every = 0 }
local bar = wb.progress { total = 100, label = "train", every = opt.every }
for step = 1, 100 do bar:update(step, { loss = 1 / step }) end
bar:close()
EOF
"$WB" run progress.lua 2>prog.txt
check "progress: every 5% when not a terminal" test "$(grep -c '^train  ' prog.txt)" = 20
check "progress: step, total, percent, value, rate" grep -qE "^train  100/100 \(100%\)  loss 0\.01  [0-9.]+ steps/s" prog.txt
"$WB" run progress.lua --every 25 2>prog.txt
check "progress: every N steps" test "$(grep -c '^train  ' prog.txt)" = 4
if command -v script >/dev/null; then
  script -qfec "$WB run progress.lua" /dev/null >tty.txt 2>&1
  check "progress: a terminal gets carriage returns" grep -q $'\r' tty.txt
  check "progress: a terminal's line ends with done" grep -qE "train  100/100 \(100%\).*done in" tty.txt
fi

# ---- the commands
out=$("$WB" runs 2>&1)
check "runs lists runs" has "$out" "e2e-err"
out=$("$WB" runs --experiment e2e --status finished 2>&1)
check "runs filters" test "$(grep -c ' e2e ' <<<"$out")" = 2
out=$("$WB" runs --status lost 2>&1); rc=$?
check "runs: unknown status lists the valid ones" test $rc -ne 0
check "runs: status message" has "$out" "FINISHED"
out=$("$WB" show 1 2>&1)
check "show: params" has "$out" "lr                       0.1"
check "show: final metric" has "$out" "eval/acc"
check "show: NaN final value" grep -qE "train/loss +nan +step 5" <<<"$out"
check "show: artifact" has "$out" "model.ckpt (checkpoint)"
out=$("$WB" show 2>&1); rc=$?
check "show: missing run id" test $rc -eq 2
check "show: missing run id message" has "$out" "missing run id"
out=$("$WB" show 999 2>&1); rc=$?
check "show: unknown run fails" test $rc -eq 1
check "show: unknown run message" has "$out" "999"
"$WB" export --format csv --experiment e2e -o runs.csv
check "export csv header" has "$(head -1 runs.csv)" "experiment,run_id,run_name,parent_id,status"
check "export csv metric rows" test "$(grep -c ",metric,train/loss," runs.csv)" = 9
out=$("$WB" export --format json --experiment e2e 2>&1)
check "export json" has "$out" '"format":"wb-results"'
out=$("$WB" export --format xml 2>&1); rc=$?
check "export: unknown format" test $rc -eq 2
check "export: format message" has "$out" "formats: csv, json"
out=$("$WB" report --experiment e2e -o rep/e2e.html 2>&1); rc=$?
check "report exits 0" test $rc -eq 0
check "report writes HTML and Markdown" test -s rep/e2e.html -a -s rep/e2e.md
out=$("$WB" frobnicate 2>&1); rc=$?
check "unknown command exits 2" test $rc -eq 2
check "unknown command lists the commands" has "$out" "run runs show compare report export version help"
out=$("$WB" version)
check "version" grep -qE '^wb [0-9]+\.[0-9]+\.[0-9]+' <<<"$out"
out=$("$WB" help)
check "help lists commands" has "$out" "compare"
out=$("$WB" runs --help)
check "runs --help" has "$out" "usage: wb runs"
out=$("$WB" help compare)
check "help compare documents --where" has "$out" "--where"
out=$("$WB" runs --db missing.sqlite 2>&1); rc=$?
check "missing database is an error" test $rc -ne 0
check "missing database message" has "$out" "no result store at missing.sqlite"
check "commands do not create a database" test ! -e missing.sqlite

# ---- WB_OP_PROFILE=1: per-op wall times on stderr at exit, the script's output untouched
cat >prof.lua <<'EOF'
local wb = require "wb"
local l = wb.nn.Linear(8, 4)
local y = l(wb.randn { 16, 8 }):relu():sum()
y:backward()
print("done")
EOF
out=$(WB_OP_PROFILE=1 "$WB" run prof.lua --db prof.sqlite 2>prof.err); rc=$?
err=$(cat prof.err)
check "profiled run exits 0" test $rc -eq 0
check "profiled run's output" has "$out" "done"
check "profile header" has "$err" "# WB_OP_PROFILE:"
check "profile names matmul with its output shape" has "$err" "matmul [1,16,4]"
check "profile names the relu" has "$err" "unary [16,4]"
out=$("$WB" run prof.lua --db prof.sqlite 2>&1)
check "no profile without WB_OP_PROFILE" bash -c '! grep -q WB_OP_PROFILE <<<"$1"' _ "$out"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
