#!/usr/bin/env bash
# Builds llama.cpp's tools (the peer frugal is measured against) from the llama-cpp-python
# source package on PyPI, into a cache outside the repo. Prints the bin directory on stdout.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
src_root="$cache/peer/llama_cpp_python-$version"
build="$cache/peer/build-$version"
bin="$build/bin"
tools=(llama-tokenize llama-perplexity llama-bench llama-quantize llama-imatrix llama-simple)
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ -x "$bin/llama-perplexity" ] && [ -x "$bin/llama-tokenize" ] && [ -x "$bin/llama-bench" ] &&
   [ -x "$bin/llama-quantize" ] && [ -x "$bin/llama-imatrix" ] &&
   [ -x "$bin/llama-logits" ] && [ "$bin/llama-logits" -nt "$repo/tests/peer/llama_logits.cpp" ]; then
  echo "$bin"; exit 0
fi
mkdir -p "$cache/peer"
if [ ! -d "$src_root/vendor/llama.cpp" ]; then
  dl=$(mktemp -d)
  pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$dl" >&2
  tar xzf "$dl"/llama_cpp_python-"$version".tar.gz -C "$cache/peer"
  rm -rf "$dl"
fi
cmake -S "$src_root/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$build" -j "$(nproc)" --target "${tools[@]}" llama >&2
# frugal's own logits dumper (tests/peer/llama_logits.cpp), linked against llama.cpp's libraries.
llama_src="$src_root/vendor/llama.cpp"
g++ -std=c++17 -O2 "$repo/tests/peer/llama_logits.cpp" -I "$llama_src/include" -I "$llama_src/ggml/include" \
  "$build/src/libllama.a" "$build/ggml/src/libggml.a" "$build/ggml/src/libggml-cpu.a" \
  "$build/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl -lm -o "$bin/llama-logits" >&2
echo "$bin"
