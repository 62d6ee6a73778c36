// Contiguous KV cache: for every layer, keys and values of each position, float32.
// (Paged, windowed and quantized caches come later behind the same row accessors.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace frugal {

class KvCache {
 public:
  KvCache(int64_t n_layer, int64_t n_ctx, int64_t row_floats);

  int64_t capacity() const { return n_ctx_; }
  int64_t row_floats() const { return row_floats_; }
  size_t bytes() const { return (keys_.size() + values_.size()) * sizeof(float); }

  float* key_row(int64_t layer, int64_t pos) { return keys_.data() + (layer * n_ctx_ + pos) * row_floats_; }
  float* value_row(int64_t layer, int64_t pos) { return values_.data() + (layer * n_ctx_ + pos) * row_floats_; }

 private:
  int64_t n_ctx_;
  int64_t row_floats_;
  std::vector<float> keys_;
  std::vector<float> values_;
};

}  // namespace frugal
