#!/usr/bin/env bash
# bench/gpu_check.sh: the GPU session's check of the CUDA backend, in one run (under 8 minutes).
#   bench/gpu_check.sh [BUILD_DIR]        (default build-gpu; run from anywhere)
# On a machine with an NVIDIA GPU:
#  1. configures and builds wb with the CUDA backend (for the GPU's own architecture, to save
#     time; CI builds sm_80, sm_90 and PTX), after unpacking .devdeps when the build
#     dependencies are not installed (see ../shared/device/README.md);
#  2. runs the GPU tests (ctest -L gpu) and the op-conformance suite verbosely, the Lua device
#     test, and the CPU tests of the core (nothing may regress when CUDA is built in);
#  3. trains the MLP and the LeNet-style CNN of bench/train_bench.sh on the GPU with wb and, when
#     PyTorch with CUDA is installed, with PyTorch (same recipe: batch 128, SGD lr 0.05 momentum
#     0.9), and prints a table last. Fashion-MNIST comes from WB_FASHION_MNIST_DIR,
#     .devdeps/fashion-mnist or /usr/share/datasets/fashion-mnist; without it step 3 says so;
#  4. times block-wise against conventional dropout on the GPU (wb_bench_dropout --device cuda,
#     one mask per minibatch and 16 row groups);
#  5. runs the op-conformance suite under compute-sanitizer (memcheck) when it is installed.
# Full logs go to GPU_CHECK_LOGS (a folder; default $OUT when set, else the build folder).
# Exit status: non-zero when a build or test step failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-gpu}
cd "$root"
start=$(date +%s)
status=0
logs=${GPU_CHECK_LOGS:-${OUT:-$build}}
mkdir -p "$logs"
say() { printf '== %s (%ds)\n' "$*" $(($(date +%s) - start)); }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none): nothing to check"; exit 77
fi
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader
if [ -d .devdeps ] && ! pkg-config --exists lua5.4 2>/dev/null; then
  . .devdeps/unpack.sh
fi
# Debian's .pc files say prefix=/usr: when they come from an unpacked prefix (.devdeps), point
# pkg-config's paths into it (else CMake sees /usr/include/lua5.4, absent there).
pc=$(pkg-config --path lua5.4 2>/dev/null || true)
case "$pc" in
  /usr/*|"") ;;
  */usr/*) export PKG_CONFIG_SYSROOT_DIR=${pc%%/usr/*}; echo "pkg-config sysroot $PKG_CONFIG_SYSROOT_DIR" ;;
esac
export PATH=/usr/local/cuda/bin:$PATH
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
jobs=$(nproc)

say "configure ($build, CUDA arch ${cc}-real)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DWB_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${cc}-real" \
  >"$logs/cmake.log" 2>&1 || { tail -30 "$logs/cmake.log"; echo "gpu_check: configure failed"; exit 1; }
grep "wb:" "$logs/cmake.log"
grep -q "CUDA backend on" "$logs/cmake.log" || { echo "gpu_check: CMake did not enable the CUDA backend"; exit 1; }
say "build (-j$jobs)"
timeout 300 cmake --build "$build" -j"$jobs" >"$logs/build.log" 2>&1 || {
  grep -E "error|Error" "$logs/build.log" | head -40; echo "gpu_check: build failed"; exit 1; }

say "GPU tests: the op-conformance suite (full output in $logs/conformance.log)"
timeout 200 "$build/nn/nn_test_backend_ops" >"$logs/conformance.log" 2>&1
rc=$?
[ $rc = 0 ] || status=1
grep -c "^FAIL" "$logs/conformance.log" | sed 's/^/failed checks: /'
grep "^FAIL" "$logs/conformance.log" | head -30
tail -8 "$logs/conformance.log"
echo "nn_test_backend_ops exit status $rc"
say "Lua device test"
(cd "$build" && timeout 60 ctest -R lua_test_device --output-on-failure) >"$logs/lua_device.log" 2>&1 || status=1
tail -15 "$logs/lua_device.log"
say "CPU tests (must not regress with CUDA built in)"
(cd "$build" && timeout 200 ctest -j"$jobs" -LE gpu --output-on-failure) >"$logs/ctest_cpu.log" 2>&1 || status=1
grep -E "tests passed|Failed|\*\*\*" "$logs/ctest_cpu.log" | head -20

# ---- training benchmark on the GPU: wb against PyTorch
data=${WB_FASHION_MNIST_DIR:-}
for d in "$data" "$root/.devdeps/fashion-mnist" /usr/share/datasets/fashion-mnist; do
  [ -n "$d" ] && [ -f "$d/train-images-idx3-ubyte.gz" ] && { data=$d; break; }
done
out=$(mktemp)
if [ -z "$data" ] || [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
  echo "gpu_check: Fashion-MNIST not found (set WB_FASHION_MNIST_DIR, or copy the four .gz files of"
  echo "  /usr/share/datasets/fashion-mnist into .devdeps/fashion-mnist and carry .devdeps): no training benchmark"
else
  export WB_FASHION_MNIST_DIR=$data
  say "training benchmark on the GPU (data $data)"
  for model in mlp lenet; do
    n=60000; [ $model = lenet ] && n=12800
    timeout 120 "$build/bench/wb_bench_train" --device cuda --model $model --samples $n --seed 0 | tee -a "$out" || status=1
    timeout 60 "$build/bench/wb_bench_train" --model $model --threads "$jobs" --samples $((n / 5)) --seed 0 | tee -a "$out"
  done
  py=$(command -v python3 || true)
  if [ -z "$py" ] || ! "$py" -c "import torch, numpy; assert torch.cuda.is_available()" 2>/dev/null; then
    echo "gpu_check: PyTorch with CUDA is not installed here: no PyTorch peer in the table"
  else
    say "PyTorch on the GPU"
    timeout 180 "$py" - "$data" <<'PY' | tee -a "$out"
# torch_train.py's recipe (../shared/refbench) on the GPU; batches are indexed on the device.
import gzip, sys, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
D = sys.argv[1] + "/"
def idx(name, off):
    with gzip.open(D + name) as f:
        return np.frombuffer(f.read(), np.uint8, offset=off)
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
x = lambda n: torch.tensor(idx(n, 16).reshape(-1, 1, 28, 28) / 255.0, dtype=torch.float32)
y = lambda n: torch.tensor(idx(n, 8).astype(np.int64))
xtr, ytr = x("train-images-idx3-ubyte.gz"), y("train-labels-idx1-ubyte.gz")
xte, yte = x("t10k-images-idx3-ubyte.gz").to(dev), y("t10k-labels-idx1-ubyte.gz").to(dev)
MODELS = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                 nn.Linear(512, 10)),
    "lenet": lambda: nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, 10)),
}
for name, n in (("mlp", 60000), ("lenet", 12800)):
    torch.manual_seed(0)
    m = MODELS[name]().to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    order = torch.cat([torch.randperm(60000) for _ in range(n // 60000 + 1)])[:n]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, n, 128):
        b = order[i:i + 128]
        xb, yb = xtr[b].to(dev), ytr[b].to(dev)  # produced on the CPU and copied, as wb does
        opt.zero_grad()
        F.cross_entropy(m(xb), yb).backward()
        opt.step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    with torch.no_grad():
        acc = (m(xte).argmax(1) == yte).float().mean().item()
    print(f"torch[cuda] {name} threads=1 samples_per_s={n / dt:.0f} test_acc={acc:.4f} seconds={dt:.2f} samples={n}")
PY
  fi
fi

say "block-wise against conventional dropout on the GPU"
for g in 1 16; do
  timeout 60 "$build/bench/wb_bench_dropout" --device cuda --reps 7 --steps 5 --warmup 3 --groups $g \
    || status=1
done

if command -v compute-sanitizer >/dev/null 2>&1; then
  say "op-conformance suite under compute-sanitizer memcheck (full output in $logs/memcheck.log)"
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 "$build/nn/nn_test_backend_ops" \
    >"$logs/memcheck.log" 2>&1
  rc=$?
  grep -E "ERROR SUMMARY|cases on cuda" "$logs/memcheck.log" | tail -3
  grep -E -m 20 -A6 "Invalid|Error:" "$logs/memcheck.log" | head -60
  case $rc in
    0) echo "memcheck: clean" ;;
    124) echo "memcheck: did not finish in 150 s (not counted)" ;;
    *) echo "memcheck: exit status $rc"; status=1 ;;
  esac
else
  echo "gpu_check: compute-sanitizer not installed: no memcheck pass"
fi

say "summary"
nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | sed 's/^/device: /'
python3 - "$out" <<'PY' 2>/dev/null || cat "$out"
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) (\w+) threads=(\d+) samples_per_s=(\d+) test_acc=([\d.]+)", line)
    if m:
        rows[(m.group(1), m.group(2))] = (int(m.group(4)), float(m.group(5)))
print(f"{'model':6} {'wb[cuda] samples/s':>19} {'torch[cuda] samples/s':>22} {'wb/torch':>9} {'wb cpu samples/s':>17}  acc wb[cuda] / torch")
for model in ("mlp", "lenet"):
    w, t, c = rows.get(("wb[cuda]", model)), rows.get(("torch[cuda]", model)), rows.get(("wb", model))
    f = lambda r: f"{r[0]}" if r else "-"
    ratio = f"{w[0] / t[0]:.2f}x" if w and t else "-"
    acc = f"{w[1]:.4f} / {t[1]:.4f}" if w and t else (f"{w[1]:.4f} / -" if w else "-")
    print(f"{model:6} {f(w):>19} {f(t):>22} {ratio:>9} {f(c):>17}  {acc}")
PY
rm -f "$out"
echo "gpu_check: $([ $status = 0 ] && echo PASS || echo FAIL) in $(($(date +%s) - start)) s"
exit $status
