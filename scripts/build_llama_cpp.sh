#!/usr/bin/env bash
# Builds llama.cpp's tools (the peer frugal is measured against) from the llama-cpp-python
# source package on PyPI, into a cache outside the repo. Prints the bin directory on stdout.
#
# llama.cpp is built for this host (GGML_NATIVE=ON), with its AMX kernels only where they really
# run. Two things can break them: the host (CPUID advertises AMX but the kernel or hypervisor does
# not enable tile state, so the first tile instruction traps: SIGILL) and llama.cpp itself (this
# vendored version built by GCC 12 hands LDTILECFG an invalid tile configuration: SIGSEGV in
# ggml_backend_amx_mul_mat on a batch of 32 tokens). So:
#   1. scripts/probes/amx_tile_probe.c, run as a child process, asks the kernel for tile state and
#      runs LDTILECFG + TILEZERO; if that fails, build without AMX;
#   2. otherwise build with AMX and run llama-bench on a short prompt (the smoke test); if it dies,
#      build again without AMX (-mno-amx-*, which GCC lets win over -march=native in any order).
# FRUGAL_PEER_AMX=on|off skips the checks. The choice is part of the cache key (build-*-amx-on|off)
# and is written to $bin/peer_build.txt, which the benchmarks quote so a speed ratio says which
# llama.cpp it faced (on a host where AMX works, its AMX path is the bar).
#
# FRUGAL_PEER_EXTRA_TOOLS (space-separated, e.g. "llama-server llama-speculative llama-lookup")
# adds tools only the benchmarks need, so the test suite does not pay for building them.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
src_root="$cache/peer/llama_cpp_python-$version"
llama_src="$src_root/vendor/llama.cpp"
tools=(llama-tokenize llama-perplexity llama-bench llama-quantize llama-imatrix llama-simple)
read -r -a extra_tools <<< "${FRUGAL_PEER_EXTRA_TOOLS:-}"
build_server=OFF
for tool in "${extra_tools[@]}"; do [ "$tool" = llama-server ] && build_server=ON; done
repo="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$cache/peer"

variant_dir() { echo "$cache/peer/build-$version-amx-$1"; }

variant_is_built() {
  local bin; bin="$(variant_dir "$1")/bin"
  [ -x "$bin/llama-perplexity" ] && [ -x "$bin/llama-tokenize" ] && [ -x "$bin/llama-bench" ] &&
    [ -x "$bin/llama-quantize" ] && [ -x "$bin/llama-imatrix" ] && [ -f "$bin/peer_build.txt" ] &&
    [ -x "$bin/llama-logits" ] && [ "$bin/llama-logits" -nt "$repo/tests/peer/llama_logits.cpp" ] || return 1
  local tool
  for tool in "${extra_tools[@]}"; do [ -x "$bin/$tool" ] || return 1; done
}

# build_variant on|off REASON: builds (if not cached) and records why this variant was chosen.
build_variant() {
  local mode="$1" reason="$2" build flags=""
  build="$(variant_dir "$mode")"
  [ "$mode" = off ] && flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  if ! variant_is_built "$mode"; then
    if [ ! -d "$llama_src" ]; then
      local dl; dl=$(mktemp -d)
      pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$dl" >&2
      tar xzf "$dl"/llama_cpp_python-"$version".tar.gz -C "$cache/peer"
      rm -rf "$dl"
    fi
    cmake -S "$llama_src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
      -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=$build_server -DLLAMA_BUILD_TESTS=OFF \
      -DBUILD_SHARED_LIBS=OFF -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >&2
    cmake --build "$build" -j "$(nproc)" --target "${tools[@]}" "${extra_tools[@]}" llama >&2
    # frugal's own logits dumper (tests/peer/llama_logits.cpp), linked against llama.cpp's libraries.
    g++ -std=c++17 -O2 $flags "$repo/tests/peer/llama_logits.cpp" -I "$llama_src/include" -I "$llama_src/ggml/include" \
      "$build/src/libllama.a" "$build/ggml/src/libggml.a" "$build/ggml/src/libggml-cpu.a" \
      "$build/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl -lm -o "$build/bin/llama-logits" >&2
  fi
  printf 'llama.cpp from llama-cpp-python %s, GGML_NATIVE=ON, AMX %s (%s)\n' \
    "$version" "$mode" "$reason" > "$build/bin/peer_build.txt"
  echo "build_llama_cpp: llama.cpp AMX $mode: $reason" >&2
}

amx_mode="${FRUGAL_PEER_AMX:-auto}"
case "$amx_mode" in
  on|off) build_variant "$amx_mode" "FRUGAL_PEER_AMX=$amx_mode"; echo "$(variant_dir "$amx_mode")/bin"; exit 0 ;;
  auto) ;;
  *) echo "build_llama_cpp: FRUGAL_PEER_AMX must be auto, on or off (got '$amx_mode')" >&2; exit 1 ;;
esac

if ! grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
  build_variant off "CPU does not advertise AMX"; echo "$(variant_dir off)/bin"; exit 0
fi
probe="$cache/peer/amx_tile_probe"
if [ ! -x "$probe" ] || [ "$probe" -ot "$repo/scripts/probes/amx_tile_probe.c" ]; then
  cc -O1 "$repo/scripts/probes/amx_tile_probe.c" -o "$probe" >&2 || rm -f "$probe"
fi
# The probe may die by SIGILL; that is the answer, not an error of this script.
if [ ! -x "$probe" ] || ! probe_out="$("$probe" 2>&1)"; then
  build_variant off "CPU advertises AMX but the tile probe failed: ${probe_out:-trapped or did not build}"
  echo "$(variant_dir off)/bin"; exit 0
fi

# The host runs tile instructions; does llama.cpp's AMX build run? The verdict is cached beside it.
verdict="$(variant_dir on)/amx_smoke_test.txt"
if [ ! -f "$verdict" ]; then
  build_variant on "tile probe ran; smoke test pending"
  model="$(bash "$repo/scripts/fetch_model.sh" smollm2)"
  if "$(variant_dir on)/bin/llama-bench" -m "$model" -p 32 -n 1 -r 1 -t "$(nproc)" >/dev/null 2>&1; then
    echo pass > "$verdict"
  else
    status=$?
    how="exited with status $status"
    [ "$status" -gt 128 ] && how="died of SIG$(kill -l $((status - 128)))"
    echo "fail: llama-bench -p 32 $how" > "$verdict"
  fi
fi
if [ "$(head -c 4 "$verdict")" = pass ]; then
  build_variant on "CPU advertises AMX, the tile probe ran and llama.cpp's AMX build passed its smoke test"
  echo "$(variant_dir on)/bin"
else
  build_variant off "CPU runs AMX tile instructions, but llama.cpp's AMX build failed its smoke test: $(head -c 80 "$verdict")"
  echo "$(variant_dir off)/bin"
fi
