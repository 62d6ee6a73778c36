// Shared by `frugal run` and `frugal bench`: the drafter flags (--draft D | --draft-self N |
// --lookup) and the speculative-decoding benchmark (acceptance, accepted length, tokens/s and
// speed-up over plain greedy decoding of the same prompts).
#pragma once

#include <memory>
#include <string>

#include "cli_args.h"
#include "frugal/frugal.h"

namespace frugal::cli {

// The drafter the flags name, as the --draft grammar: "ngram" (--lookup), "self:N" (--draft-self
// N) or a GGUF path; "" when none is given; an error when more than one is.
Result<std::string> draft_spec(const Args& args);

// N of a "self:N" --draft value (the target's first N blocks as the draft); 0 for any other value;
// an error when N is not a whole number >= 1. Shared by `run`, `bench` and `serve`.
Result<int64_t> self_draft_layers(const std::string& spec);

// The drafter for a --draft value (ngram, self:N or a draft GGUF with the target's vocabulary).
Result<std::unique_ptr<Drafter>> make_drafter(const std::string& spec, const std::shared_ptr<const Model>& target,
                                              const ModelDrafterOptions& options);

struct SpeculativeBenchOptions {
  std::string draft;  // a --draft value
  int64_t n_gen = 128;
  int repetitions = 3;
  int n_threads = 2;
  int draft_max = 8;
  float p_min = 0.0f;
  bool adaptive = true;
  std::string output = "md";  // md, json or jsonl
  std::string prompts = "all";  // all, copy or open
};

// For each built-in prompt (copy-heavy: summarize, rewrite, edit code; open-ended: chat, story, in
// the model's chat template), greedy decoding of n_gen tokens plainly (the one-token path) and with
// the drafter, alternating which goes first, `repetitions` times; prints per prompt and per set
// the median paired speed-up, tokens/s, acceptance, mean accepted length and whether every output
// was plain greedy's. Returns the exit code.
int bench_speculative(const std::shared_ptr<const Model>& model, const SpeculativeBenchOptions& options);

}  // namespace frugal::cli
