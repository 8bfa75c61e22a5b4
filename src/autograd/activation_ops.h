// Dropout, the element-wise op convolutional networks add (ReLU6 is nn::relu6 in nn/activation.h).
#pragma once

#include "autograd/node.h"
#include "tensor/random.h"

namespace tq {

// Inverted dropout: in training each element is zeroed with probability p and
// the survivors scaled by 1 / (1 - p), so the expected value is unchanged and
// evaluation is the identity. The mask comes from `generator` (seeded by
// manual_seed for the global one). p must lie in [0, 1].
Tensor dropout(const Tensor& x, double p, bool training, Generator& generator = default_generator());

}  // namespace tq
