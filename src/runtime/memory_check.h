// Memory a model needs to run against what the machine has: a clear message instead of an OOM kill.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "base/status.h"
#include "model/model.h"

namespace frugal {

struct MemoryNeed {
  uint64_t weights = 0;    // the mapped file: page cache, evictable, re-read from disk if evicted
  uint64_t kv_cache = 0;   // f16 keys and values for n_ctx positions: anonymous, must fit
  uint64_t workspace = 0;  // activations of one batch and the logits: anonymous, must fit
};

MemoryNeed memory_need(const Model& model, int64_t n_ctx, int64_t n_batch);

// MemAvailable from /proc/meminfo in bytes (FRUGAL_AVAILABLE_MEMORY overrides it, for tests);
// nullopt when neither is readable.
std::optional<uint64_t> available_memory();

// Refuses (error naming the sizes and what to change) when the KV cache and workspace alone do
// not fit in `available`: those pages are anonymous, so the kernel's only way out is the OOM
// killer. When only the weights do not fit, returns a warning: the file is memory-mapped, so it
// still runs, with the kernel paging weights in from disk on every token (slow, but no kill).
// Returns "" when everything fits.
Result<std::string> check_memory(const MemoryNeed& need, uint64_t available, int64_t n_ctx);

// check_memory against available_memory() (nothing to check when it is unknown).
Result<std::string> check_memory(const Model& model, int64_t n_ctx, int64_t n_batch);

}  // namespace frugal
