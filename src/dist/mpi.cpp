// MpiCommunicator: collectives with a deadline (docs/distributed.md "Timeouts").
#include "dist/mpi.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
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

// Waits for `req`, polling; after `timeout` seconds ends the job naming `what`.
// The first moments spin (a collective between ranks on one machine takes
// microseconds), then the rank sleeps between polls so that a long wait (a
// slower rank, a loaded machine) does not burn the core another rank needs.
void wait(MPI_Request& req, double timeout, const std::string& what) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  int done = 0;
  for (int64_t polls = 0;; ++polls) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done) return;
    if (polls < 2000) continue;
    const double waited = std::chrono::duration<double>(clock::now() - start).count();
    if (waited > timeout)
      abort_job(3, fmt::format("{} timed out after {:g} s: another rank died, hangs or stopped calling collectives; "
                               "ending the job (TINYQAT_COLLECTIVE_TIMEOUT sets the limit in seconds)",
                               what, timeout));
    if (waited > 0.002) std::this_thread::sleep_for(std::chrono::microseconds(waited > 0.1 ? 1000 : 20));
  }
}

template <class T>
void allreduce_impl(T* data, int64_t n, ReduceOp op, MPI_Datatype type, double timeout, const char* tname) {
  // MPI counts are int: a large buffer goes in pieces.
  for (int64_t at = 0; at < n; at += INT_MAX / 2) {
    const int count = static_cast<int>(std::min<int64_t>(n - at, INT_MAX / 2));
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, data + at, count, type, to_mpi(op), MPI_COMM_WORLD, &req);
    wait(req, timeout, fmt::format("all-reduce ({}) of {} {} values", op_name(op), n, tname));
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
    MPI_Request req;
    MPI_Ibcast(p + at, count, MPI_BYTE, root, MPI_COMM_WORLD, &req);
    wait(req, timeout_, fmt::format("broadcast of {} bytes from rank {}", bytes, root));
  }
}

void MpiCommunicator::barrier() {
  MPI_Request req;
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  wait(req, timeout_, "barrier");
}

std::string MpiCommunicator::describe() const { return fmt::format("MPI, {} ranks", size_); }

}  // namespace tq::dist
