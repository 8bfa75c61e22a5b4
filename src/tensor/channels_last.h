// Channels-last (NHWC) views of 4-D tensors, as PyTorch's
// torch.channels_last: the tensor keeps its logical shape (N, C, H, W), its
// memory is ordered (N, H, W, C), i.e. strides (H W C, 1, W C, C). The int8
// convolution kernels work on NHWC (docs/quantized_cnn.md §1), so a quantized
// layer returns its output in this layout and the next quantized layer takes
// it without a transpose. Every other operation sees an ordinary strided
// tensor (contiguous() gives the NCHW copy), so nothing changes for code that
// does not look at the layout.
#pragma once

#include "tensor/tensor.h"

namespace tq {

// True when `t` is 4-D and laid out (N, H, W, C) in memory without gaps
// (dimensions of size 1 may have any stride, as in Tensor::is_contiguous).
bool is_channels_last(const Tensor& t);

// An uninitialized (N, C, H, W) tensor with channels-last memory.
Tensor empty_channels_last(int64_t N, int64_t C, int64_t H, int64_t W, DType dtype);

// `t` (4-D, u8 or i8) as a channels-last tensor with the same values and
// qparams: `t` itself when it already is one, else an NHWC copy (one
// transpose from a contiguous tensor).
Tensor to_channels_last_bytes(const Tensor& t);

}  // namespace tq
