#!/usr/bin/env bash
# bench/train_bench.sh: the training benchmark, wb against PyTorch in one run on this machine.
#   bench/train_bench.sh [BUILD_DIR] [--quick]
# Trains the MLP and the LeNet-style CNN of ../shared/refbench/torch_train.py with wb
# (wb_bench_train) and with PyTorch (Debian's python3-torch), for 1 and 2 threads each,
# alternating the two so that drift on a shared machine hits both alike, and prints samples/s,
# test accuracy and the ratio of wb to PyTorch at PyTorch's best thread setting.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
quick=${2:-}
refbench=${WB_REFBENCH:-$root/../shared/refbench}
[ -x "$build/bench/wb_bench_train" ] || { echo "train_bench: build wb first ($build/bench/wb_bench_train missing)"; exit 1; }
[ -f "$refbench/torch_train.py" ] || { echo "train_bench: $refbench/torch_train.py not found (set WB_REFBENCH)"; exit 1; }
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "train_bench: PyTorch missing: apt-get install python3-torch"; exit 1; }
mlp_n=60000; lenet_n=12800
[ "$quick" = "--quick" ] && { mlp_n=12800; lenet_n=2560; }
out=$(mktemp)
for model in mlp lenet; do
  n=$mlp_n; [ $model = lenet ] && n=$lenet_n
  for t in 1 2; do
    ob=$((3 - t)) # PyTorch's fastest pairing on 2 cores: torch threads + OpenBLAS threads = 2
    OPENBLAS_NUM_THREADS=$ob /usr/bin/python3 "$refbench/torch_train.py" --model $model --threads $t --samples $n | tee -a "$out"
    "$build/bench/wb_bench_train" --model $model --threads $t --samples $n | tee -a "$out"
  done
done
echo
/usr/bin/python3 - "$out" <<'PY'
import sys, re
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) (\w+) threads=(\d+) samples_per_s=(\d+) test_acc=([\d.]+)", line)
    if m:
        who, model, t, sps, acc = m.groups()
        rows[(who, model, int(t))] = (int(sps), float(acc))
print(f"{'model':6} {'threads':>7} {'wb samples/s':>13} {'torch samples/s':>16} {'wb acc':>7} {'torch acc':>9}")
for model in ("mlp", "lenet"):
    for t in (1, 2):
        w, p = rows.get(("wb", model, t)), rows.get(("torch", model, t))
        if w and p:
            print(f"{model:6} {t:>7} {w[0]:>13} {p[0]:>16} {w[1]:>7.4f} {p[1]:>9.4f}")
    wb_best = max((rows[k] for k in rows if k[0] == "wb" and k[1] == model), default=None)
    pt_best = max((rows[k] for k in rows if k[0] == "torch" and k[1] == model), default=None)
    if wb_best and pt_best:
        print(f"{model}: wb best {wb_best[0]} samples/s vs PyTorch best {pt_best[0]}: ratio {wb_best[0] / pt_best[0]:.2f}x; "
              f"accuracy {wb_best[1]:.4f} vs {pt_best[1]:.4f} ({100 * (wb_best[1] - pt_best[1]):+.2f} points)")
PY
rm -f "$out"
