// Seeded random numbers. One global generator (manual_seed) makes
// initialisation and shuffling reproducible; the algorithms are written out
// here (not std::*_distribution) so a seed gives the same numbers everywhere.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace tq {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { seed_(seed); }
  void seed_(uint64_t seed);
  uint64_t next_u64();            // xoshiro256**
  double uniform();               // [0, 1) with 53 random bits
  double normal();                // standard normal (Box-Muller)
  uint64_t below(uint64_t n);     // uniform integer in [0, n); n = 0 throws
  // The whole state, so a checkpoint can resume the exact sequence.
  struct State { uint64_t s[4]; bool has_spare; double spare; };
  State state() const { return {{s_[0], s_[1], s_[2], s_[3]}, has_spare_, spare_}; }
  void set_state(const State& st);  // throws on the all-zero state or a non-finite spare

 private:
  uint64_t s_[4] = {};
  bool has_spare_ = false;
  double spare_ = 0;
};

Generator& default_generator();
void manual_seed(uint64_t seed);

// f32 tensors of the given shape.
Tensor rand_uniform(const Shape& shape, double low, double high, Generator& g = default_generator());
Tensor randn(const Shape& shape, Generator& g = default_generator());
// i64 tensor of integers in [low, high).
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& g = default_generator());
// i64 tensor holding a random permutation of 0..n-1 (Fisher-Yates): the order
// in which an epoch visits a data set.
Tensor randperm(int64_t n, Generator& g = default_generator());

}  // namespace tq
