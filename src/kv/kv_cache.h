// Contiguous KV cache: for every layer, keys and values of each position, stored as IEEE half
// (as llama.cpp's default cache type: half the memory of float32 at no measurable quality cost).
// (Paged, windowed and quantized caches come later behind the same row accessors.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace frugal {

class KvCache {
 public:
  KvCache(int64_t n_layer, int64_t n_ctx, int64_t row_elements);

  int64_t capacity() const { return n_ctx_; }
  int64_t row_elements() const { return row_elements_; }
  // Stores one position's keys or values, converting from float.
  static void store(const float* src, int64_t n, uint16_t* dst);
  size_t bytes() const { return (keys_.size() + values_.size()) * sizeof(uint16_t); }

  uint16_t* key_row(int64_t layer, int64_t pos) { return keys_.data() + (layer * n_ctx_ + pos) * row_elements_; }
  uint16_t* value_row(int64_t layer, int64_t pos) { return values_.data() + (layer * n_ctx_ + pos) * row_elements_; }

 private:
  int64_t n_ctx_;
  int64_t row_elements_;
  std::vector<uint16_t> keys_;
  std::vector<uint16_t> values_;
};

}  // namespace frugal
