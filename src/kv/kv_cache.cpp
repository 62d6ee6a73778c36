// KvCache storage (see kv_cache.h).
#include "kv/kv_cache.h"

namespace frugal {

KvCache::KvCache(int64_t n_layer, int64_t n_ctx, int64_t row_floats)
    : n_ctx_(n_ctx),
      row_floats_(row_floats),
      keys_(static_cast<size_t>(n_layer * n_ctx * row_floats)),
      values_(static_cast<size_t>(n_layer * n_ctx * row_floats)) {}

}  // namespace frugal
