// Memory need of a run (mapped weights, KV cache, workspace) against MemAvailable.
#include "runtime/memory_check.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace frugal {
namespace {

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace

MemoryNeed memory_need(const Model& model, int64_t n_ctx, int64_t n_batch) {
  const ModelConfig& c = model.config();
  MemoryNeed need;
  need.weights = model.file().file_size();
  // Same estimate as `frugal info`: f16 K and V rows per layer and position; per batch token the
  // residual, normed input, attention and FFN activations in f32, plus one row of logits per token.
  need.kv_cache = static_cast<uint64_t>(2 * c.n_layer * c.kv_dim() * 2) * static_cast<uint64_t>(n_ctx);
  need.workspace = static_cast<uint64_t>(n_batch) *
                   static_cast<uint64_t>(4 * c.n_embd + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.n_ff + c.n_vocab) * sizeof(float);
  return need;
}

std::optional<uint64_t> available_memory() {
  if (const char* forced = std::getenv("FRUGAL_AVAILABLE_MEMORY"); forced != nullptr && *forced != '\0') {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(forced, &end, 10);
    if (end != nullptr && *end == '\0') return v;
  }
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return std::nullopt;
  char line[256];
  std::optional<uint64_t> result;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    unsigned long long kib = 0;
    if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
      result = static_cast<uint64_t>(kib) * 1024;
      break;
    }
  }
  std::fclose(f);
  return result;
}

Result<std::string> check_memory(const MemoryNeed& need, uint64_t available, int64_t n_ctx) {
  const uint64_t anonymous = need.kv_cache + need.workspace;
  if (anonymous > available) {
    return Status::error("not enough memory: the KV cache for -c " + std::to_string(n_ctx) + " (" + gib(need.kv_cache) +
                         ") and the workspace (" + gib(need.workspace) + ") need " + gib(anonymous) + " but only " +
                         gib(available) + " is available; lower -c (the KV cache grows linearly with it)");
  }
  if (need.weights + anonymous > available) {
    return "the model's weights (" + gib(need.weights) + ") do not fit in the " + gib(available - anonymous) +
           " of memory left after the KV cache and workspace; running from the memory-mapped file, each token reads the "
           "weights from disk (expect decode at disk speed; " + gib(need.weights + anonymous) + " of free memory would avoid it)";
  }
  return std::string();
}

Result<std::string> check_memory(const Model& model, int64_t n_ctx, int64_t n_batch) {
  const std::optional<uint64_t> available = available_memory();
  if (!available) return std::string();
  return check_memory(memory_need(model, n_ctx, n_batch), *available, n_ctx);
}

}  // namespace frugal
