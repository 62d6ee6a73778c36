#!/usr/bin/env bash
# Builds llama.cpp's tools (the peer frugal is measured against) from the llama-cpp-python
# source package on PyPI, into a cache outside the repo. Prints the bin directory on stdout.
#
# llama.cpp is built for this host (GGML_NATIVE=ON), except that AMX is used only where a probe
# (scripts/probes/amx_tile_probe.c, run as a child process) shows tile instructions really run:
# some hosts advertise AMX in CPUID but trap on the first tile instruction. FRUGAL_PEER_AMX=on|off
# overrides the probe. The choice is part of the cache key and is written to
# $bin/peer_build.txt, which the benchmarks quote so a speed ratio says which llama.cpp it faced.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
src_root="$cache/peer/llama_cpp_python-$version"
tools=(llama-tokenize llama-perplexity llama-bench llama-quantize llama-imatrix llama-simple)
repo="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$cache/peer"

# --- AMX: on only where the kernel grants tile state and a tile instruction executes ---
amx_mode="${FRUGAL_PEER_AMX:-auto}"
amx_reason="FRUGAL_PEER_AMX=$amx_mode"
if [ "$amx_mode" = auto ]; then
  if ! grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
    amx_mode=off; amx_reason="CPU does not advertise AMX"
  else
    probe="$cache/peer/amx_tile_probe"
    if [ ! -x "$probe" ] || [ "$probe" -ot "$repo/scripts/probes/amx_tile_probe.c" ]; then
      cc -O1 "$repo/scripts/probes/amx_tile_probe.c" -o "$probe" >&2 || rm -f "$probe"
    fi
    # The probe may die by SIGILL; that is the answer, not an error of this script.
    if [ -x "$probe" ] && probe_out="$("$probe" 2>&1)"; then
      amx_mode=on; amx_reason="CPU advertises AMX and the tile probe ran"
    else
      amx_mode=off
      amx_reason="CPU advertises AMX but the tile probe failed (${probe_out:-trapped or did not build})"
    fi
  fi
fi
case "$amx_mode" in
  on) amx_flags="" ;;
  off) amx_flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" ;;
  *) echo "build_llama_cpp: FRUGAL_PEER_AMX must be auto, on or off (got '$amx_mode')" >&2; exit 1 ;;
esac
echo "build_llama_cpp: llama.cpp AMX $amx_mode: $amx_reason" >&2

build="$cache/peer/build-$version-amx-$amx_mode"
bin="$build/bin"
if [ -x "$bin/llama-perplexity" ] && [ -x "$bin/llama-tokenize" ] && [ -x "$bin/llama-bench" ] &&
   [ -x "$bin/llama-quantize" ] && [ -x "$bin/llama-imatrix" ] && [ -f "$bin/peer_build.txt" ] &&
   [ -x "$bin/llama-logits" ] && [ "$bin/llama-logits" -nt "$repo/tests/peer/llama_logits.cpp" ]; then
  echo "$bin"; exit 0
fi
if [ ! -d "$src_root/vendor/llama.cpp" ]; then
  dl=$(mktemp -d)
  pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$dl" >&2
  tar xzf "$dl"/llama_cpp_python-"$version".tar.gz -C "$cache/peer"
  rm -rf "$dl"
fi
# GCC lets an explicit -mno-amx-* win over the AMX that -march=native implies, whatever the order.
cmake -S "$src_root/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DBUILD_SHARED_LIBS=OFF -DCMAKE_C_FLAGS="$amx_flags" -DCMAKE_CXX_FLAGS="$amx_flags" >&2
cmake --build "$build" -j "$(nproc)" --target "${tools[@]}" llama >&2
# frugal's own logits dumper (tests/peer/llama_logits.cpp), linked against llama.cpp's libraries.
llama_src="$src_root/vendor/llama.cpp"
g++ -std=c++17 -O2 $amx_flags "$repo/tests/peer/llama_logits.cpp" -I "$llama_src/include" -I "$llama_src/ggml/include" \
  "$build/src/libllama.a" "$build/ggml/src/libggml.a" "$build/ggml/src/libggml-cpu.a" \
  "$build/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl -lm -o "$bin/llama-logits" >&2
printf 'llama.cpp from llama-cpp-python %s, GGML_NATIVE=ON, AMX %s (%s)\n' \
  "$version" "$amx_mode" "$amx_reason" > "$bin/peer_build.txt"
echo "$bin"
