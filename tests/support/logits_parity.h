// Last-position logits of frugal against llama.cpp's (tests/peer/llama_logits.cpp) on one prompt.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "frugal/frugal.h"

namespace frugal::testing {

struct LogitComparison {
  double max_abs_difference = 0;  // after removing the mean shift (the softmax ignores a shift)
  double mean_shift = 0;          // mean of (ours - peer)
  double kl = 0;          // KL(peer || ours) of the next-token distributions, nats
  int64_t our_top = -1, peer_top = -1;
  // llama.cpp's logit of its own top token minus its logit of ours (0 when they agree): how close
  // to a tie a disagreement is, on the peer's own scale.
  double peer_top_margin = 0;
  // llama.cpp against itself: its default path (flash attention, half-precision accumulation)
  // vs its plain attention path, on the same prompt. The rounding noise floor for this prompt.
  double peer_noise_kl = 0;
  double peer_noise_max_abs_difference = 0;
};

// Tokenizes `prompt` with frugal (special tokens parsed), runs both engines, compares; failures to
// run the peer are reported through GoogleTest and give a default-constructed result.
LogitComparison compare_last_logits_with_llama(const std::shared_ptr<const Model>& model, const std::string& prompt);

// Compares every prompt and checks: frugal is as close to llama.cpp as llama.cpp's own two
// attention paths are to each other on these prompts (the model's rounding noise floor), within a
// factor of 2 (floors: KL 0.01 nats, |dlogit| 1.0), and both pick the same top token.
void expect_logits_match_llama(const std::shared_ptr<const Model>& model, const std::vector<std::string>& prompts);

}  // namespace frugal::testing
