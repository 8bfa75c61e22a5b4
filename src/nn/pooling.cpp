// Pooling modules: argument checks and printouts; the work is in pool_ops.
#include "nn/pooling.h"

#include <fmt/format.h>

namespace tq::nn {

namespace {
// PyTorch prints an int when one was given; a square pair prints the same way here.
std::string show(const Pair2d& p) { return p.h == p.w ? std::to_string(p.h) : p.str(); }
Pair2d or_kernel(const Pair2d& stride, const Pair2d& kernel) { return stride.h == 0 && stride.w == 0 ? kernel : stride; }
}  // namespace

MaxPool2d::MaxPool2d(Pair2d k, Pair2d s, Pair2d p, Pair2d d)
    : kernel_size(k), stride(or_kernel(s, k)), padding(p), dilation(d) {
  if (k.h < 1 || k.w < 1 || stride.h < 1 || stride.w < 1 || d.h < 1 || d.w < 1 || p.h < 0 || p.w < 0)
    throw std::invalid_argument(fmt::format("MaxPool2d: kernel_size {}, stride {}, dilation {} must be >= 1, padding {} "
                                            ">= 0",
                                            k.str(), stride.str(), d.str(), p.str()));
}

Tensor MaxPool2d::forward(const Tensor& x) {
  return tq::max_pool2d(x, {kernel_size.array(), stride.array(), padding.array(), dilation.array()});
}

std::string MaxPool2d::extra_repr() const {
  return fmt::format("kernel_size={}, stride={}, padding={}, dilation={}, ceil_mode=False", show(kernel_size),
                     show(stride), show(padding), show(dilation));
}

AvgPool2d::AvgPool2d(Pair2d k, Pair2d s, Pair2d p) : kernel_size(k), stride(or_kernel(s, k)), padding(p) {
  if (k.h < 1 || k.w < 1 || stride.h < 1 || stride.w < 1 || p.h < 0 || p.w < 0)
    throw std::invalid_argument(fmt::format("AvgPool2d: kernel_size {} and stride {} must be >= 1, padding {} >= 0",
                                            k.str(), stride.str(), p.str()));
}

Tensor AvgPool2d::forward(const Tensor& x) {
  return tq::avg_pool2d(x, {kernel_size.array(), stride.array(), padding.array(), {1, 1}});
}

std::string AvgPool2d::extra_repr() const {
  return fmt::format("kernel_size={}, stride={}, padding={}", show(kernel_size), show(stride), show(padding));
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(Pair2d out) : output_size(out) {
  if (out.h < 1 || out.w < 1)
    throw std::invalid_argument(fmt::format("AdaptiveAvgPool2d: output_size {} must be positive", out.str()));
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) { return tq::adaptive_avg_pool2d(x, output_size.h, output_size.w); }

std::string AdaptiveAvgPool2d::extra_repr() const { return "output_size=" + output_size.str(); }

}  // namespace tq::nn
