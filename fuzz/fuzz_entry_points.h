// What each fuzz target does with its input (docs/reliability.md). Shared by
// the libFuzzer targets (fuzz/fuzz_*.cpp, clang build) and by
// tests/test_fuzz_regressions.cpp (the normal build), which feeds every
// committed corpus and regression file through the same code.
//
// The contract under test (docs/design.md §5, Errors): bad bytes may raise any
// std::exception; they must not crash, hang, trip a sanitizer, or allocate
// without bound. On top of that, each entry point checks a few properties of
// what it accepted (a round trip, plain vs gzip); a violated property is
// returned as a message, which the fuzz targets turn into an abort.
#pragma once

#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/idx.h"
#include "io/model_file.h"
#include "io/safetensors.h"
#include "tinyqat.h"

namespace tq::fuzzing {

// Empty when every checked property held, else what went wrong.
using Problem = std::string;

inline constexpr const char* kInputName = "fuzz-input";

// ---- Helpers ----

// The bytes wrapped in a single-member gzip stream (in memory, no file).
inline std::string gzip_bytes(const uint8_t* data, size_t size) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("deflateInit2 failed");
  std::string out(deflateBound(&zs, static_cast<uLong>(size)) + 32, '\0');
  zs.next_in = const_cast<Bytef*>(data);
  zs.avail_in = static_cast<uInt>(size);
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int r = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  if (r != Z_STREAM_END) throw std::runtime_error("deflate did not finish");
  return out;
}

// Same dtype, shape and element bytes (NaNs compare by their bits).
inline bool same_tensor(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.dtype() != b.dtype() || !(a.shape() == b.shape())) return false;
  const Tensor ca = kernels::contiguous(a), cb = kernels::contiguous(b);
  const size_t bytes = static_cast<size_t>(ca.numel()) * dtype_size(ca.dtype());
  return bytes == 0 || std::memcmp(ca.raw_data(), cb.raw_data(), bytes) == 0;
}

// The input width of the model's first Linear-like layer, if it has one.
inline std::optional<int64_t> first_layer_width(const nn::Module& model) {
  for (auto& [path, m] : model.named_modules()) {
    if (auto* l = dynamic_cast<const nn::Linear*>(m)) return l->in_features;
    if (auto* q = dynamic_cast<const quant::QuantizedLinear*>(m)) return q->in_features;
    if (auto* d = dynamic_cast<const quant::DynamicQuantizedLinear*>(m)) return d->in_features;
  }
  return std::nullopt;
}

// A fixed (2, width) f32 input with positive, negative and zero values.
inline Tensor sample_input(int64_t width) {
  std::vector<float> v(static_cast<size_t>(2 * width));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i)) * 3.0);
  return from_vector(v, {2, width});
}

// Runs the model; any std::exception is an accepted outcome (nullopt).
inline std::optional<Tensor> try_forward(nn::Module& model, const Tensor& x) {
  try {
    NoGradGuard no_grad;
    return model(x);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// ---- Entry points ----

// parse_idx on the bytes as they are, and on the same bytes gzip-wrapped in
// memory (so the fuzzer reaches the gzip reader with valid deflate streams of
// fuzzed content). Property: both give the same answer.
inline Problem run_idx(const uint8_t* data, size_t size) {
  std::optional<Tensor> plain;
  try {
    plain = io::parse_idx(data, size, kInputName);
  } catch (const std::exception&) {
  }
  if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) return {};  // already gzip: wrapping it again means nothing
  const std::string gz = gzip_bytes(data, size);
  std::optional<Tensor> unzipped;
  try {
    unzipped = io::parse_idx(gz.data(), gz.size(), std::string(kInputName) + ".gz");
  } catch (const std::exception&) {
  }
  if (plain.has_value() != unzipped.has_value())
    return plain ? "the plain file is accepted but its gzip-wrapped copy is rejected"
                 : "the plain file is rejected but its gzip-wrapped copy is accepted";
  if (plain && !same_tensor(*plain, *unzipped)) return "the plain file and its gzip-wrapped copy read differently";
  return {};
}

// parse_safetensors. Property: what was accepted serializes and parses back
// to the same tensors and metadata.
inline Problem run_safetensors(const uint8_t* data, size_t size) {
  io::SafetensorsFile file;
  try {
    file = io::parse_safetensors(std::string(reinterpret_cast<const char*>(data), size), kInputName);
  } catch (const std::exception&) {
    return {};
  }
  io::SafetensorsFile again;
  try {
    again = io::parse_safetensors(io::serialize_safetensors(file), "reserialized");
  } catch (const std::exception& e) {
    return std::string("an accepted file does not survive serialize + parse: ") + e.what();
  }
  if (again.metadata != file.metadata) return "metadata changed in serialize + parse";
  if (again.tensors.size() != file.tensors.size()) return "tensor count changed in serialize + parse";
  for (auto& [name, t] : file.tensors) {
    auto it = again.tensors.find(name);
    if (it == again.tensors.end() || !same_tensor(t, it->second)) return "tensor '" + name + "' changed in serialize + parse";
  }
  return {};
}

// parse_safetensors, build_model, then (if a model came out) forward passes
// in eval and train mode on an input of the first layer's width and on one of
// the wrong width, then convert and a forward pass of the int8 model. Property: a built model saves and builds again, and the
// rebuilt model computes what the first one computed.
inline Problem run_model(const uint8_t* data, size_t size) {
  std::shared_ptr<nn::Module> model;
  try {
    const io::SafetensorsFile file =
        io::parse_safetensors(std::string(reinterpret_cast<const char*>(data), size), kInputName);
    model = io::build_model(file, kInputName);
  } catch (const std::exception&) {
    return {};
  }
  std::shared_ptr<nn::Module> rebuilt;
  try {
    rebuilt = io::build_model(
        io::parse_safetensors(io::serialize_safetensors(io::model_to_safetensors(*model)), "resaved"), "resaved");
  } catch (const std::exception& e) {
    return std::string("a model built from a file does not save and build again: ") + e.what();
  }
  const int64_t width = first_layer_width(*model).value_or(4);
  const Tensor x = sample_input(width);
  model->eval();
  rebuilt->eval();
  const std::optional<Tensor> y = try_forward(*model, x);
  const std::optional<Tensor> y_again = try_forward(*rebuilt, x);
  if (y.has_value() != y_again.has_value()) return "the model and its saved + rebuilt copy disagree on running";
  if (y && !same_tensor(*y, *y_again)) return "the model and its saved + rebuilt copy compute different outputs";
  try_forward(*model, sample_input(width + 1));
  model->train();
  try_forward(*model, x);
  // A loaded QAT or calibrated model is converted next: its observers'
  // state came from the file.
  try {
    quant::convert(*model);
  } catch (const std::exception&) {
    return {};
  }
  model->eval();
  try_forward(*model, x);
  return {};
}

}  // namespace tq::fuzzing
