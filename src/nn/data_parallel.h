// Data-parallel training over a dist::Communicator (docs/distributed.md):
// one replica of the model on every rank, each rank a shard of the global
// batch; after backward the gradients are averaged over the ranks, so every
// replica takes the same optimizer step and stays identical.
//
//   nn::broadcast_state(model);                  // rank 0's weights everywhere
//   nn::GradientReducer reducer(model.parameters());
//   for (...) {                                  // a loader sharded by rank (io::DataLoader)
//     optimizer.zero_grad();
//     cross_entropy(model(batch.images), batch.labels).backward();
//     reducer.reduce(share);                     // share = this rank's samples / global batch
//     optimizer.step();
//   }
//
// With a single process (the default world) every call here does nothing.
#pragma once

#include <cstdint>
#include <vector>

#include "nn/module.h"
#include "tensor/communicator.h"

namespace tq::nn {

// Every parameter and buffer of `model` <- rank 0's, in place (the tensors
// keep their storage). The models must have the same structure on every
// rank: a different list of names, shapes or dtypes is an error naming the
// first tensor that differs, on every rank.
void broadcast_state(Module& model, dist::Communicator& comm = dist::world());

// A digest of every parameter's and buffer's name, shape, dtype and bytes.
uint64_t state_digest(const Module& model);

// Do all ranks hold the same model (state_digest)? The same answer on every rank.
bool replicas_agree(const Module& model, dist::Communicator& comm = dist::world());

// Averages gradients over the ranks in buckets: each bucket is the gradients
// of consecutive parameters flattened into one f32 buffer of about
// `bucket_bytes`, reduced with one all-reduce (one large message costs one
// latency, one per parameter costs as many). A parameter without a gradient
// on this step takes part as zeros and keeps no gradient.
class GradientReducer {
 public:
  explicit GradientReducer(std::vector<Tensor> params, int64_t bucket_bytes = int64_t{1} << 20);
  // grad <- sum over ranks of share_r * grad_r, where share_r is rank r's part
  // of the step's loss: n_r / n when each rank's loss is the mean over its n_r
  // of the global batch's n samples (1 / size with equal shards), which makes
  // the result the gradient of the global batch's mean loss.
  void reduce(double share, dist::Communicator& comm = dist::world());
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Seconds spent inside the all-reduces so far (docs/distributed.md "Cost").
  double allreduce_seconds() const { return seconds_; }

 private:
  struct Bucket {
    size_t first, last;  // parameters [first, last)
    std::vector<float> flat;
  };
  std::vector<Tensor> params_;
  std::vector<Bucket> buckets_;
  double seconds_ = 0;
};

}  // namespace tq::nn
