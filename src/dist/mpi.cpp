// MpiCommunicator: collectives with a deadline (docs/distributed.md "Timeouts").
#include "dist/mpi.h"

#include <mpi.h>

#include <algorithm>
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

// The deadline of the collective in progress, watched by a thread of its own
// (below). The collectives themselves are MPI's blocking ones: on a loaded
// machine a nonblocking collective polled with MPI_Test progresses only while
// both ranks happen to poll, and an epoch took 5 times longer.
struct Watch {
  std::mutex m;
  std::condition_variable cv;
  bool armed = false, stop = false;
  std::chrono::steady_clock::time_point deadline;
  std::string what;
  double timeout = 0;
  std::thread thread;
};

Watch& watch() {
  static Watch w;
  return w;
}

// Runs beside the main thread: when a collective outlives its deadline, it
// prints which one and ends this process at once. (MPI_Abort may be called
// only from the thread that talks to MPI; ending the process instead makes
// mpirun end every rank, which is what MPI_Abort would do.)
void watchdog() {
  Watch& w = watch();
  std::unique_lock lock(w.m);
  while (!w.stop) {
    if (!w.armed) {
      w.cv.wait(lock);
      continue;
    }
    if (w.cv.wait_until(lock, w.deadline) == std::cv_status::timeout && w.armed && std::chrono::steady_clock::now() >= w.deadline) {
      std::fprintf(stderr,
                   "tinyqat: rank %d: %s timed out after %g s: another rank died, hangs or stopped calling "
                   "collectives; ending the job (TINYQAT_COLLECTIVE_TIMEOUT sets the limit in seconds)\n",
                   my_rank(), w.what.c_str(), w.timeout);
      std::fflush(stderr);
      std::_Exit(3);
    }
  }
}

// Arms the watchdog for the scope of one collective.
class Deadline {
 public:
  Deadline(double timeout, std::string what) {
    Watch& w = watch();
    {
      std::lock_guard lock(w.m);
      w.armed = true;
      w.timeout = timeout;
      w.what = std::move(what);
      w.deadline = std::chrono::steady_clock::now() +
                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(timeout));
    }
    w.cv.notify_one();
  }
  ~Deadline() {
    Watch& w = watch();
    std::lock_guard lock(w.m);
    w.armed = false;
  }
};

template <class T>
void allreduce_impl(T* data, int64_t n, ReduceOp op, MPI_Datatype type, double timeout, const char* tname) {
  // MPI counts are int: a large buffer goes in pieces.
  for (int64_t at = 0; at < n; at += INT_MAX / 2) {
    const int count = static_cast<int>(std::min<int64_t>(n - at, INT_MAX / 2));
    Deadline d(timeout, fmt::format("all-reduce ({}) of {} {} values", op_name(op), n, tname));
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
    Deadline d(timeout_, fmt::format("broadcast of {} bytes from rank {}", bytes, root));
    MPI_Bcast(p + at, count, MPI_BYTE, root, MPI_COMM_WORLD);
  }
}

void MpiCommunicator::barrier() {
  Deadline d(timeout_, "barrier");
  MPI_Barrier(MPI_COMM_WORLD);
}

std::string MpiCommunicator::describe() const { return fmt::format("MPI, {} ranks", size_); }

}  // namespace tq::dist
