// Contiguous KV cache: for every layer, keys and values of each position in the cache's element type
// (-ctk/-ctv): IEEE half by default (as llama.cpp's default: half the memory of float32 at no
// measurable quality cost), or the q8_0 / q4_0 block formats of kernels/ops.h, which attention reads
// directly. Keys and values may have different types: KV-quantization studies (KIVI, Liu et al. 2024;
// KVQuant, Hooper et al. 2024) find keys more sensitive to quantization than values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/ops.h"

namespace frugal {

// "f16", "q8_0", "q4_0".
const char* kv_type_name(KvType type);
Result<KvType> parse_kv_type(const std::string& name);
// Bytes of n elements (n a multiple of 32 for the block types).
int64_t kv_row_bytes(KvType type, int64_t n);
// Whether rows of heads of head_dim can use `type` (block types need head_dim % 32 == 0); the
// message says why not.
Status check_kv_type(KvType type, int64_t head_dim);

class KvCache {
 public:
  KvCache(int64_t n_layer, int64_t n_ctx, int64_t row_elements, KvType key_type = KvType::kF16,
          KvType value_type = KvType::kF16);

  int64_t capacity() const { return n_ctx_; }
  int64_t row_elements() const { return row_elements_; }
  KvType key_type() const { return key_type_; }
  KvType value_type() const { return value_type_; }
  int64_t key_row_bytes() const { return key_row_bytes_; }
  int64_t value_row_bytes() const { return value_row_bytes_; }
  // Stores one position's keys or values (n floats) in `type`, quantizing block by block.
  static void store(const float* src, int64_t n, KvType type, uint8_t* dst);
  // The inverse: n floats of a stored row.
  static void load(const uint8_t* src, int64_t n, KvType type, float* dst);
  // The f16 form (calibration's buffers).
  static void store(const float* src, int64_t n, uint16_t* dst);
  size_t bytes() const { return keys_.size() + values_.size(); }
  // Bytes one position takes over all layers (keys + values).
  int64_t bytes_per_token() const { return n_layer_ * (key_row_bytes_ + value_row_bytes_); }

  uint8_t* key_row(int64_t layer, int64_t pos) { return keys_.data() + (layer * n_ctx_ + pos) * key_row_bytes_; }
  uint8_t* value_row(int64_t layer, int64_t pos) { return values_.data() + (layer * n_ctx_ + pos) * value_row_bytes_; }
  const uint8_t* key_row(int64_t layer, int64_t pos) const { return keys_.data() + (layer * n_ctx_ + pos) * key_row_bytes_; }

 private:
  int64_t n_layer_;
  int64_t n_ctx_;
  int64_t row_elements_;
  KvType key_type_, value_type_;
  int64_t key_row_bytes_, value_row_bytes_;
  std::vector<uint8_t> keys_;
  std::vector<uint8_t> values_;
};

}  // namespace frugal
