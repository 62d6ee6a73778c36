#include "support/sampling_support.h"

#include <gtest/gtest.h>

#include <cmath>

namespace frugal::testing {

SamplerOptions top_k_sampling(int32_t k, uint64_t seed) {
  SamplerOptions o;
  o.temperature = 1.0f;
  o.top_k = k;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  o.seed = seed;
  return o;
}

TokenDistribution exact_three_token_distribution(const std::shared_ptr<const Model>& model, TransformerOptions options,
                                                 const SamplerOptions& sampling, const std::vector<int32_t>& prompt) {
  options.all_logits = false;
  Transformer t(model, options);
  const int64_t vocab = model->config().n_vocab;
  TokenDistribution out;
  std::vector<double> p1, p2, p3;
  EXPECT_TRUE(t.evaluate(prompt.data(), static_cast<int64_t>(prompt.size())).is_ok());
  sampling_distribution(t.last_logits(), vocab, sampling, p1);
  const int64_t base = t.position();
  for (int32_t a = 0; a < vocab; ++a) {
    if (p1[a] == 0) continue;
    t.truncate(base);
    EXPECT_TRUE(t.evaluate(&a, 1).is_ok());
    sampling_distribution(t.last_logits(), vocab, sampling, p2);
    for (int32_t b = 0; b < vocab; ++b) {
      if (p2[b] == 0) continue;
      t.truncate(base + 1);
      EXPECT_TRUE(t.evaluate(&b, 1).is_ok());
      sampling_distribution(t.last_logits(), vocab, sampling, p3);
      for (int32_t c = 0; c < vocab; ++c) {
        if (p3[c] > 0) out[{a, b, c}] = p1[a] * p2[b] * p3[c];
      }
    }
  }
  return out;
}

double total_variation(const TokenDistribution& counts, double n, const TokenDistribution& p) {
  double tv = 0;
  for (const auto& [key, probability] : p) {
    auto it = counts.find(key);
    tv += std::fabs((it == counts.end() ? 0.0 : it->second / n) - probability);
  }
  for (const auto& [key, count] : counts) {
    if (!p.count(key)) tv += count / n;
  }
  return tv / 2;
}

TokenDistribution mixture(const TokenDistribution& p, const TokenDistribution& toward, double share) {
  TokenDistribution out;
  for (const auto& [key, probability] : p) out[key] += (1 - share) * probability;
  for (const auto& [key, probability] : toward) out[key] += share * probability;
  return out;
}

}  // namespace frugal::testing
