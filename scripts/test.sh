#!/usr/bin/env bash
# The whole test suite: builds llama.cpp's tools (the peer for parity tests, cached outside the
# repo), builds frugal, runs every test (unit, model, real), fuzzes the GGUF/model loader and the
# tokenizers for FRUGAL_FUZZ_SECONDS (default 50) each, then runs the unit and model tests again
# under AddressSanitizer + UndefinedBehaviorSanitizer (last, so ctest's summary closes the run).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="$(nproc)"

FRUGAL_PEER_BIN="$(bash scripts/build_llama_cpp.sh)"
export FRUGAL_PEER_BIN
export FRUGAL_MODEL="${FRUGAL_MODEL:-$(bash scripts/fetch_model.sh smollm2)}"
export FRUGAL_GEMMA_MODEL="${FRUGAL_GEMMA_MODEL:-$(bash scripts/fetch_model.sh gemma3)}"

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

# libFuzzer (clang, ASan+UBSan): any crash, leak or hang fails the suite (scripts/fuzz.sh).
bash scripts/fuzz.sh "${FRUGAL_FUZZ_SECONDS:-50}"

cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFRUGAL_SANITIZE=ON >/dev/null
cmake --build build-sanitize -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-sanitize --output-on-failure -j "$jobs" -L 'unit|model'
