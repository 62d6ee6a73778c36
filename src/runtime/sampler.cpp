// Sampler: truncations work on a candidate list sorted once by logit.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

namespace frugal {

Sampler::Sampler(const SamplerOptions& options, int32_t n_vocab)
    : options_(options),
      n_vocab_(n_vocab),
      candidates_(n_vocab),
      recent_(static_cast<size_t>(std::max(0, options.repeat_last_n))),
      rng_(options.seed) {}

void Sampler::accept(int32_t token) {
  if (options_.repeat_last_n <= 0) return;
  recent_[recent_next_] = token;
  recent_next_ = (recent_next_ + 1) % recent_.size();
  recent_count_ = std::min(recent_count_ + 1, recent_.size());
}

int32_t Sampler::sample(const float* logits) {
  if (options_.temperature <= 0.0f && options_.repeat_penalty == 1.0f) {
    // Greedy without penalty: the first largest logit, as max_element over the candidates below
    // picks it, without filling the candidate list (49152 entries for SmolLM2; a batched serving
    // step samples every sequence).
    // max_element keeps index 0 when logits[0] is NaN (nothing compares above it) and skips NaNs
    // elsewhere; the largest value is found on 8 independent chains (one chain is bound by the
    // compare latency: ~100 us for 49152 logits), then its first index.
    if (std::isnan(logits[0]) || n_vocab_ < 8) {
      int32_t best = 0;
      for (int32_t i = 1; i < n_vocab_; ++i) {
        if (logits[best] < logits[i]) best = i;
      }
      return best;
    }
    float lane[8];
    for (int j = 0; j < 8; ++j) lane[j] = logits[0];
    int32_t i = 0;
    for (; i + 8 <= n_vocab_; i += 8) {
      for (int j = 0; j < 8; ++j) lane[j] = lane[j] < logits[i + j] ? logits[i + j] : lane[j];
    }
    for (; i < n_vocab_; ++i) lane[0] = lane[0] < logits[i] ? logits[i] : lane[0];
    float largest = lane[0];
    for (int j = 1; j < 8; ++j) largest = largest < lane[j] ? lane[j] : largest;
    int32_t best = 0;
    while (!(logits[best] == largest)) ++best;
    return best;
  }
  for (int32_t i = 0; i < n_vocab_; ++i) candidates_[i] = {i, logits[i], 0.0f};
  // CTRL's penalty: divide positive logits, multiply negative ones, once per distinct token.
  if (options_.repeat_penalty != 1.0f) {
    for (size_t i = 0; i < recent_count_; ++i) {
      const int32_t token = recent_[i];
      if (token < 0 || token >= n_vocab_) continue;
      Candidate& c = candidates_[token];
      if (c.p != 0.0f) continue;  // p doubles as "already penalized" until softmax below
      c.logit = c.logit > 0 ? c.logit / options_.repeat_penalty : c.logit * options_.repeat_penalty;
      c.p = 1.0f;
    }
  }
  if (options_.temperature <= 0.0f) {
    auto best = std::max_element(candidates_.begin(), candidates_.end(),
                                 [](const Candidate& a, const Candidate& b) { return a.logit < b.logit; });
    return best->id;
  }
  size_t n = candidates_.size();
  auto by_logit = [](const Candidate& a, const Candidate& b) { return a.logit > b.logit; };
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) {
    n = static_cast<size_t>(options_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + n, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  auto normalize = [&](size_t count, float temperature) {
    const float max = candidates_[0].logit;
    double sum = 0;
    for (size_t i = 0; i < count; ++i) {
      candidates_[i].p = std::exp((candidates_[i].logit - max) / temperature);
      sum += candidates_[i].p;
    }
    for (size_t i = 0; i < count; ++i) candidates_[i].p = static_cast<float>(candidates_[i].p / sum);
  };
  normalize(n, 1.0f);
  if (options_.top_p < 1.0f) {
    double cumulative = 0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cumulative += candidates_[i].p;
      if (cumulative >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
  }
  if (options_.min_p > 0.0f) {
    const float threshold = candidates_[0].p * options_.min_p;
    size_t keep = 1;
    while (keep < n && candidates_[keep].p >= threshold) ++keep;
    n = keep;
  }
  normalize(n, options_.temperature);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  double r = uniform(rng_);
  for (size_t i = 0; i < n; ++i) {
    r -= candidates_[i].p;
    if (r <= 0) return candidates_[i].id;
  }
  return candidates_[n - 1].id;
}

}  // namespace frugal
