// The MPI communicator (docs/distributed.md): dist::Communicator over
// MPI_COMM_WORLD, in a library of its own (tinyqat_dist) so that only the
// programs that link it need MPI.
//
//   int main(int argc, char** argv) {
//     tq::dist::MpiSession mpi(argc, argv);  // under mpirun: MPI up, world() = the ranks
//     ...                                    // else: nothing, a single process
//   }
//
// Every collective runs under a deadline kept by a watchdog thread: when a
// rank died or stopped calling collectives, the ranks still waiting print
// which collective timed out and end, and mpirun ends the job, instead of
// waiting for ever.
#pragma once

#include <memory>
#include <string>

#include "tensor/communicator.h"

namespace tq::dist {

// Seconds a rank waits for one collective: TINYQAT_COLLECTIVE_TIMEOUT when set
// (a positive number), else 300.
double collective_timeout_from_env();

// Was this process started by an MPI launcher (mpirun / mpiexec of Open MPI,
// or a PMI-based one)? Read from the environment the launcher sets.
bool launched_by_mpi();

// Initialises MPI when launched_by_mpi() (or `force`), installs an
// MpiCommunicator as world() and finalizes MPI at the end of its scope; a
// process started without a launcher does not touch MPI at all.
class MpiSession {
 public:
  MpiSession(int& argc, char**& argv, bool force = false);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  bool active() const { return active_; }

 private:
  bool active_ = false;
  std::shared_ptr<Communicator> previous_;
};

// Ends the whole job: prints "tinyqat: rank R: <message>" on stderr and
// calls MPI_Abort when MPI is up (every rank stops), else std::exit(code).
[[noreturn]] void abort_job(int code, const std::string& message);

class MpiCommunicator final : public Communicator {
 public:
  // MPI must be initialised. timeout_seconds: see collective_timeout_from_env().
  explicit MpiCommunicator(double timeout_seconds);
  ~MpiCommunicator() override;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce(float* data, int64_t n, ReduceOp op) override;
  void allreduce(double* data, int64_t n, ReduceOp op) override;
  void allreduce(int64_t* data, int64_t n, ReduceOp op) override;
  void broadcast(void* data, int64_t bytes, int root) override;
  void barrier() override;
  std::string describe() const override;
  double timeout_seconds() const { return timeout_; }

 private:
  int rank_ = 0, size_ = 1;
  double timeout_;
};

}  // namespace tq::dist
