// thread_pool.h — a small persistent pool of worker threads for the kernels.
//
// A kernel splits its work into a few independent tasks (e.g. blocks of rows
// of a GEMM) and calls parallel_for. The calling thread works too, so
// threads = 2 means the caller plus one worker. Workers sleep on a condition
// variable between calls: a call costs one wake-up (microseconds), which is
// why kernels only go parallel above a work threshold.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace tq {

// The thread count a kernel uses when asked for 0 ("default"): the
// hardware concurrency (at least 1).
int default_thread_count();

class ThreadPool {
 public:
  // A pool whose parallel_for uses up to max_threads threads (caller included).
  explicit ThreadPool(int max_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int max_threads() const;

  // Runs task(i) for every i in [0, tasks) on up to `threads` threads and
  // returns when all have finished. Tasks must be independent of each other.
  // When the pool is busy (another thread is inside parallel_for, or a task
  // calls parallel_for again) the tasks run on the calling thread. The first
  // exception thrown by a task is rethrown here once every task has stopped.
  void parallel_for(int64_t tasks, int threads, const std::function<void(int64_t)>& task);

  // The process-wide pool the kernels use, made on first use with
  // default_thread_count() threads.
  static ThreadPool& global();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tq
