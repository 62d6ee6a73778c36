// Next-token samplers: repetition penalty (Keskar et al. 2019, CTRL), top-k, top-p / nucleus
// (Holtzman et al. 2019), min-p (Nguyen et al. 2024), temperature; greedy when temperature <= 0.
// Applied in llama.cpp's default order: penalties, top-k, top-p, min-p, temperature, draw.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace frugal {

struct SamplerOptions {
  float temperature = 0.8f;
  int32_t top_k = 40;           // <= 0: off
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;
  uint64_t seed = 0;
};

class Sampler {
 public:
  Sampler(const SamplerOptions& options, int32_t n_vocab);

  // Picks the next token from raw logits. Allocates nothing after construction.
  int32_t sample(const float* logits);
  // Records a token of the context (prompt or generated) for the repetition penalty.
  void accept(int32_t token);

  const SamplerOptions& options() const { return options_; }

 private:
  struct Candidate {
    int32_t id;
    float logit;
    float p;
  };
  SamplerOptions options_;
  int32_t n_vocab_;
  std::vector<Candidate> candidates_;
  std::vector<int32_t> recent_;  // ring buffer of the last repeat_last_n tokens
  size_t recent_next_ = 0;
  size_t recent_count_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace frugal
