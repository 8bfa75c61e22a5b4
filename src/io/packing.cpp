#include "io/packing.h"

#include <stdexcept>

#include <fmt/format.h>

#include "io/safetensors.h"
#include "tensor/ops.h"

namespace tq::io {

Tensor pack_int4(const Tensor& values_in) {
  if (values_in.dtype() != DType::i8) throw std::invalid_argument("pack_int4: values must be i8");
  const Tensor values = kernels::contiguous(values_in);
  const int64_t n = values.numel();
  Tensor packed = zeros({n / 2 + n % 2}, DType::u8);
  const int8_t* v = values.data<int8_t>();
  uint8_t* p = packed.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (v[i] < -8 || v[i] > 7)
      throw std::invalid_argument(fmt::format("pack_int4: value {} at index {} does not fit 4 bits (-8..7)", v[i], i));
    const uint8_t nibble = static_cast<uint8_t>(v[i]) & 0x0F;
    p[i / 2] |= (i % 2 == 0) ? nibble : static_cast<uint8_t>(nibble << 4);
  }
  return packed;
}

Tensor unpack_int4(const Tensor& packed_in, const Shape& shape, const std::string& what) {
  int64_t n = 0;
  try {
    n = shape.numel();
  } catch (const std::invalid_argument& e) {
    throw FormatError(fmt::format("{}: {}", what, e.what()));
  }
  for (int64_t d : shape)
    if (d < 0) throw FormatError(fmt::format("{}: packed 4-bit data for a shape {} with a negative dimension", what, shape.str()));
  const int64_t bytes = n / 2 + n % 2;  // not (n + 1) / 2: n may be INT64_MAX
  if (packed_in.dtype() != DType::u8 || packed_in.dim() != 1 || packed_in.numel() != bytes)
    throw FormatError(fmt::format("{}: packed 4-bit data of {} {} bytes does not hold shape {} ({} values need {} bytes)",
                                  what, dtype_name(packed_in.dtype()), packed_in.numel(), shape.str(), n, bytes));
  const Tensor packed = kernels::contiguous(packed_in);
  Tensor values = empty(shape, DType::i8);
  const uint8_t* p = packed.data<uint8_t>();
  int8_t* v = values.data<int8_t>();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t nibble = (i % 2 == 0) ? (p[i / 2] & 0x0F) : (p[i / 2] >> 4);
    v[i] = static_cast<int8_t>(nibble >= 8 ? static_cast<int>(nibble) - 16 : nibble);  // sign-extend 4 bits
  }
  if (n % 2 == 1 && (p[n / 2] >> 4) != 0)
    throw FormatError(fmt::format("{}: the unused last half byte of packed 4-bit data is not zero", what));
  return values;
}

}  // namespace tq::io
