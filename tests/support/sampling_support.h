// Exact sampling distributions for the statistical tests of speculative sampling: what a model's
// first three sampled tokens are, enumerated with the one-token path, and the total-variation
// distance of observed draws to such a distribution.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "frugal/frugal.h"

namespace frugal::testing {

using TokenDistribution = std::map<std::vector<int32_t>, double>;

// Temperature-1 sampling from the k likeliest tokens only (no top-p, min-p or penalty): few
// outcomes, so exact_three_token_distribution can enumerate them.
SamplerOptions top_k_sampling(int32_t k, uint64_t seed = 0);

// P(first three tokens = a, b, c) after `prompt`, every branch evaluated one token at a time.
// Only practical with a sampler that keeps few candidates (top-k 2: 8 outcomes).
TokenDistribution exact_three_token_distribution(const std::shared_ptr<const Model>& model, TransformerOptions options,
                                                 const SamplerOptions& sampling, const std::vector<int32_t>& prompt);

// Total variation between counts (out of n draws) and a distribution.
double total_variation(const TokenDistribution& counts, double n, const TokenDistribution& p);

// (1 - share) * p + share * toward: p moved part of the way toward another distribution.
TokenDistribution mixture(const TokenDistribution& p, const TokenDistribution& toward, double share);

}  // namespace frugal::testing
