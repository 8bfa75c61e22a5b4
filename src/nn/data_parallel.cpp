// Data-parallel helpers: broadcast, replica digest, bucketed gradient
// averaging (docs/distributed.md).
#include "nn/data_parallel.h"

#include <chrono>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

namespace tq::nn {

namespace {

std::vector<std::pair<std::string, Tensor>> state_of(const Module& model) {
  std::vector<std::pair<std::string, Tensor>> all = model.named_parameters();
  for (auto& b : model.named_buffers()) all.push_back(b);
  return all;
}

uint64_t signature(const std::string& name, const Tensor& t, uint64_t h) {
  h = dist::fnv1a(name.data(), static_cast<int64_t>(name.size()), h);
  const int dt = static_cast<int>(t.dtype());
  h = dist::fnv1a(&dt, sizeof dt, h);
  for (int64_t d : t.shape()) h = dist::fnv1a(&d, sizeof d, h);
  return h;
}

}  // namespace

void broadcast_state(Module& model, dist::Communicator& comm) {
  if (comm.size() == 1) return;
  const auto all = state_of(model);
  // The structure first: names, shapes, dtypes must agree before any bytes move.
  std::vector<int64_t> sig(all.size() + 1), root_sig;
  sig[0] = static_cast<int64_t>(all.size());
  for (size_t i = 0; i < all.size(); ++i) sig[i + 1] = static_cast<int64_t>(signature(all[i].first, all[i].second, 0));
  int64_t n = sig[0];
  comm.broadcast(&n, sizeof n, 0);
  root_sig.assign(static_cast<size_t>(n) + 1, 0);
  if (comm.rank() == 0) root_sig = sig;
  comm.broadcast(root_sig.data(), static_cast<int64_t>(root_sig.size() * sizeof(int64_t)), 0);
  // Every rank decides the same way: the verdict is all-reduced.
  int64_t mismatch = -1;
  if (root_sig.size() != sig.size()) mismatch = static_cast<int64_t>(std::min(sig.size(), root_sig.size())) - 1;
  else
    for (size_t i = 1; i < sig.size() && mismatch < 0; ++i)
      if (sig[i] != root_sig[i]) mismatch = static_cast<int64_t>(i) - 1;
  int64_t any = mismatch >= 0 ? 1 : 0;
  comm.allreduce(&any, 1, dist::ReduceOp::max);
  if (any)
    throw std::runtime_error(fmt::format(
        "broadcast_state: the model on rank {} differs from rank 0's{}; every rank must build the same model",
        comm.rank(),
        mismatch >= 0 && static_cast<size_t>(mismatch) < all.size()
            ? fmt::format(" at '{}' ({} {})", all[static_cast<size_t>(mismatch)].first,
                          all[static_cast<size_t>(mismatch)].second.shape().str(),
                          dtype_name(all[static_cast<size_t>(mismatch)].second.dtype()))
            : std::string(mismatch >= 0 ? " (another number of tensors)" : " (on another rank)")));
  for (const auto& [name, t] : all) {
    if (!t.is_contiguous()) throw std::logic_error(fmt::format("broadcast_state: '{}' is not contiguous", name));
    comm.broadcast(t.raw_data(), static_cast<int64_t>(t.numel() * dtype_size(t.dtype())), 0);
  }
}

uint64_t state_digest(const Module& model) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const auto& [name, t] : state_of(model)) {
    h = signature(name, t, h);
    if (t.is_contiguous()) h = dist::fnv1a(t.raw_data(), static_cast<int64_t>(t.numel() * dtype_size(t.dtype())), h);
  }
  return h;
}

bool replicas_agree(const Module& model, dist::Communicator& comm) {
  if (comm.size() == 1) return true;
  // Digests as two 32-bit halves in int64s: equal everywhere iff min == max.
  const uint64_t d = state_digest(model);
  int64_t lo[2] = {static_cast<int64_t>(d >> 32), static_cast<int64_t>(d & 0xffffffffu)};
  int64_t hi[2] = {lo[0], lo[1]};
  comm.allreduce(lo, 2, dist::ReduceOp::min);
  comm.allreduce(hi, 2, dist::ReduceOp::max);
  return lo[0] == hi[0] && lo[1] == hi[1];
}

GradientReducer::GradientReducer(std::vector<Tensor> params, int64_t bucket_bytes) : params_(std::move(params)) {
  if (bucket_bytes < 4) throw std::invalid_argument(fmt::format("GradientReducer: bucket_bytes {} < 4", bucket_bytes));
  size_t i = 0;
  while (i < params_.size()) {
    Bucket b{i, i, {}};
    int64_t bytes = 0;
    // At least one parameter per bucket; a large one is a bucket of its own.
    while (b.last < params_.size() && (b.last == b.first || bytes + params_[b.last].numel() * 4 <= bucket_bytes))
      bytes += params_[b.last++].numel() * 4;
    b.flat.resize(static_cast<size_t>(bytes / 4));
    buckets_.push_back(std::move(b));
    i = buckets_.back().last;
  }
}

void GradientReducer::reduce(double share, dist::Communicator& comm) {
  if (comm.size() == 1 && share == 1.0) return;
  const auto f = static_cast<float>(share);
  for (Bucket& b : buckets_) {
    float* flat = b.flat.data();
    size_t at = 0;
    for (size_t p = b.first; p < b.last; ++p) {
      const Tensor g = params_[p].grad();
      const auto n = static_cast<size_t>(params_[p].numel());
      if (g.defined()) {
        if (g.dtype() != DType::f32 || !g.is_contiguous() || g.numel() != params_[p].numel())
          throw std::invalid_argument(fmt::format("GradientReducer: the gradient of parameter {} is not a contiguous f32 "
                                                  "tensor of its parameter's size",
                                                  p));
        const float* src = g.data<float>();
        for (size_t k = 0; k < n; ++k) flat[at + k] = src[k] * f;
      } else {
        std::memset(flat + at, 0, n * sizeof(float));
      }
      at += n;
    }
    const auto t0 = std::chrono::steady_clock::now();
    comm.allreduce_sum(flat, static_cast<int64_t>(b.flat.size()));
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    at = 0;
    for (size_t p = b.first; p < b.last; ++p) {
      const auto n = static_cast<size_t>(params_[p].numel());
      if (const Tensor g = params_[p].grad(); g.defined()) std::memcpy(g.data<float>(), flat + at, n * sizeof(float));
      at += n;
    }
  }
}

}  // namespace tq::nn
