#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) into build-fuzz with clang, ASan and UBSan, writes the seed
# corpora, and runs each target for SECONDS (default 60). Exits non-zero on any crash, sanitizer
# report, leak, hang (-timeout) or memory blow-up (-rss_limit_mb), printing the reproducer's path.
#   scripts/fuzz.sh [SECONDS]      $FRUGAL_MODEL / $FRUGAL_GEMMA_MODEL add their real vocabularies
# Reproduce a finding: build-fuzz/fuzz/NAME_fuzzer PATH (runs that one input).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
build_dir="${FRUGAL_FUZZ_BUILD_DIR:-build-fuzz}"
jobs="$(nproc)"
cxx="${FRUGAL_FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}"
if [ -z "$cxx" ]; then
  echo "fuzz: clang++ not found (scripts/setup.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DFRUGAL_FUZZ=ON -DFRUGAL_BUILD_BENCH=OFF >/dev/null
cmake --build "$build_dir" -j "$jobs" --target gguf_model_fuzzer tokenizer_fuzzer jinja_fuzzer fuzz_seed_corpus

out="$build_dir/fuzz"
rm -rf "$out/seeds"
"$out/fuzz_seed_corpus" "$out/seeds" >&2

status=0
for target in gguf_model tokenizer jinja; do
  # The working corpus (first directory) keeps what each run learns for the next; the seeds and
  # the committed inputs of past findings (fuzz/regressions/, each also a unit test) are read only.
  corpus="$out/corpus/$target"
  inputs=("$corpus")
  [ -d "$out/seeds/$target" ] && inputs+=("$out/seeds/$target")
  # jinja: the chat templates of the tests (and llama.cpp's, when the peer's source is there) seed it.
  if [ "$target" = jinja ]; then
    inputs+=("tests/jinja/templates")
    for d in "${FRUGAL_CACHE:-$HOME/.cache/frugal}"/peer/llama_cpp_python-*/vendor/llama.cpp/models/templates; do
      [ -d "$d" ] && inputs+=("$d")
    done
  fi
  [ -d "fuzz/regressions/$target" ] && inputs+=("fuzz/regressions/$target")
  artifacts="$out/artifacts/$target"
  log="$out/$target.log"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz: $target for ${seconds}s (log $log)" >&2
  if ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    "$out/${target}_fuzzer" "${inputs[@]}" -dict="fuzz/$target.dict" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    # Last status line: executions, coverage (cov: edges, ft: features), corpus; then exec/s.
    grep -E '^#[0-9]+' "$log" | tail -n 1 >&2 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" >&2 || true
  else
    status=1
    echo "fuzz: $target FAILED" >&2
    grep -E 'ERROR:|SUMMARY:|runtime error|fuzzer: |Test unit written to' "$log" >&2 || tail -n 40 "$log" >&2
    for f in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
      echo "fuzz: reproducer $f  (run: $out/${target}_fuzzer $f)" >&2
    done
  fi
done
exit "$status"
