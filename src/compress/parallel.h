// Row-chunked parallel loops for the compressors: results never depend on the thread count
// (every output element is computed by one thread in the same order as with one thread).
#pragma once

#include <atomic>
#include <cstdint>

#include "base/function_ref.h"
#include "base/thread_pool.h"

namespace frugal::compress {

// Threads a loop may use: 1 when there is no pool.
inline int pool_slots(ThreadPool* pool) { return pool == nullptr ? 1 : pool->size(); }

// Calls fn(begin, end, slot) on contiguous chunks of [0, n), one per thread (slot < pool_slots),
// inline when there is no pool or one thread.
inline void for_chunks(ThreadPool* pool, int64_t n, FunctionRef<void(int64_t, int64_t, int)> fn) {
  if (n <= 0) return;
  if (pool == nullptr || pool->size() == 1 || n == 1) {
    fn(0, n, 0);
    return;
  }
  pool->run([&](int t, int nt) {
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) fn(begin, end, t);
  });
}

// Calls fn(item, slot) for every item of [0, n), items handed out one at a time (for loops whose
// items cost very different amounts, e.g. the rows of a triangle).
inline void for_each_dynamic(ThreadPool* pool, int64_t n, FunctionRef<void(int64_t, int)> fn) {
  if (n <= 0) return;
  if (pool == nullptr || pool->size() == 1 || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  pool->run([&](int t, int) {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n; i = next.fetch_add(1, std::memory_order_relaxed)) fn(i, t);
  });
}

}  // namespace frugal::compress
