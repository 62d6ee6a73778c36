// ThreadPool: generation counter + spin-then-sleep wake-up (see thread_pool.h).
#include "base/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define FRUGAL_PAUSE() _mm_pause()
#else
#define FRUGAL_PAUSE() std::this_thread::yield()
#endif

namespace frugal {

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for a short while: between the matmuls of one token the next job comes within
    // microseconds, and a futex wake-up would cost more than the work. Then yield (so a busy
    // machine can run the thread we are waiting for), then sleep.
    for (int spins = 0; generation_.load(std::memory_order_acquire) == seen && spins < 4096; ++spins) FRUGAL_PAUSE();
    for (int yields = 0; generation_.load(std::memory_order_acquire) == seen && yields < 256; ++yields) {
      std::this_thread::yield();
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      sleeping_.fetch_add(1);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      sleeping_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    (*job_)(index, n_threads_);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(FunctionRef<void(int, int)> fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  pending_.store(n_threads_ - 1, std::memory_order_release);
  bool any_sleeping;
  {
    // Workers register as sleeping under this mutex before they wait, so reading the count
    // here cannot miss one; spinning workers need no (costly) notify.
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    any_sleeping = sleeping_.load(std::memory_order_relaxed) > 0;
  }
  if (any_sleeping) wake_.notify_all();
  fn(0, n_threads_);
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 4096) FRUGAL_PAUSE(); else std::this_thread::yield();
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  int used = static_cast<int>(std::min<int64_t>(n_threads_, max_chunks));
  if (used <= 1) {
    fn(0, n);
    return;
  }
  run([&](int index, int) {
    if (index >= used) return;
    int64_t begin = n * index / used;
    int64_t end = n * (index + 1) / used;
    if (begin < end) fn(begin, end);
  });
}

}  // namespace frugal
