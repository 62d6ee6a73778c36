// Synthetic calibration data for the quantizer tests: activations shaped like an LLM layer's
// input (correlated channels, a few large outlier channels) and small Gaussian weights.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace frugal::testing {

// Activations like an LLM layer input: channels correlated through a low-rank factor model plus
// noise, per-channel spreads, and `outliers` channels 30 times larger than the rest.
inline std::vector<float> llm_activations(int64_t tokens, int64_t cols, int outliers, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::lognormal_distribution<float> lognormal(0.0f, 0.5f);
  const int64_t factors = std::max<int64_t>(4, cols / 8);
  std::vector<float> loading(static_cast<size_t>(factors * cols));
  for (float& v : loading) v = normal(rng) / std::sqrt(static_cast<float>(factors));
  std::vector<float> spread(static_cast<size_t>(cols));
  for (float& v : spread) v = lognormal(rng);
  for (int k = 0; k < outliers; ++k) spread[static_cast<size_t>(rng() % cols)] *= 30.0f;
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  std::vector<float> f(static_cast<size_t>(factors));
  for (int64_t t = 0; t < tokens; ++t) {
    for (float& v : f) v = normal(rng);
    for (int64_t c = 0; c < cols; ++c) {
      float v = 0.5f * normal(rng);
      for (int64_t k = 0; k < factors; ++k) v += f[static_cast<size_t>(k)] * loading[static_cast<size_t>(k * cols + c)];
      x[static_cast<size_t>(t * cols + c)] = spread[static_cast<size_t>(c)] * v;
    }
  }
  return x;
}

inline std::vector<float> gaussian_weights(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& v : w) v = normal(rng);
  return w;
}

}  // namespace frugal::testing
