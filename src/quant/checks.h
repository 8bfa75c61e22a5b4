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

}  // namespace tq::quant
