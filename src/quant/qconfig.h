// QConfig: how to quantize a module — factories for the activation and the
// weight observer / fake quant (docs/quantization.md §6). A qconfig set on a
// module applies to its children unless a child has its own; a child set to
// nullptr stays float.
#pragma once

#include <memory>
#include <string>

#include "quant/fake_quantize.h"
#include "quant/learnable_fake_quantize.h"

namespace tq::quant {

struct QConfig {
  FakeQuantFactory activation;  // for the outputs (and float inputs) of a layer
  FakeQuantFactory weight;      // for its weights
  std::string name;             // shown when printing / saving ("fbgemm QAT")
};

using QConfigPtr = std::shared_ptr<const QConfig>;

// Quantization-aware training presets, as PyTorch's get_default_qat_qconfig:
//  "x86" / "fbgemm": activations u8 0..127 per-tensor affine (moving-average
//                    min/max), weights i8 -128..127 per-channel symmetric;
//  "qnnpack":        activations u8 0..255, weights i8 per-tensor symmetric.
QConfigPtr get_default_qat_qconfig(const std::string& backend = "x86");

// Other bit widths (2..8): activations u8 in 0..2^a-1, weights symmetric in
// -2^(w-1)..2^(w-1)-1, exactly as asked (no hidden range reduction).
QConfigPtr make_qat_qconfig(int weight_bits, int activation_bits, bool per_channel_weights = true);

// LSQ, learned step size QAT (docs/lsq.md): the ranges of make_qat_qconfig,
// with LearnableFakeQuantize for activations and weights, whose scales (and
// activation zero points) are trained with the model. The initial scales
// come from the first training batch, by default with LSQ's 2 mean(|v|) /
// sqrt(quant_max) for both (LsqInit::observer: the observer's min / max;
// docs/lsq.md §6 compares them).
QConfigPtr make_lsq_qat_qconfig(int weight_bits, int activation_bits, bool per_channel_weights = true,
                                LsqInit weight_init = LsqInit::lsq, LsqInit activation_init = LsqInit::lsq);

// Post-training (static) quantization presets, as PyTorch's get_default_qconfig:
//  "x86" / "fbgemm": activations HistogramObserver u8 0..127, weights
//                    per-channel symmetric i8 (min/max);
//  "qnnpack":        activations HistogramObserver u8 0..255, weights
//                    per-tensor symmetric i8.
QConfigPtr get_default_qconfig(const std::string& backend = "x86");

// PTQ with a chosen activation observer ("minmax", "moving_average" or
// "histogram") and bit widths.
QConfigPtr make_ptq_qconfig(const std::string& observer, int weight_bits = 8, int activation_bits = 7,
                            bool per_channel_weights = true);

}  // namespace tq::quant
