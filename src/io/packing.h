// Sub-byte weight storage (docs/model_files.md "Packed weights"): weights of
// 4 bits or fewer are stored two to a byte. Value i goes to byte i / 2, in
// the low nibble when i is even and the high nibble when i is odd, as a
// two's-complement 4-bit number (-8..7). An odd count leaves the last high
// nibble 0.
#pragma once

#include <cstdint>
#include <string>

#include "tensor/tensor.h"

namespace tq::io {

// i8 values in -8..7 (any shape) -> u8 (ceil(numel / 2)). Throws naming a
// value outside -8..7.
Tensor pack_int4(const Tensor& values);
// u8 (ceil(count / 2)) -> i8 of `shape` (count = shape.numel()). Throws
// FormatError naming `what` when the byte count does not match the shape.
Tensor unpack_int4(const Tensor& packed, const Shape& shape, const std::string& what);

}  // namespace tq::io
