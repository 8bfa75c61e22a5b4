// Communicator: the collectives data-parallel training needs (docs/distributed.md),
// as an interface in the lowest layer so that BatchNorm (autograd) and the
// observers (quant) can synchronise their statistics without knowing MPI.
//
// The process holds one current communicator, world(). By default it is a
// single process (rank 0 of 1) whose collectives leave the data as it is: a
// program that never sets another runs exactly as before, and no code path
// changes. The MPI implementation lives in its own library (dist/mpi.h),
// linked only by the programs that use it, and is installed with set_world().
//
// Every rank must call the same collectives in the same order with the same
// sizes: what the layers do in training mode (BatchNorm with batch
// statistics, observers that update) is therefore the same on every rank.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace tq::dist {

enum class ReduceOp { sum, min, max };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // data (n) on every rank <- op over the ranks' data, element by element.
  virtual void allreduce(float* data, int64_t n, ReduceOp op) = 0;
  virtual void allreduce(double* data, int64_t n, ReduceOp op) = 0;
  virtual void allreduce(int64_t* data, int64_t n, ReduceOp op) = 0;
  // bytes of data on every rank <- those of rank `root`.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // "single process", "MPI (4 ranks)": for messages.
  virtual std::string describe() const = 0;

  void allreduce_sum(float* data, int64_t n) { allreduce(data, n, ReduceOp::sum); }
  void allreduce_sum(double* data, int64_t n) { allreduce(data, n, ReduceOp::sum); }
  void allreduce_sum(int64_t* data, int64_t n) { allreduce(data, n, ReduceOp::sum); }
};

// Rank 0 of 1: every collective leaves the data unchanged.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce(float*, int64_t, ReduceOp) override {}
  void allreduce(double*, int64_t, ReduceOp) override {}
  void allreduce(int64_t*, int64_t, ReduceOp) override {}
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  std::string describe() const override { return "single process"; }
};

// The current communicator (a SingleProcess until set_world says otherwise).
Communicator& world();
// Installs `c` (nullptr: back to a single process); returns the previous one.
std::shared_ptr<Communicator> set_world(std::shared_ptr<Communicator> c);
// More than one rank: the layers synchronise their statistics.
inline bool distributed() { return world().size() > 1; }

// Installs a communicator for a scope, puts the previous one back after.
class WorldScope {
 public:
  explicit WorldScope(std::shared_ptr<Communicator> c) : previous_(set_world(std::move(c))) {}
  ~WorldScope() { set_world(previous_); }
  WorldScope(const WorldScope&) = delete;
  WorldScope& operator=(const WorldScope&) = delete;

 private:
  std::shared_ptr<Communicator> previous_;
};

// FNV-1a over bytes, continuing from `h`: a digest of a model's bytes, for
// checking that replicas agree (nn/data_parallel.h).
uint64_t fnv1a(const void* data, int64_t bytes, uint64_t h = 0xcbf29ce484222325ULL);

}  // namespace tq::dist
