// Conv2d: PyTorch's initialisation and printout; the work is tq::conv2d.
#include "nn/conv.h"

#include <cmath>

#include <fmt/format.h>

#include "tensor/random.h"

namespace tq::nn {

std::string Pair2d::str() const { return fmt::format("({}, {})", h, w); }

Conv2d::Conv2d(int64_t in, int64_t out, Pair2d kernel, Pair2d stride_, Pair2d padding_, Pair2d dilation_,
               int64_t groups_, bool with_bias)
    : in_channels(in), out_channels(out), kernel_size(kernel), stride(stride_), padding(padding_),
      dilation(dilation_), groups(groups_) {
  if (in <= 0 || out <= 0)
    throw std::invalid_argument(fmt::format("Conv2d: in_channels ({}) and out_channels ({}) must be positive", in, out));
  if (groups < 1 || in % groups != 0 || out % groups != 0)
    throw std::invalid_argument(fmt::format("Conv2d: groups ({}) must be >= 1 and divide in_channels ({}) and "
                                            "out_channels ({})",
                                            groups, in, out));
  if (kernel.h < 1 || kernel.w < 1 || stride.h < 1 || stride.w < 1 || dilation.h < 1 || dilation.w < 1 ||
      padding.h < 0 || padding.w < 0)
    throw std::invalid_argument(fmt::format("Conv2d: kernel_size {}, stride {} and dilation {} must be >= 1, "
                                            "padding {} >= 0",
                                            kernel.str(), stride.str(), dilation.str(), padding.str()));
  const int64_t fan_in = in / groups * kernel.h * kernel.w;
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  weight = register_parameter("weight", rand_uniform({out, in / groups, kernel.h, kernel.w}, -bound, bound));
  if (with_bias) bias = register_parameter("bias", rand_uniform({out}, -bound, bound));
}

Conv2d::Conv2d(const Conv2d& like, Tensor shared_weight, Tensor shared_bias)
    : in_channels(like.in_channels), out_channels(like.out_channels), kernel_size(like.kernel_size),
      stride(like.stride), padding(like.padding), dilation(like.dilation), groups(like.groups) {
  if (!shared_weight.defined() || !(shared_weight.shape() == like.weight.shape()))
    throw std::invalid_argument(fmt::format("Conv2d: a shared weight must have the shape {}", like.weight.shape().str()));
  if (shared_bias.defined() && !(shared_bias.shape() == Shape{out_channels}))
    throw std::invalid_argument(fmt::format("Conv2d: a shared bias must have the shape ({})", out_channels));
  weight = register_parameter("weight", shared_weight);
  if (shared_bias.defined()) bias = register_parameter("bias", shared_bias);
  train(like.is_training());
}

Tensor Conv2d::forward(const Tensor& x) {
  if (x.defined() && (x.dim() != 4 || x.size(1) != in_channels))
    throw std::invalid_argument(fmt::format("Conv2d({}, {}): input of shape {} does not match in_channels={} "
                                            "(expected (N, {}, H, W))",
                                            in_channels, out_channels, x.shape().str(), in_channels, in_channels));
  return tq::conv2d(x, weight, bias, options());
}

std::string Conv2d::extra_repr() const {
  std::string s = fmt::format("{}, {}, kernel_size={}, stride={}", in_channels, out_channels, kernel_size.str(),
                              stride.str());
  if (padding.h != 0 || padding.w != 0) s += ", padding=" + padding.str();
  if (dilation.h != 1 || dilation.w != 1) s += ", dilation=" + dilation.str();
  if (groups != 1) s += fmt::format(", groups={}", groups);
  if (!bias.defined()) s += ", bias=False";
  return s;
}

}  // namespace tq::nn
