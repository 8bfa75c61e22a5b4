// Fusion (docs/ptq.md §4): a Linear followed by a ReLU (or a ReLU6) becomes
// one LinearReLU (LinearReLU6) module. In float it computes exactly what the
// pair computes; quantized, the activation disappears into requantization
// (the output is clamped at its zero point, which stands for real 0, and for
// ReLU6 also at the code of real 6), and the output observer sees the values
// after the activation, so no quantization levels are spent outside its range.
#pragma once

#include <string>
#include <vector>

#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/sequential.h"
#include "quant/layer.h"

namespace tq::quant {

// A float Linear with an activation fused into its output; shares weight and
// bias with the Linear it was made from.
class FusedLinear : public nn::Linear {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return std::string("Linear") + fused_activation_suffix(activation); }
  const FusedActivation activation;

 protected:
  FusedLinear(const nn::Linear& linear, FusedActivation activation);
};

// One class per kind, so that the mapping tables (keyed by type) tell them apart.
class LinearReLU : public FusedLinear {
 public:
  explicit LinearReLU(const nn::Linear& linear) : FusedLinear(linear, FusedActivation::relu) {}
};
class LinearReLU6 : public FusedLinear {
 public:
  explicit LinearReLU6(const nn::Linear& linear) : FusedLinear(linear, FusedActivation::relu6) {}
};

// ---- Convolutions (docs/quantized_cnn.md §6) ----

// A float Conv2d with an activation fused into its output (ConvReLU2d,
// ConvReLU62d); shares weight and bias with the Conv2d it was made from.
// Eval-time fusion of Conv2d + BatchNorm2d (+ activation) gives one of these
// (or a plain Conv2d) with the BN folded into its weight and bias.
class FusedConv2d : public nn::Conv2d {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return std::string("ConvReLU") + (activation == FusedActivation::relu6 ? "62d" : "2d"); }
  const FusedActivation activation;

 protected:
  FusedConv2d(const nn::Conv2d& conv, FusedActivation activation);
};
class ConvReLU2d : public FusedConv2d {
 public:
  explicit ConvReLU2d(const nn::Conv2d& conv) : FusedConv2d(conv, FusedActivation::relu) {}
};
class ConvReLU62d : public FusedConv2d {
 public:
  explicit ConvReLU62d(const nn::Conv2d& conv) : FusedConv2d(conv, FusedActivation::relu6) {}
};

// A float Conv2d followed by its BatchNorm2d (child "bn") and an activation,
// kept apart for quantization-aware training, where the BN folding is
// simulated (ConvBn2d, ConvBnReLU2d, ConvBnReLU62d; PyTorch's intrinsic
// modules of the same names). Computes act(bn(conv(x))) exactly; shares
// the convolution's weight and bias and the BatchNorm module itself.
class FusedConvBn2d : public nn::Conv2d {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return std::string("ConvBn") + fused_activation_suffix(activation) + "2d"; }
  nn::Slot<nn::BatchNorm2d> bn;
  const FusedActivation activation;

 protected:
  FusedConvBn2d(const nn::Conv2d& conv, std::shared_ptr<nn::BatchNorm2d> bn, FusedActivation activation);
};
class ConvBn2d : public FusedConvBn2d {
 public:
  ConvBn2d(const nn::Conv2d& conv, std::shared_ptr<nn::BatchNorm2d> bn) : FusedConvBn2d(conv, std::move(bn), FusedActivation::none) {}
};
class ConvBnReLU2d : public FusedConvBn2d {
 public:
  ConvBnReLU2d(const nn::Conv2d& conv, std::shared_ptr<nn::BatchNorm2d> bn) : FusedConvBn2d(conv, std::move(bn), FusedActivation::relu) {}
};
class ConvBnReLU62d : public FusedConvBn2d {
 public:
  ConvBnReLU62d(const nn::Conv2d& conv, std::shared_ptr<nn::BatchNorm2d> bn) : FusedConvBn2d(conv, std::move(bn), FusedActivation::relu6) {}
};

// The Conv2d that computes bn_eval(conv(x)): BN folded into a new weight and
// bias (fold_batch_norm, from the running statistics).
std::shared_ptr<nn::Conv2d> fold_conv_bn(const nn::Conv2d& conv, const nn::BatchNorm2d& bn);

// The activation fused into a float module: that of a fused Linear or
// convolution, else none.
FusedActivation fused_activation_of(const nn::Module& m);

// Passes its input through; takes the place of a module that was fused away.
class Identity : public nn::Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
};

// Fuses each group of dotted paths, e.g. {{"fc1", "relu1"}, {"fc2", "relu2"}}:
// the first slot gets the fused module, the others an Identity. Supported
// groups (the fusion table): (Linear, ReLU|ReLU6), (Conv2d, ReLU|ReLU6),
// (Conv2d, BatchNorm2d), (Conv2d, BatchNorm2d, ReLU|ReLU6). Throws naming
// the group otherwise. A group with a BatchNorm2d is fused as the mode of
// its convolution says: in training mode into ConvBn2d / ConvBnReLU2d /
// ConvBnReLU62d, for quantization-aware training (PyTorch's
// fuse_modules_qat); in eval mode the BN is folded into the convolution
// (Conv2d, ConvReLU2d, ConvReLU62d; PyTorch's fuse_modules).
void fuse_modules(nn::Module& model, const std::vector<std::vector<std::string>>& groups);

// Fuses every Linear directly followed by a ReLU or a ReLU6 inside a
// Sequential, and in Sequentials nested anywhere below `model`. Returns how
// many pairs were fused.
int fuse_linear_relu(nn::Module& model);

// Fuses every run of modules that the fusion table knows (longest first:
// Conv2d, BatchNorm2d, ReLU before Conv2d, BatchNorm2d) in every Sequential
// at or below `model`: Linear and Conv2d patterns alike, BN groups by the
// convolution's mode as fuse_modules says. Returns how many groups were fused.
int fuse_known_modules(nn::Module& model);

}  // namespace tq::quant
