// Channels-last views (channels_last.h).
#include "tensor/channels_last.h"

#include <stdexcept>
#include <string>

#include "tensor/int8_conv.h"
#include "tensor/ops.h"

namespace tq {

bool is_channels_last(const Tensor& t) {
  if (!t.defined() || t.dim() != 4) return false;
  const Shape& s = t.shape();
  const Shape& st = t.strides();
  const int64_t C = s[1], H = s[2], W = s[3];
  // Expected strides of (N, C, H, W) stored as (N, H, W, C).
  const int64_t expected[4] = {H * W * C, 1, W * C, C};
  for (int d = 0; d < 4; ++d)
    if (s[d] != 1 && st[d] != expected[d]) return false;
  return true;
}

Tensor empty_channels_last(int64_t N, int64_t C, int64_t H, int64_t W, DType dtype) {
  const Tensor nhwc = empty(Shape{N, H, W, C}, dtype);
  return make_view(nhwc, Shape{N, C, H, W}, Shape{H * W * C, 1, W * C, C}, 0);
}

Tensor to_channels_last_bytes(const Tensor& t) {
  if (!t.defined() || t.dim() != 4 || dtype_size(t.dtype()) != 1)
    throw std::invalid_argument("to_channels_last_bytes: expected a 4-D u8 or i8 tensor");
  if (is_channels_last(t)) return t;
  const Tensor x = kernels::contiguous(t);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor y = empty_channels_last(N, C, H, W, x.dtype());
  nchw_to_nhwc_u8(static_cast<const uint8_t*>(x.raw_data()), N, C, H, W, static_cast<uint8_t*>(y.raw_data()));
  return t.is_quantized() ? with_qparams(y, t.qparams_ptr()) : y;
}

}  // namespace tq
