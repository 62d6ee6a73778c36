#!/bin/bash
# Speculative vs plain greedy on SmolLM2 (frugal run --draft-compare), 3 repetitions each.
# The 3-bit draft: frugal quantize -m $FRUGAL_MODEL -o $DRAFT3 --method rtn --bits 3 --group 32
M=${FRUGAL_MODEL:-/root/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf}; F=${FRUGAL_BIN:-build/frugal}
COPY="Repeat the following text exactly: The quick brown fox jumps over the lazy dog. Speculative decoding lets a small draft model propose several tokens that the large model then verifies in a single batched forward pass, which keeps the output exactly the same while using the processor more efficiently. Text: The quick brown fox jumps over the lazy dog. Speculative decoding lets"
OPEN="Once upon a time, in a small village by the sea, there lived"
for name in copy open; do
  P=$COPY; [ $name = open ] && P=$OPEN
  for d in ngram self:10 ${DRAFT3:-/tmp/spec_smol_rtn3.gguf}; do
    for r in 1 2 3; do
      out=$($F run -m $M -p "$P" -n 64 -t 2 --temp 0 --draft $d --draft-compare 2>&1 >/dev/null)
      spec=$(echo "$out" | grep -o "generation: .* tokens/s)" | grep -o "([0-9.]* tokens/s" | tr -d '(' | cut -d' ' -f1)
      plain=$(echo "$out" | grep -o "plain greedy: .*" | grep -o "([0-9.]* tokens/s" | tr -d '(' | cut -d' ' -f1)
      acc=$(echo "$out" | grep -o "acceptance [0-9.]*%")
      tpv=$(echo "$out" | grep -o "[0-9.]* tokens per verification")
      same=$(echo "$out" | grep -o "identical: [a-zA-Z]*")
      echo "$name $(basename $d) rep$r spec=$spec plain=$plain $acc $tpv $same"
    done
  done
done
