#!/usr/bin/env bash
# setup.sh: install wb's dependencies (Debian packages), build wb, and run the main job.
#   ./setup.sh              install, build, run the quickstart and print where its report is
#   ./setup.sh --deps-only  install the packages only
set -euo pipefail
cd "$(dirname "$0")"
PKGS="build-essential cmake pkg-config libopenblas-openmp-dev zlib1g-dev liblua5.4-dev
      libsqlite3-dev libcjson-dev dataset-fashion-mnist sqlite3 chromium python3"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
[ "${1:-}" = "--deps-only" ] && exit 0
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
# The main job: train the MLP on Fashion-MNIST, log it to results/wb.sqlite, write the report.
./build/bench/wb run scripts/quickstart.lua
echo "setup: done. The report is $(pwd)/results/quickstart.html (Markdown: results/quickstart.md)."
