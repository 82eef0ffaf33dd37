#!/usr/bin/env bash
# test.sh: build wb and run every test (CTest). Tests needing a GPU report "skipped".
set -euo pipefail
cd "$(dirname "$0")"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
cd build && ctest --output-on-failure -j"$(nproc)"
