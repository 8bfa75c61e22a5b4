// MpiCommunicator: collectives with a deadline (docs/distributed.md "Timeouts").
#include "dist/mpi.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <fmt/format.h>

namespace tq::dist {

namespace {

MPI_Op to_mpi(ReduceOp op) { return op == ReduceOp::sum ? MPI_SUM : op == ReduceOp::min ? MPI_MIN : MPI_MAX; }

const char* op_name(ReduceOp op) { return op == ReduceOp::sum ? "sum" : op == ReduceOp::min ? "min" : "max"; }

bool mpi_up() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

int my_rank() {
  int r = 0;
  if (mpi_up()) MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// The collective in progress, watched by a thread of its own (below). The
// collectives themselves are MPI's blocking ones: on a loaded machine a
// nonblocking collective polled with MPI_Test progresses only while both
// ranks happen to poll, and an epoch took 5 times longer.
//
// Entering and leaving a collective only stores a few atomics (no lock, no
// wake-up, no string): a step of a small model calls several collectives a
// millisecond, and waking the watchdog each time put a third thread on the
// two ranks' cores. The watchdog instead looks a few times per timeout
// whether the same collective is still in progress.
struct Watch {
  std::mutex m;  // for stop and cv only
  std::condition_variable cv;
  bool stop = false;
  // Odd while a collective runs; incremented when one starts and when it ends.
  std::atomic<uint64_t> seq{0};
  std::atomic<int64_t> started_ns{0};  // steady_clock, of the one running
  // What it is, for the message: "all-reduce (sum) of <n> <type> values",
  // "broadcast of <n> bytes from rank <root>", "barrier".
  std::atomic<int> kind{0}, op{0}, root{0};
  std::atomic<int64_t> count{0};
  std::atomic<const char*> type{""};
  std::atomic<double> timeout{1};  // seconds, of the one running (its communicator's)
  std::thread thread;
};

Watch& watch() {
  static Watch w;
  return w;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

enum Kind { kAllreduce, kBroadcast, kBarrier };

std::string describe_collective(const Watch& w) {
  switch (w.kind.load(std::memory_order_relaxed)) {
    case kAllreduce:
      return fmt::format("all-reduce ({}) of {} {} values", op_name(static_cast<ReduceOp>(w.op.load(std::memory_order_relaxed))),
                         w.count.load(std::memory_order_relaxed), w.type.load(std::memory_order_relaxed));
    case kBroadcast:
      return fmt::format("broadcast of {} bytes from rank {}", w.count.load(std::memory_order_relaxed),
                         w.root.load(std::memory_order_relaxed));
    default:
      return "barrier";
  }
}

// Runs beside the main thread: when one collective outlives the timeout, it
// prints which one and ends this process at once. (MPI_Abort may be called
// only from the thread that talks to MPI; ending the process instead makes
// mpirun end every rank, which is what MPI_Abort would do.)
void watchdog() {
  Watch& w = watch();
  std::unique_lock lock(w.m);
  while (!w.stop) {
    w.cv.wait_for(lock, std::chrono::duration<double>(std::clamp(w.timeout.load() / 8, 0.01, 1.0)));
    if (w.stop) break;
    const uint64_t seq = w.seq.load(std::memory_order_acquire);
    if (seq % 2 == 0) continue;
    const double running = 1e-9 * static_cast<double>(now_ns() - w.started_ns.load(std::memory_order_relaxed));
    const std::string what = describe_collective(w);
    // Still the same collective (not one that ended and another that began)?
    const double timeout = w.timeout.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);  // the loads above happen before the check below
    if (running < timeout || w.seq.load(std::memory_order_acquire) != seq) continue;
    std::fprintf(stderr,
                 "tinyqat: rank %d: %s timed out after %g s: another rank died, hangs or stopped calling "
                 "collectives; ending the job (TINYQAT_COLLECTIVE_TIMEOUT sets the limit in seconds)\n",
                 my_rank(), what.c_str(), timeout);
    std::fflush(stderr);
    std::_Exit(3);
  }
}

// Marks one collective as running for its scope.
class Deadline {
 public:
  Deadline(double timeout, Kind kind, ReduceOp op, int64_t count, const char* type, int root = 0) {
    Watch& w = watch();
    w.timeout.store(timeout, std::memory_order_relaxed);
    w.kind.store(kind, std::memory_order_relaxed);
    w.op.store(static_cast<int>(op), std::memory_order_relaxed);
    w.count.store(count, std::memory_order_relaxed);
    w.type.store(type, std::memory_order_relaxed);
    w.root.store(root, std::memory_order_relaxed);
    w.started_ns.store(now_ns(), std::memory_order_relaxed);
    w.seq.fetch_add(1, std::memory_order_acq_rel);  // odd: running
  }
  ~Deadline() { watch().seq.fetch_add(1, std::memory_order_acq_rel); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
};

template <class T>
void allreduce_impl(T* data, int64_t n, ReduceOp op, MPI_Datatype type, double timeout, const char* tname) {
  // MPI counts are int: a large buffer goes in pieces.
  for (int64_t at = 0; at < n; at += INT_MAX / 2) {
    const int count = static_cast<int>(std::min<int64_t>(n - at, INT_MAX / 2));
    Deadline d(timeout, kAllreduce, op, n, tname);
    MPI_Allreduce(MPI_IN_PLACE, data + at, count, type, to_mpi(op), MPI_COMM_WORLD);
  }
}

}  // namespace

double collective_timeout_from_env() {
  if (const char* s = std::getenv("TINYQAT_COLLECTIVE_TIMEOUT")) {
    char* end = nullptr;
    const double v = std::strtod(s, &end);
    if (end == s || *end != '\0' || !(v > 0))
      throw std::invalid_argument(
          fmt::format("TINYQAT_COLLECTIVE_TIMEOUT='{}': expected a positive number of seconds", s));
    return v;
  }
  return 300;
}

bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

MpiSession::MpiSession(int& argc, char**& argv, bool force) {
  if (!force && !launched_by_mpi()) return;
  const double timeout = collective_timeout_from_env();
  int provided = 0;
  // Only the calling thread talks to MPI (the thread pool never does).
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw std::runtime_error("MPI_Init_thread failed");
  active_ = true;
  previous_ = set_world(std::make_shared<MpiCommunicator>(timeout));
}

MpiSession::~MpiSession() {
  if (!active_) return;
  set_world(previous_);
  MPI_Finalize();
}

void abort_job(int code, const std::string& message) {
  std::fprintf(stderr, "tinyqat: rank %d: %s\n", my_rank(), message.c_str());
  std::fflush(stderr);
  if (mpi_up()) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

MpiCommunicator::MpiCommunicator(double timeout_seconds) : timeout_(timeout_seconds) {
  if (!mpi_up()) throw std::logic_error("MpiCommunicator: MPI is not initialised");
  if (!(timeout_ > 0)) throw std::invalid_argument(fmt::format("MpiCommunicator: timeout {} s must be positive", timeout_));
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  if (!watch().thread.joinable()) watch().thread = std::thread(watchdog);
}

MpiCommunicator::~MpiCommunicator() {
  Watch& w = watch();
  if (!w.thread.joinable()) return;
  {
    std::lock_guard lock(w.m);
    w.stop = true;
  }
  w.cv.notify_one();
  w.thread.join();
  w.stop = false;
}

void MpiCommunicator::allreduce(float* data, int64_t n, ReduceOp op) {
  allreduce_impl(data, n, op, MPI_FLOAT, timeout_, "f32");
}
void MpiCommunicator::allreduce(double* data, int64_t n, ReduceOp op) {
  allreduce_impl(data, n, op, MPI_DOUBLE, timeout_, "f64");
}
void MpiCommunicator::allreduce(int64_t* data, int64_t n, ReduceOp op) {
  allreduce_impl(data, n, op, MPI_INT64_T, timeout_, "i64");
}

void MpiCommunicator::broadcast(void* data, int64_t bytes, int root) {
  auto* p = static_cast<char*>(data);
  for (int64_t at = 0; at < bytes; at += INT_MAX / 2) {
    const int count = static_cast<int>(std::min<int64_t>(bytes - at, INT_MAX / 2));
    Deadline d(timeout_, kBroadcast, ReduceOp::sum, bytes, "", root);
    MPI_Bcast(p + at, count, MPI_BYTE, root, MPI_COMM_WORLD);
  }
}

void MpiCommunicator::barrier() {
  Deadline d(timeout_, kBarrier, ReduceOp::sum, 0, "");
  MPI_Barrier(MPI_COMM_WORLD);
}

std::string MpiCommunicator::describe() const { return fmt::format("MPI, {} ranks", size_); }

}  // namespace tq::dist
