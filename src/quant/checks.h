// Checks on the float values a quantized layer is built from. A NaN or an
// infinity has no integer on any grid: quantizing it is undefined behaviour
// in a plain cast, and the saturating kernels turn NaN into quant_min without
// a word. The layers call these before quantizing.
#pragma once

#include <string>

#include "tensor/tensor.h"

namespace tq::quant {

// Throws std::invalid_argument unless every element of the float tensor `t`
// is finite, naming `who` (the layer), `what` (the tensor) and the first bad
// element by its index: "fc1: weight[3, 7] is nan; an int8 layer needs finite
// weights". Tensors of integer dtypes pass (their values are finite).
void require_finite(const Tensor& t, const std::string& who, const std::string& what);

// Throws std::invalid_argument unless `q` can describe a grid: quant_min <
// quant_max, as many zero points as scales (one per tensor, at least one per
// channel), every scale finite and at least the smallest normal float (so
// that 1 / scale is finite too), every zero point inside [quant_min,
// quant_max]. The message names `who` (the layer) and `what` (which
// qparams): "fc1: output qparams: scale[0] is 0; scales must be positive,
// finite and normal (...)".
void require_valid_qparams(const QParams& q, const std::string& who, const std::string& what);

}  // namespace tq::quant
