// NumPy's .npy files (docs/model_files.md "Arrays"): one array, a short
// text header (dtype, order, shape) and its raw little-endian data. This is
// how a model's inputs and outputs travel to and from numpy.
//
//   Tensor x = tq::io::load_npy("x.npy");       // float32 or float64 -> f32
//   tq::io::save_npy("y.npy", model(x));          // f32, C order
#pragma once

#include <string>

#include "io/idx.h"  // FormatError
#include "tensor/tensor.h"

namespace tq::io {

// Reads a C-order array of float32 ('<f4') or float64 ('<f8', converted to
// f32), header versions 1 to 3. Anything else is a FormatError naming the
// file and what it found (a Fortran-order array, another dtype, a short file).
Tensor load_npy(const std::string& path);
// The same from the file's bytes (`name` is used in messages).
Tensor parse_npy(const std::string& bytes, const std::string& name);

// Writes an f32 tensor as a version 1.0 .npy file, atomically.
void save_npy(const std::string& path, const Tensor& t);
std::string npy_bytes(const Tensor& t);

}  // namespace tq::io
