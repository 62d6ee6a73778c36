// SmoothQuant scales, LLM.int8() outlier columns and vector-wise int8 weights (see w8a8.h).
#include "compress/w8a8.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "tensor/fp16.h"
#include "tensor/quant_blocks.h"

namespace frugal::compress {

std::vector<float> column_abs_max(const float* x, int64_t tokens, int64_t cols) {
  std::vector<float> m(static_cast<size_t>(cols), 0.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < cols; ++j) m[static_cast<size_t>(j)] = std::max(m[static_cast<size_t>(j)], std::fabs(x[t * cols + j]));
  }
  return m;
}

std::vector<float> weight_column_abs_max(std::span<const float* const> weights, std::span<const int64_t> rows,
                                         int64_t cols) {
  FRUGAL_CHECK(weights.size() == rows.size());
  std::vector<float> m(static_cast<size_t>(cols), 0.0f);
  for (size_t i = 0; i < weights.size(); ++i) {
    for (int64_t r = 0; r < rows[i]; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        m[static_cast<size_t>(j)] = std::max(m[static_cast<size_t>(j)], std::fabs(weights[i][r * cols + j]));
      }
    }
  }
  return m;
}

std::vector<float> smoothquant_scales(std::span<const float> activation_max, std::span<const float> weight_max,
                                      float alpha) {
  FRUGAL_CHECK(activation_max.size() == weight_max.size());
  std::vector<float> s(activation_max.size(), 1.0f);
  for (size_t j = 0; j < s.size(); ++j) {
    if (activation_max[j] <= 0.0f || weight_max[j] <= 0.0f) continue;
    const double v = std::pow(static_cast<double>(activation_max[j]), alpha) /
                     std::pow(static_cast<double>(weight_max[j]), 1.0 - alpha);
    s[j] = static_cast<float>(std::max(v, 1e-5));
  }
  return s;
}

std::vector<int32_t> outlier_columns(std::span<const float> activation_max, float threshold) {
  std::vector<int32_t> out;
  for (size_t j = 0; j < activation_max.size(); ++j) {
    if (activation_max[j] >= threshold) out.push_back(static_cast<int32_t>(j));
  }
  return out;
}

Int8Matrix quantize_int8_per_channel(const float* w, int64_t rows, int64_t cols, std::span<const int32_t> outliers) {
  FRUGAL_CHECK(cols % quant::kQK8_0 == 0);
  Int8Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.outliers.assign(outliers.begin(), outliers.end());
  m.q8_0.resize(static_cast<size_t>(rows * (cols / quant::kQK8_0)) * sizeof(quant::BlockQ8_0));
  m.outlier_weight.resize(static_cast<size_t>(rows) * outliers.size());
  m.values.resize(static_cast<size_t>(rows * cols));
  std::vector<char> is_outlier(static_cast<size_t>(cols), 0);
  for (int32_t j : outliers) {
    FRUGAL_CHECK(j >= 0 && j < cols);
    is_outlier[static_cast<size_t>(j)] = 1;
  }
  auto* blocks = reinterpret_cast<quant::BlockQ8_0*>(m.q8_0.data());
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * cols;
    float amax = 0.0f;
    for (int64_t j = 0; j < cols; ++j) {
      if (!is_outlier[static_cast<size_t>(j)]) amax = std::max(amax, std::fabs(wr[j]));
    }
    const uint16_t d_bits = float_to_fp16(amax / 127.0f);
    const float d = fp16_to_float(d_bits);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int64_t b = 0; b < cols / quant::kQK8_0; ++b) {
      quant::BlockQ8_0& block = blocks[r * (cols / quant::kQK8_0) + b];
      block.d = d_bits;
      for (int i = 0; i < quant::kQK8_0; ++i) {
        const int64_t j = b * quant::kQK8_0 + i;
        int q = 0;
        if (!is_outlier[static_cast<size_t>(j)]) q = std::clamp(static_cast<int>(std::nearbyint(wr[j] * id)), -127, 127);
        block.qs[i] = static_cast<int8_t>(q);
        m.values[static_cast<size_t>(r * cols + j)] = d * static_cast<float>(q);
      }
    }
    for (size_t k = 0; k < outliers.size(); ++k) {
      const uint16_t h = float_to_fp16(wr[outliers[k]]);
      m.outlier_weight[static_cast<size_t>(r) * outliers.size() + k] = h;
      m.values[static_cast<size_t>(r * cols + outliers[k])] = fp16_to_float(h);
    }
  }
  return m;
}

}  // namespace frugal::compress
