// Shared by the FFI handlers: rows split over XLA's intra-op thread pool.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "compact.h"
#include "xla/ffi/api/ffi.h"

namespace diffmd {

namespace ffi = xla::ffi;

// Runs body(chunk, begin, end) over row chunks on XLA's thread pool and the calling thread.
// Chunks are claimed from a shared counter, so the caller works through them itself if the
// pool's threads are busy (two devices sharing one pool, a kernel called from a pool thread):
// it waits only for chunks other threads have already claimed and are running, never for a
// task still queued, so it cannot deadlock. A task that starts after every chunk is claimed
// returns at once; the shared state it touches is reference-counted, and `body` is called
// only for claimed chunks, all finished before the caller returns.
struct ChunkCounter {
  std::atomic<int64_t> next{0}, finished{0};
  int64_t total = 0;
  std::mutex mutex;
  std::condition_variable all_done;
};

template <typename Body>
void ParallelRows(ffi::ThreadPool& pool, int64_t n, int64_t n_chunks, Body&& body) {
  if (n_chunks <= 1) {
    body(0, 0, n);
    return;
  }
  auto counter = std::make_shared<ChunkCounter>();
  counter->total = n_chunks;
  const int64_t step = (n + n_chunks - 1) / n_chunks;
  auto work = [counter, step, n, &body]() {
    for (int64_t c; (c = counter->next.fetch_add(1)) < counter->total;) {
      body(c, std::min(n, c * step), std::min(n, (c + 1) * step));
      if (counter->finished.fetch_add(1) + 1 == counter->total) {
        std::lock_guard<std::mutex> lock(counter->mutex);
        counter->all_done.notify_all();
      }
    }
  };
  for (int64_t c = 1; c < n_chunks; ++c) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  std::unique_lock<std::mutex> lock(counter->mutex);
  counter->all_done.wait(lock, [&] { return counter->finished.load() == counter->total; });
}

inline int64_t ChunksFor(ffi::ThreadPool& pool, int64_t pair_slots) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t by_work = std::max<int64_t>(1, pair_slots / 32768);  // ≳ 50 µs of work per chunk
  return std::min<int64_t>(2 * threads, by_work);  // several per thread: late threads still help
}

}  // namespace diffmd
