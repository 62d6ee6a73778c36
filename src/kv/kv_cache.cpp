// KvCache storage and the q8_0 / q4_0 block quantizers of its rows (see kv_cache.h).
#include "kv/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tensor/fp16.h"

namespace frugal {
namespace {

constexpr int64_t kBlock = 32;

void put_scale(uint8_t* block, float d) {
  const uint16_t h = float_to_fp16(d);
  std::memcpy(block, &h, 2);
}

float get_scale(const uint8_t* block) {
  uint16_t h;
  std::memcpy(&h, block, 2);
  return fp16_to_float(h);
}

}  // namespace

const char* kv_type_name(KvType type) {
  switch (type) {
    case KvType::kF16: return "f16";
    case KvType::kQ8_0: return "q8_0";
    case KvType::kQ4_0: return "q4_0";
  }
  return "?";
}

Result<KvType> parse_kv_type(const std::string& name) {
  for (KvType t : {KvType::kF16, KvType::kQ8_0, KvType::kQ4_0}) {
    if (name == kv_type_name(t)) return t;
  }
  return Status::error("unknown KV cache type '" + name + "' (use f16, q8_0 or q4_0)");
}

int64_t kv_row_bytes(KvType type, int64_t n) {
  switch (type) {
    case KvType::kF16: return 2 * n;
    case KvType::kQ8_0: return n / kBlock * 34;
    case KvType::kQ4_0: return n / kBlock * 18;
  }
  return 0;
}

Status check_kv_type(KvType type, int64_t head_dim) {
  if (type != KvType::kF16 && head_dim % kBlock != 0) {
    return Status::error(std::string("KV cache type ") + kv_type_name(type) + " needs a head size that is a multiple of 32; this model's is " +
                         std::to_string(head_dim));
  }
  return Status::ok();
}

KvCache::KvCache(int64_t n_layer, int64_t n_ctx, int64_t row_elements, KvType key_type, KvType value_type)
    : n_layer_(n_layer),
      n_ctx_(n_ctx),
      row_elements_(row_elements),
      key_type_(key_type),
      value_type_(value_type),
      key_row_bytes_(kv_row_bytes(key_type, row_elements)),
      value_row_bytes_(kv_row_bytes(value_type, row_elements)),
      keys_(static_cast<size_t>(n_layer * n_ctx * key_row_bytes_)),
      values_(static_cast<size_t>(n_layer * n_ctx * value_row_bytes_)) {}

void KvCache::store(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_fp16(src[i]);
}

// Round-to-nearest absmax quantization per block of 32 (the GGUF q8_0 / q4_0 definitions): q8_0
// d = max|x| / 127; q4_0 d = -m / 8 with m the value of largest magnitude, so m maps to q = 0 and
// the asymmetric range [-8, 7] is used fully on the side of the largest value.
void KvCache::store(const float* src, int64_t n, KvType type, uint8_t* dst) {
  if (type == KvType::kF16) {
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t h = float_to_fp16(src[i]);
      std::memcpy(dst + 2 * i, &h, 2);
    }
    return;
  }
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* x = src + b * kBlock;
    if (type == KvType::kQ8_0) {
      uint8_t* block = dst + b * 34;
      float amax = 0;
      for (int64_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float d = amax / 127.0f;
      const float id = d > 0 ? 1.0f / d : 0.0f;
      put_scale(block, d);
      for (int64_t i = 0; i < kBlock; ++i) {
        const int q = static_cast<int>(std::lround(x[i] * id));
        block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp(q, -127, 127)));
      }
    } else {
      uint8_t* block = dst + b * 18;
      float m = 0;
      for (int64_t i = 0; i < kBlock; ++i) {
        if (std::fabs(x[i]) > std::fabs(m)) m = x[i];
      }
      const float d = m / -8.0f;
      const float id = d != 0 ? 1.0f / d : 0.0f;
      put_scale(block, d);
      auto code = [&](float v) { return static_cast<uint8_t>(std::clamp(static_cast<int>(std::lround(v * id)) + 8, 0, 15)); };
      for (int64_t i = 0; i < 16; ++i) block[2 + i] = static_cast<uint8_t>(code(x[i]) | (code(x[i + 16]) << 4));
    }
  }
}

void KvCache::load(const uint8_t* src, int64_t n, KvType type, float* dst) {
  if (type == KvType::kF16) {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = fp16_to_float(h);
    }
    return;
  }
  for (int64_t b = 0; b < n / kBlock; ++b) {
    float* y = dst + b * kBlock;
    if (type == KvType::kQ8_0) {
      const uint8_t* block = src + b * 34;
      const float d = get_scale(block);
      for (int64_t i = 0; i < kBlock; ++i) y[i] = d * static_cast<int8_t>(block[2 + i]);
    } else {
      const uint8_t* block = src + b * 18;
      const float d = get_scale(block);
      for (int64_t i = 0; i < 16; ++i) {
        y[i] = d * ((block[2 + i] & 0xF) - 8);
        y[i + 16] = d * ((block[2 + i] >> 4) - 8);
      }
    }
  }
}

}  // namespace frugal
