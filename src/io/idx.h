// IDX files: the format of MNIST and Fashion-MNIST (docs/data.md §1).
//
//   offset  bytes      meaning
//   0       2          0x00 0x00
//   2       1          data type: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
//   3       1          number of dimensions d
//   4       4 * d      the dimension sizes, big-endian u32, outermost first
//   4 + 4d  ...        the elements, row-major, big-endian
//
// The reader takes the file plain or gzip-compressed (told apart by the gzip
// magic 1f 8b) and trusts nothing it has not checked: every header field is
// validated, and memory is allocated only after the header has been checked
// and found to fit in the file (docs/data.md §2). Any defect raises a
// FormatError whose message starts with the file name and says what is wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "tensor/tensor.h"

namespace tq::io {

// A file that is not what it claims to be: corrupt, truncated, or not IDX.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The IDX data type byte (the third byte of the magic number).
enum class IdxType : uint8_t { u8 = 0x08, i8 = 0x09, i16 = 0x0B, i32 = 0x0C, f32 = 0x0D, f64 = 0x0E };

// Limits of this reader. IDX allows up to 255 dimensions; datasets use 1..4.
inline constexpr int kIdxMaxDims = 4;
inline constexpr int64_t kIdxMaxElements = int64_t{1} << 31;
// Deflate expands at most 1032:1 (a 258-byte match in 2 bits), so a gzip
// file of C bytes cannot hold more than about 1032 * C bytes of data.
inline constexpr uint64_t kDeflateMaxRatio = 1032;

struct IdxHeader {
  IdxType type = IdxType::u8;
  Shape shape;                 // the dimension sizes, outermost first
  int64_t header_bytes = 0;    // 4 + 4 * ndims
  uint32_t magic() const { return (uint32_t{static_cast<uint8_t>(type)} << 8) | static_cast<uint32_t>(shape.size()); }
};

// Reads a whole IDX file (plain or .gz). Element types map to tensor dtypes
// u8 -> u8, i8 -> i8, i32 -> i32, f32 -> f32; i16 and f64 files are valid IDX
// but rejected (tinyqat has no such tensors). Throws FormatError on a bad
// file, std::runtime_error when the file cannot be opened or read.
Tensor read_idx(const std::string& path);

// Reads and validates only the header (decompresses just its first bytes).
IdxHeader read_idx_header(const std::string& path);

// read_idx on bytes in memory (plain or gzip); `name` stands for the file in
// error messages. The entry point for fuzzing.
Tensor parse_idx(const void* data, size_t size, const std::string& name);

// Writes t (u8, i8, i32 or f32; 1..4 dims) as an IDX file, gzip-compressed
// when the path ends in ".gz". Atomic: written to a temporary file, then renamed.
void write_idx(const std::string& path, const Tensor& t);

const char* idx_type_name(IdxType t);  // "u8", ..., or "unknown"

}  // namespace tq::io
