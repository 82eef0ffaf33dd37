#!/usr/bin/env bash
# bench/train_bench.sh: the training benchmark, wb against PyTorch in one run on this machine.
#   bench/train_bench.sh [BUILD_DIR] [--quick]
# Trains the MLP and the LeNet-style CNN of ../shared/refbench/torch_train.py (same recipe:
# batch 128, SGD lr 0.05 momentum 0.9) with wb (wb_bench_train) and with PyTorch (Debian's
# python3-torch), alternating them so that drift on a shared machine hits both alike.
#  1. Speed: 1 and 2 threads each. PyTorch runs in each thread setting with the OpenBLAS
#     pairing its docstring recommends (torch threads + OpenBLAS threads = 2), once with
#     OpenBLAS's own kernel choice and, on AVX-512 CPUs, once more with OPENBLAS_CORETYPE=SkylakeX
#     (OpenBLAS 0.3.21 misdetects recent Intel CPUs as Prescott; wb corrects this for itself, so
#     PyTorch gets the same correction). PyTorch's best of all is the peer.
#  2. Accuracy: SEEDS seeds (default 5) of each at 2 threads (the accuracy does not depend on the
#     thread setting), mean and spread, because one run's test accuracy varies by +-1.5 points
#     with the seed at this recipe.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
quick=${2:-}
seeds=${SEEDS:-5}
refbench=${WB_REFBENCH:-$root/../shared/refbench}
[ -x "$build/bench/wb_bench_train" ] || { echo "train_bench: build wb first ($build/bench/wb_bench_train missing)"; exit 1; }
[ -f "$refbench/torch_train.py" ] || { echo "train_bench: $refbench/torch_train.py not found (set WB_REFBENCH)"; exit 1; }
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "train_bench: PyTorch missing: apt-get install python3-torch"; exit 1; }
mlp_n=60000; lenet_n=12800
[ "$quick" = "--quick" ] && { mlp_n=12800; lenet_n=2560; seeds=2; }
cores=("")
grep -qw avx512f /proc/cpuinfo && cores+=("SkylakeX")
out=$(mktemp)
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
torch() { # model threads seed coretype
  local ob=$((3 - $2))
  if [ -n "$4" ]; then
    OPENBLAS_CORETYPE=$4 OPENBLAS_NUM_THREADS=$ob /usr/bin/python3 "$refbench/torch_train.py" --model $1 --threads $2 --samples $n --seed $3 | sed "s/^torch /torch[$4] /"
  else
    env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=$ob /usr/bin/python3 "$refbench/torch_train.py" --model $1 --threads $2 --samples $n --seed $3 | sed "s/^torch /torch[default] /"
  fi
}
for model in mlp lenet; do
  n=$mlp_n; [ $model = lenet ] && n=$lenet_n
  for t in 1 2; do
    for c in "${cores[@]}"; do torch $model $t 0 "$c" | tee -a "$out"; done
    "$build/bench/wb_bench_train" --model $model --threads $t --samples $n --seed 0 | tee -a "$out"
  done
  for s in $(seq 1 $((seeds - 1))); do
    torch $model 2 $s "${cores[-1]}" | tee -a "$out"
    "$build/bench/wb_bench_train" --model $model --threads 2 --samples $n --seed $s | tee -a "$out"
  done
done
echo
/usr/bin/python3 - "$out" <<'PY'
import sys, re, statistics as st
rows = []
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) (\w+) threads=(\d+) samples_per_s=(\d+) test_acc=([\d.]+).*samples=(\d+)", line)
    if m:
        who, model, t, sps, acc, n = m.groups()
        rows.append((who, model, int(t), int(sps), float(acc)))
for model in ("mlp", "lenet"):
    print(f"== {model}")
    print(f"  {'who':16} {'threads':>7} {'runs':>5} {'median samples/s':>17} {'best samples/s':>15}")
    med, best = {}, {}
    for who in sorted({r[0] for r in rows if r[1] == model}):
        for t in (1, 2):
            v = [r[3] for r in rows if r[0] == who and r[1] == model and r[2] == t]
            if v:
                print(f"  {who:16} {t:>7} {len(v):>5} {st.median(v):>17.0f} {max(v):>15}")
                med[who] = max(med.get(who, 0), st.median(v))
                best[who] = max(best.get(who, 0), max(v))
    wbm, wbb = med.pop("wb", 0), best.pop("wb", 0)
    peer = max(med, key=med.get)
    peerb = max(best, key=best.get)
    print(f"  speed (medians, best thread setting of each): wb {wbm:.0f} vs PyTorch {med[peer]:.0f} ({peer}): {wbm / med[peer]:.2f}x")
    print(f"  speed (best single runs): wb {wbb} vs PyTorch {best[peerb]} ({peerb}): {wbb / best[peerb]:.2f}x")
    at2 = lambda w, col: [r[col] for r in rows if r[0] == w and r[1] == model and r[2] == 2]
    accs = lambda w: at2(w, 4)
    accpeer = max((w for w in {r[0] for r in rows} if w != "wb"), key=lambda w: len(accs(w)))
    # runs taken back to back (PyTorch, then wb, per seed at 2 threads): drift on a shared
    # machine hits a pair alike, so the median of the pairs' ratios is the steadiest figure
    sps = lambda w: at2(w, 3)
    ratios = sorted(a / b for a, b in zip(sps("wb"), sps(accpeer)))
    if ratios:
        print(f"  speed (back-to-back pairs at 2 threads, wb / {accpeer}): median {st.median(ratios):.2f}x "
              f"over {len(ratios)} pairs (range {ratios[0]:.2f}-{ratios[-1]:.2f}x)")
    wa, pa = accs("wb"), accs(accpeer)
    sd = lambda v: st.stdev(v) if len(v) > 1 else 0.0
    print(f"  test accuracy over {len(wa)} / {len(pa)} seeds: wb {st.mean(wa):.4f} +- {sd(wa):.4f}, "
          f"{accpeer} {st.mean(pa):.4f} +- {sd(pa):.4f}: {100 * (st.mean(wa) - st.mean(pa)):+.2f} points")
PY
rm -f "$out"
