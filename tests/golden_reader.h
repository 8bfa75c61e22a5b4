// Reader for the golden reference files that tests/golden/generate.py writes
// with PyTorch (format "tinyqat-golden v1", described in tests/golden/README.md):
//
//   # tinyqat-golden 1            <- first line: magic and version
//   # any line starting with '#' is a comment
//   tensor <name> <dtype> <ndim> <d0> <d1> ...
//   <values, whitespace separated, row-major, over one or more lines>
//
// dtype is f32, f64 or i64; a scalar has ndim 0 and one value. f32 values are
// parsed with strtof, so they come back bit for bit as PyTorch wrote them.
//
//   tq::golden::File g("autograd_ops.txt");     // from TINYQAT_GOLDEN_DIR
//   tq::Tensor a = g.tensor("add/row/a");       // f32 (f64 is rounded to f32), or i64
//
// Errors name the file, the line and what is wrong. compare() below measures a
// computed tensor against a golden one.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tensor/tensor.h"

#ifndef TINYQAT_GOLDEN_DIR
#define TINYQAT_GOLDEN_DIR "tests/golden"
#endif

namespace tq::golden {

// One tensor as stored in the file.
struct Entry {
  std::string name;
  std::string dtype;  // "f32", "f64" or "i64"
  std::vector<int64_t> shape;
  std::vector<double> values;   // f32 / f64 (an f32 value is exact in a double)
  std::vector<int64_t> ints;    // i64
  int line = 0;                 // line of the "tensor" header, for messages

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// The full path of a file in the golden directory.
inline std::string path(const std::string& file) { return std::string(TINYQAT_GOLDEN_DIR) + "/" + file; }

class File {
 public:
  // `file` is a name inside TINYQAT_GOLDEN_DIR, or a path containing '/'.
  explicit File(const std::string& file) : path_(file.find('/') == std::string::npos ? path(file) : file) { parse(); }

  const std::string& filename() const { return path_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const Entry& entry(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) throw std::out_of_range(path_ + ": no tensor named '" + name + "'");
    return entries_[it->second];
  }
  // Names in file order that start with `prefix`.
  std::vector<std::string> names(const std::string& prefix = "") const {
    std::vector<std::string> out;
    for (const Entry& e : entries_)
      if (e.name.compare(0, prefix.size(), prefix) == 0) out.push_back(e.name);
    return out;
  }

  // As a tensor: f32 for f32 / f64 entries, i64 for i64 entries.
  Tensor tensor(const std::string& name) const {
    const Entry& e = entry(name);
    Shape shape{std::vector<int64_t>(e.shape)};
    if (e.dtype == "i64") return from_vector_i64(e.ints, shape);
    std::vector<float> v(e.values.begin(), e.values.end());
    return from_vector(v, shape);
  }
  // The single value of a scalar (or one-element) entry.
  double scalar(const std::string& name) const {
    const Entry& e = entry(name);
    if (e.numel() != 1) throw std::invalid_argument(path_ + ": tensor '" + name + "' is not a scalar");
    return e.dtype == "i64" ? static_cast<double>(e.ints[0]) : e.values[0];
  }

 private:
  [[noreturn]] void fail(int line, const std::string& what) const {
    throw std::runtime_error(path_ + ":" + std::to_string(line) + ": " + what);
  }

  void parse() {
    std::ifstream in(path_);
    if (!in) throw std::runtime_error(path_ + ": cannot open the golden file (run tests/golden/generate.py?)");
    std::string line;
    int lineno = 0;
    if (!std::getline(in, line)) fail(1, "empty file");
    ++lineno;
    if (line.rfind("# tinyqat-golden ", 0) != 0) fail(1, "missing the '# tinyqat-golden 1' header, got '" + line + "'");
    const std::string version = line.substr(17);
    if (version != "1" && version != "v1") fail(1, "unsupported version '" + version + "'");

    Entry* cur = nullptr;  // the tensor whose values are being read
    auto finish = [&](int at) {
      if (cur && static_cast<int64_t>(cur->values.size() + cur->ints.size()) != cur->numel())
        fail(at, "tensor '" + cur->name + "' (line " + std::to_string(cur->line) + ") has " +
                     std::to_string(cur->values.size() + cur->ints.size()) + " values, its shape needs " +
                     std::to_string(cur->numel()));
      cur = nullptr;
    };
    while (std::getline(in, line)) {
      ++lineno;
      if (line.empty() || line[0] == '#') continue;
      std::istringstream tokens(line);
      std::string tok;
      if (line.rfind("tensor ", 0) == 0) {
        finish(lineno);
        Entry e;
        e.line = lineno;
        int ndim = -1;
        tokens >> tok >> e.name >> e.dtype >> ndim;
        if (e.name.empty() || !tokens || ndim < 0 || ndim > kMaxDims) fail(lineno, "malformed tensor header '" + line + "'");
        if (e.dtype != "f32" && e.dtype != "f64" && e.dtype != "i64") fail(lineno, "unknown dtype '" + e.dtype + "'");
        for (int i = 0; i < ndim; ++i) {
          int64_t d = -1;
          if (!(tokens >> d) || d < 0) fail(lineno, "bad dimension in '" + line + "'");
          e.shape.push_back(d);
        }
        if (tokens >> tok) fail(lineno, "extra token '" + tok + "' after the shape");
        if (index_.count(e.name)) fail(lineno, "tensor '" + e.name + "' appears twice");
        index_[e.name] = entries_.size();
        entries_.push_back(std::move(e));
        cur = &entries_.back();
        continue;
      }
      if (!cur) fail(lineno, "values before any 'tensor' header");
      while (tokens >> tok) {
        if (static_cast<int64_t>(cur->values.size() + cur->ints.size()) == cur->numel())
          fail(lineno, "too many values for tensor '" + cur->name + "'");
        char* end = nullptr;
        if (cur->dtype == "i64") {
          cur->ints.push_back(std::strtoll(tok.c_str(), &end, 10));
        } else if (cur->dtype == "f32") {
          cur->values.push_back(std::strtof(tok.c_str(), &end));  // exact: the file holds round-trip decimals
        } else {
          cur->values.push_back(std::strtod(tok.c_str(), &end));
        }
        if (end == tok.c_str() || *end != '\0') fail(lineno, "cannot parse value '" + tok + "' of tensor '" + cur->name + "'");
      }
    }
    finish(lineno);
  }

  std::string path_;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
};

// ---- Comparing a computed tensor with a golden one ----
//
// Shapes must be equal and the relative error in the max norm,
// max_i |got_i - want_i| / max_i |want_i|, must stay under a named tolerance.
// The max norm keeps elements that happen to be near zero (after cancellation)
// from blowing the ratio up.

struct Comparison {
  bool same_shape = false;
  double max_abs_error = 0;
  double max_abs_reference = 0;
  double relative_error = 0;  // max_abs_error / max_abs_reference (or the absolute error for an all-zero reference)
  std::string describe(const std::string& name) const {
    return fmt::format("{}: relative error {:.3g} (max |diff| {:.3g}, max |reference| {:.3g}){}", name, relative_error,
                       max_abs_error, max_abs_reference, same_shape ? "" : " SHAPES DIFFER");
  }
};

// The golden file `name`, parsed once per test process and shared by every
// test that reads it.
inline const File& load(const std::string& name) {
  static std::map<std::string, std::unique_ptr<const File>> cache;
  auto& slot = cache[name];
  if (!slot) slot = std::make_unique<const File>(name);
  return *slot;
}

// The values of an integer-valued tensor (e.g. quantized codes read as f32).
inline std::vector<int64_t> ints_of(const Tensor& t) {
  std::vector<int64_t> out;
  for (float v : to_vector(t)) out.push_back(static_cast<int64_t>(v));
  return out;
}

inline Comparison compare(const Tensor& got, const Tensor& want) {
  Comparison c;
  c.same_shape = got.shape() == want.shape();
  if (!c.same_shape) {
    c.relative_error = INFINITY;
    return c;
  }
  const std::vector<float> g = to_vector(got), w = to_vector(want);
  for (size_t i = 0; i < g.size(); ++i) {
    c.max_abs_error = std::max(c.max_abs_error, std::fabs(static_cast<double>(g[i]) - w[i]));
    c.max_abs_reference = std::max(c.max_abs_reference, std::fabs(static_cast<double>(w[i])));
    if (std::isnan(g[i]) != std::isnan(w[i])) c.max_abs_error = INFINITY;
  }
  c.relative_error = c.max_abs_reference > 0 ? c.max_abs_error / c.max_abs_reference : c.max_abs_error;
  return c;
}

}  // namespace tq::golden
