#!/usr/bin/env bash
# bench/tests/e2e_quickstart.sh: scripts/quickstart.lua on a small slice of Fashion-MNIST
# (1024 training images, one epoch): it runs, records train/loss every log_every steps and
# eval/acc, eval/loss per epoch, ends FINISHED and writes the report and its Markdown twin.
# usage: bash e2e_quickstart.sh WB_BINARY REPO_ROOT   (exit 0 pass, 1 fail, 77 skip)
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

out=$("$WB" run "$ROOT/scripts/quickstart.lua" --train-size 1024 --epochs 1 --log_every 8 --batch 32 2>err.txt); rc=$?
check "quickstart exits 0" test $rc -eq 0
[ $rc -eq 0 ] || cat err.txt >&2
check "prints the test accuracy" has "$out" "epoch 1: test accuracy"
check "progress lines on stderr" grep -qE "^epoch 1/1  32/32 \(100%\)  loss [0-9.]+  [0-9]+ samples/s" err.txt
check "prints where the report is" has "$out" "report: results/quickstart.html"
check "HTML report written" test -s results/quickstart.html
check "Markdown report written" test -s results/quickstart.md
show=$("$WB" show 1 2>&1)
check "run FINISHED" has "$show" "status      FINISHED"
check "params recorded" grep -qE "train_size +1024" <<<"$show"
check "eval/acc recorded" grep -qE "eval/acc +0\.[0-9]+ +step 32" <<<"$show"
check "eval/loss recorded" grep -qE "eval/loss +[0-9.]+ +step 32" <<<"$show"
check "report recorded as an artifact" has "$show" "results/quickstart.html (report)"
csv=$("$WB" export --format csv)
check "train/loss every 8 steps" test "$(grep -c ',metric,train/loss,' <<<"$csv")" = 4
# accuracy from the stored value: better than chance (0.1) after 32 steps on 1024 images
acc=$(grep ',metric,eval/acc,' <<<"$csv" | cut -d, -f12)
check "accuracy above chance ($acc)" awk -v a="$acc" 'BEGIN { exit !(a > 0.4 && a <= 1) }'

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
