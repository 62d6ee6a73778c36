// KvCache storage (see kv_cache.h).
#include "kv/kv_cache.h"

#include "tensor/fp16.h"

namespace frugal {

KvCache::KvCache(int64_t n_layer, int64_t n_ctx, int64_t row_elements)
    : n_ctx_(n_ctx),
      row_elements_(row_elements),
      keys_(static_cast<size_t>(n_layer * n_ctx * row_elements)),
      values_(static_cast<size_t>(n_layer * n_ctx * row_elements)) {}

void KvCache::store(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_fp16(src[i]);
}

}  // namespace frugal
