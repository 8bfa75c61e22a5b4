// The global seeded generator (xoshiro256**), uniform / normal / integer
// draws and permutations (docs/tensor.md §7).
#include "tensor/random.h"

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>
#include <utility>

namespace tq {

static uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void Generator::seed_(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
  has_spare_ = false;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t Generator::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2.0 * std::numbers::pi * u2);
  has_spare_ = true;
  return r * std::cos(2.0 * std::numbers::pi * u2);
}

uint64_t Generator::below(uint64_t n) {
  if (n == 0) throw std::invalid_argument("Generator::below: the range [0, 0) is empty");
  // Rejection sampling: no modulo bias.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = next_u64(); while (x >= limit);
  return x % n;
}

void Generator::set_state(const State& st) {
  // xoshiro256** never reaches the all-zero state and stays there if put in
  // it: every draw would be 0 and normal() would loop forever looking for a
  // positive uniform. A spare normal deviate must be a number.
  if ((st.s[0] | st.s[1] | st.s[2] | st.s[3]) == 0)
    throw std::invalid_argument("Generator::set_state: the all-zero state is not a state of xoshiro256**");
  if (st.has_spare && !std::isfinite(st.spare))
    throw std::invalid_argument("Generator::set_state: the spare normal deviate " + std::to_string(st.spare) +
                                " is not finite");
  for (int i = 0; i < 4; ++i) s_[i] = st.s[i];
  has_spare_ = st.has_spare;
  spare_ = st.spare;
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().seed_(seed); }

Tensor rand_uniform(const Shape& shape, double low, double high, Generator& g) {
  Tensor t = empty(shape, DType::f32);
  float* p = t.data<float>();
  for (int64_t i = 0, i_end = t.numel(); i < i_end; ++i) p[i] = static_cast<float>(low + (high - low) * g.uniform());
  return t;
}

Tensor randn(const Shape& shape, Generator& g) {
  Tensor t = empty(shape, DType::f32);
  float* p = t.data<float>();
  for (int64_t i = 0, i_end = t.numel(); i < i_end; ++i) p[i] = static_cast<float>(g.normal());
  return t;
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& g) {
  if (high <= low)
    throw std::invalid_argument("randint: high (" + std::to_string(high) + ") must be greater than low (" +
                                std::to_string(low) + ")");
  Tensor t = empty(shape, DType::i64);
  int64_t* p = t.data<int64_t>();
  for (int64_t i = 0, i_end = t.numel(); i < i_end; ++i) p[i] = low + static_cast<int64_t>(g.below(static_cast<uint64_t>(high - low)));
  return t;
}

Tensor randperm(int64_t n, Generator& g) {
  if (n < 0) throw std::invalid_argument("randperm: n must be non-negative, got " + std::to_string(n));
  Tensor t = arange(n, DType::i64);
  int64_t* p = t.data<int64_t>();
  // Walk from the end, swapping each position with a uniformly chosen one at or before it.
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[static_cast<int64_t>(g.below(static_cast<uint64_t>(i + 1)))]);
  return t;
}

}  // namespace tq
