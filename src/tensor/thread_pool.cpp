// thread_pool.cpp — see thread_pool.h. One "generation" per parallel_for
// call: the caller publishes the task, bumps the generation and wakes the
// workers; everyone (caller included) takes task indices from one atomic
// counter until none are left; the caller then waits for the workers.
#include "tensor/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace tq {

namespace {
// Set while a thread runs tasks of some pool, so that a nested parallel_for
// runs inline instead of waiting on a pool that is waiting on it.
thread_local bool inside_parallel_for = false;
}  // namespace

int default_thread_count() {
  // Asked once: hardware_concurrency() reads /sys/devices/system/cpu/online
  // on every call (open, read, close: ~5 us), which at batch 1 cost more
  // than the int8 layer itself.
  static const int count = [] {
    const unsigned hardware = std::thread::hardware_concurrency();
    return hardware == 0 ? 1 : static_cast<int>(hardware);
  }();
  return count;
}

struct ThreadPool::State {
  int max_threads = 1;
  std::vector<std::thread> workers;

  std::mutex call_mutex;  // one parallel_for at a time
  std::mutex mutex;       // guards everything below
  std::condition_variable wake;
  std::condition_variable done;
  uint64_t generation = 0;
  bool stopping = false;
  int participants = 0;  // workers (not counting the caller) that take part in this generation
  int running = 0;       // participants that have not finished yet
  const std::function<void(int64_t)>* task = nullptr;
  int64_t tasks = 0;
  std::atomic<int64_t> next_task{0};
  std::exception_ptr error;

  void run_tasks() {
    inside_parallel_for = true;
    for (int64_t i = next_task.fetch_add(1); i < tasks; i = next_task.fetch_add(1)) {
      try {
        (*task)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
      }
    }
    inside_parallel_for = false;
  }

  void worker_loop(int index) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      wake.wait(lock, [&] { return stopping || generation != seen; });
      if (stopping) return;
      seen = generation;
      if (index >= participants) continue;
      lock.unlock();
      run_tasks();
      lock.lock();
      if (--running == 0) done.notify_one();
    }
  }
};

ThreadPool::ThreadPool(int max_threads) : state_(std::make_unique<State>()) {
  state_->max_threads = std::max(1, max_threads);
  for (int i = 0; i + 1 < state_->max_threads; ++i) {
    state_->workers.emplace_back([state = state_.get(), i] { state->worker_loop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
  }
  state_->wake.notify_all();
  for (std::thread& worker : state_->workers) worker.join();
}

int ThreadPool::max_threads() const { return state_->max_threads; }

void ThreadPool::parallel_for(int64_t tasks, int threads, const std::function<void(int64_t)>& task) {
  if (tasks <= 0) return;
  const int64_t wanted = std::min<int64_t>({static_cast<int64_t>(std::max(threads, 1)), state_->max_threads, tasks});
  auto run_inline = [&] {
    for (int64_t i = 0; i < tasks; ++i) task(i);
  };
  if (wanted <= 1 || inside_parallel_for) return run_inline();
  std::unique_lock<std::mutex> call(state_->call_mutex, std::try_to_lock);
  if (!call.owns_lock()) return run_inline();

  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.task = &task;
    s.tasks = tasks;
    s.next_task.store(0);
    s.participants = static_cast<int>(wanted) - 1;
    s.running = s.participants;
    s.error = nullptr;
    ++s.generation;
  }
  s.wake.notify_all();
  s.run_tasks();
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(s.mutex);
    s.done.wait(lock, [&] { return s.running == 0; });
    s.task = nullptr;
    error = s.error;
    s.error = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(default_thread_count());
  return pool;
}

}  // namespace tq
