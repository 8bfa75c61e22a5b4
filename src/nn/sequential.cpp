#include "nn/sequential.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include <typeinfo>

#include "autograd/fused_conv_ops.h"
#include "autograd/node.h"
#include "autograd/norm_ops.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/pooling.h"

namespace tq::nn {

namespace {

template <class M>
M* exactly(Module& m) {
  return typeid(m) == typeid(M) ? static_cast<M*>(&m) : nullptr;
}

// Is x a plain float (N, C, H, W) input of `conv`, with a plain float weight,
// whose output (oh, ow) is not empty? Otherwise the modules run one by one
// and raise their own errors.
bool plain_conv_input(const Conv2d& conv, const Tensor& x, int64_t& oh, int64_t& ow) {
  if (!x.defined() || x.dtype() != DType::f32 || x.is_quantized() || x.dim() != 4 || x.size(1) != conv.in_channels)
    return false;
  if (conv.weight.dtype() != DType::f32 || conv.weight.is_quantized()) return false;
  const int64_t eff_h = conv.dilation.h * (conv.kernel_size.h - 1) + 1;
  const int64_t eff_w = conv.dilation.w * (conv.kernel_size.w - 1) + 1;
  if (x.size(2) + 2 * conv.padding.h < eff_h || x.size(3) + 2 * conv.padding.w < eff_w) return false;
  oh = (x.size(2) + 2 * conv.padding.h - eff_h) / conv.stride.h + 1;
  ow = (x.size(3) + 2 * conv.padding.w - eff_w) / conv.stride.w + 1;
  return true;
}

// Each fusion below looks at the children from m[0] (`left` of them, m[i]
// valid for i < min(left, kMaxRun)) and the input x; when they form its run,
// it computes the run's output into `out` and returns how many children it
// ran, else it returns 0 and nothing has happened.
constexpr size_t kMaxRun = 4;

// Conv2d -> BatchNorm2d (training) -> ReLU -> MaxPool2d(2, 2) on a plain float
// input of the right channel count, as one fused op: 4.
size_t fused_conv_bn_relu_pool(Module* const* m, size_t left, const Tensor& x, Tensor& out) {
  if (left < 4) return 0;
  Conv2d* conv = exactly<Conv2d>(*m[0]);
  BatchNorm2d* bn = exactly<BatchNorm2d>(*m[1]);
  MaxPool2d* pool = exactly<MaxPool2d>(*m[3]);
  if (!conv || !bn || !exactly<ReLU>(*m[2]) || !pool || !bn->is_training()) return 0;
  // (Data parallel, the fused op all-reduces its statistics as batch_norm does.)
  if (bn->num_features != conv->out_channels) return 0;
  if (pool->kernel_size.h != 2 || pool->kernel_size.w != 2 || pool->stride.h != 2 || pool->stride.w != 2 ||
      pool->padding.h != 0 || pool->padding.w != 0 || pool->dilation.h != 1 || pool->dilation.w != 1)
    return 0;
  // The convolution's output must be pooled and normalised at all.
  int64_t oh = 0, ow = 0;
  if (!plain_conv_input(*conv, x, oh, ow) || oh < 2 || ow < 2) return 0;
  out = conv2d_batch_norm_relu_max_pool2x2(x, conv->weight, conv->bias, conv->options(), bn->running_mean(),
                                           bn->running_var(), bn->weight, bn->bias, bn->momentum, bn->eps);
  bn->count_batch();
  return 4;
}

// BatchNorm2d (eval, running statistics) -> ReLU6 on a plain float (N, C, H, W)
// input, with no gradient being recorded (inference): one pass instead of two
// over the activation, the same bits as the two modules: 2.
size_t fused_bn_relu6_eval(Module* const* m, size_t left, const Tensor& x, Tensor& out) {
  if (left < 2) return 0;
  BatchNorm2d* bn = exactly<BatchNorm2d>(*m[0]);
  if (!bn || !exactly<ReLU6>(*m[1]) || bn->is_training() || !bn->track_running_stats || grad_mode_enabled()) return 0;
  if (!bn->running_mean().defined() || !bn->running_var().defined()) return 0;
  if (!x.defined() || x.dtype() != DType::f32 || x.is_quantized() || x.dim() != 4 || x.size(1) != bn->num_features)
    return 0;
  out = batch_norm_relu6_eval(x, bn->running_mean(), bn->running_var(), bn->weight, bn->bias, bn->eps);
  return 2;
}

// Conv2d -> BatchNorm2d (eval) [-> ReLU6] on a plain float input, with no
// gradient being recorded: the batch norm and the clamp in the convolution's
// own pass (MobileNetV2 has 52 such convolutions), the same bits as the
// modules one by one: 2 or 3.
size_t fused_conv_bn_eval(Module* const* m, size_t left, const Tensor& x, Tensor& out) {
  if (left < 2 || grad_mode_enabled()) return 0;
  Conv2d* conv = exactly<Conv2d>(*m[0]);
  BatchNorm2d* bn = exactly<BatchNorm2d>(*m[1]);
  if (!conv || !bn || bn->is_training() || !bn->track_running_stats || bn->num_features != conv->out_channels) return 0;
  if (!bn->running_mean().defined() || !bn->running_var().defined()) return 0;
  int64_t oh = 0, ow = 0;
  if (!plain_conv_input(*conv, x, oh, ow)) return 0;
  const bool relu6 = left >= 3 && exactly<ReLU6>(*m[2]);
  out = conv2d_batch_norm_eval(x, conv->weight, conv->bias, conv->options(), bn->running_mean(), bn->running_var(),
                               bn->weight, bn->bias, bn->eps, relu6);
  return relu6 ? 3 : 2;
}

// Tried in this order at each child; the first that takes a run wins.
constexpr size_t (*kFusions[])(Module* const*, size_t, const Tensor&, Tensor&) = {
    fused_conv_bn_eval, fused_bn_relu6_eval, fused_conv_bn_relu_pool};

}  // namespace

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (size_t i = 0; i < slots_.size();) {
    const size_t left = slots_.size() - i;
    Module* run[kMaxRun] = {};
    for (size_t j = 0; j < std::min(left, kMaxRun); ++j) run[j] = slots_[i + j]->module.get();
    size_t ran = 0;
    Tensor out;
    if (left >= 2)
      for (auto fusion : kFusions)
        if ((ran = fusion(run, left, h, out)) > 0) break;
    if (ran > 0) {
      h = out;
      fused_runs_.add();
    } else {
      h = slots_[i]->module->forward(h);
      ran = 1;
    }
    i += ran;
  }
  return h;
}

std::shared_ptr<Sequential> make_mlp(const std::vector<int64_t>& sizes) {
  if (sizes.size() < 2) throw std::invalid_argument("make_mlp: needs at least two sizes (inputs and outputs)");
  auto mlp = std::make_shared<Sequential>();
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    mlp->push_back("fc" + std::to_string(i + 1), Linear(sizes[i], sizes[i + 1]));
    if (i + 2 < sizes.size()) mlp->push_back("relu" + std::to_string(i + 1), ReLU());
  }
  return mlp;
}

}  // namespace tq::nn
