// safetensors files (docs/model_files.md): an 8-byte little-endian header
// length N, N bytes of JSON, then the raw little-endian tensor bytes.
//   { "__metadata__": {"key": "string", ...},
//     "name": {"dtype": "F32", "shape": [out, in], "data_offsets": [begin, end]}, ... }
// Offsets are relative to the start of the data area. The reader trusts
// nothing: every length, offset and shape is checked before use, and each
// failure names the file and the problem.
#pragma once

#include <map>
#include <stdexcept>
#include <string>

#include "io/idx.h"  // FormatError, shared by every file reader of tq::io
#include "tensor/tensor.h"

namespace tq::io {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;  // contiguous, in their stored dtype
  std::map<std::string, std::string> metadata;
};

// Limits that keep a hostile header from making the reader allocate or loop.
inline constexpr uint64_t kMaxHeaderBytes = 64ull << 20;   // 64 MiB of JSON
inline constexpr uint64_t kMaxFileBytes = 16ull << 30;     // 16 GiB
// Limits that keep the reading linear in the file's size and the error
// messages short; each is named in the error that reports it.
inline constexpr int kMaxHeaderDepth = 16;                 // JSON nesting (a valid header needs 3)
inline constexpr size_t kMaxTensors = 100'000;             // tensors in one file
inline constexpr uint64_t kMaxHeaderValues = 2'000'000;    // JSON values in the header (a tensor needs about 13)
inline constexpr size_t kMaxMetadataEntries = 1'024;       // __metadata__ keys
inline constexpr size_t kMaxNameBytes = 1'024;             // a tensor name or metadata key

// Writes atomically: to "<path>.tmp-<pid>", flushed, then renamed over
// `path`, so an interrupted save never leaves a half file and never harms an
// existing one. Throws std::runtime_error naming the path on I/O failure.
void save_safetensors(const std::string& path, const SafetensorsFile& file);

// Reads and validates a whole file. Throws FormatError (bad content) or
// std::runtime_error (cannot open / read), naming the file.
SafetensorsFile load_safetensors(const std::string& path);
// The same from bytes in memory (`name` is used in messages): for tests and fuzzing.
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name);
// The file's bytes as save_safetensors would write them.
std::string serialize_safetensors(const SafetensorsFile& file);

// For JSON texts stored inside a file (the model description, a checkpoint's
// state): one linear pass that throws FormatError "<file>: <what> ..." when
// the text nests arrays / objects more than `max_depth` deep or holds more
// than `max_values` values, so that nothing recursive (copying, comparing,
// printing a json value) meets a hostile depth. Call before json::parse.
void check_json_limits(const std::string& text, const std::string& file, const std::string& what, int max_depth,
                       uint64_t max_values = kMaxHeaderValues);

// Writes `bytes` to `path` atomically (temp file + fsync + rename).
void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace tq::io
