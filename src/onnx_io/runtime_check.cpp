#include "onnx_io/runtime_check.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include "autograd/functions.h"
#include "io/data_loader.h"
#include "tensor/ops.h"

namespace tq::onnx_io {

namespace {

// Single-quoted for /bin/sh.
std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs a shell command, returns (exit status, combined output).
std::pair<int, std::string> run(const std::string& command) {
  std::FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) throw std::runtime_error(fmt::format("cannot run: {}", command));
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string temp_path(const RuntimeTools& tools, const char* what) {
  static int counter = 0;
  return fmt::format("{}/tinyqat_ort_{}_{}_{}.bin", tools.work_dir, ::getpid(), counter++, what);
}

}  // namespace

void write_tensor_file(const std::string& path, const Tensor& t) {
  const Tensor c = kernels::contiguous(kernels::to_float(t));
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error(fmt::format("cannot write '{}'", path));
  f.write("TQT1", 4);
  const uint32_t rank = static_cast<uint32_t>(c.dim());
  f.write(reinterpret_cast<const char*>(&rank), 4);
  for (int64_t i = 0; i < c.dim(); ++i) {
    const int64_t d = c.size(i);
    f.write(reinterpret_cast<const char*>(&d), 8);
  }
  f.write(reinterpret_cast<const char*>(c.data<float>()), static_cast<std::streamsize>(c.numel() * 4));
  if (!f) throw std::runtime_error(fmt::format("write to '{}' failed", path));
}

Tensor read_tensor_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(fmt::format("cannot read '{}'", path));
  char magic[4];
  uint32_t rank = 0;
  f.read(magic, 4);
  f.read(reinterpret_cast<char*>(&rank), 4);
  if (!f || std::memcmp(magic, "TQT1", 4) != 0 || rank > 8)
    throw std::runtime_error(fmt::format("'{}' is not a tensor file", path));
  Shape shape;
  int64_t count = 1;
  for (uint32_t i = 0; i < rank; ++i) {
    int64_t d = 0;
    f.read(reinterpret_cast<char*>(&d), 8);
    if (!f || d < 0) throw std::runtime_error(fmt::format("'{}': bad dimension", path));
    shape.push_back(d);
    count *= d;
  }
  Tensor t = empty(shape);
  f.read(reinterpret_cast<char*>(t.data<float>()), static_cast<std::streamsize>(count * 4));
  if (!f) throw std::runtime_error(fmt::format("'{}': fewer values than its shape needs", path));
  return t;
}

Tensor run_onnxruntime(const RuntimeTools& tools, const std::string& onnx_path, const Tensor& input) {
  const std::string in = temp_path(tools, "in"), out = temp_path(tools, "out");
  write_tensor_file(in, input);
  const auto [status, text] =
      run(fmt::format("{} {} {} {} {}", quote(tools.node), quote(tools.runner), quote(onnx_path), quote(in), quote(out)));
  std::remove(in.c_str());
  if (status != 0) {
    std::remove(out.c_str());
    throw std::runtime_error(fmt::format("ONNX Runtime failed on '{}' (status {}): {}", onnx_path, status, text));
  }
  Tensor y = read_tensor_file(out);
  std::remove(out.c_str());
  return y;
}

void check_with_python_onnx(const RuntimeTools& tools, const std::string& onnx_path) {
  const std::string script =
      "import sys, onnx; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True); print('ok')";
  const auto [status, text] = run(fmt::format("{} -c {} {}", quote(tools.python), quote(script), quote(onnx_path)));
  if (status != 0 || text.find("ok") == std::string::npos)
    throw std::runtime_error(fmt::format("onnx.checker refuses '{}': {}", onnx_path, text));
}

Agreement compare_with_onnxruntime(nn::Module& model, const RuntimeTools& tools, const std::string& onnx_path,
                                   const io::Dataset& data, int64_t batch_size) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  // The file's input rank says how the images go in: rows (N, 784) for an
  // MLP, images (N, 1, 28, 28) for a CNN.
  ::onnx::ModelProto proto;
  {
    std::ifstream f(onnx_path, std::ios::binary);
    std::stringstream bytes;
    bytes << f.rdbuf();
    if (!f || !proto.ParseFromString(bytes.str()) || proto.graph().input_size() < 1)
      throw std::runtime_error(fmt::format("'{}' is not an ONNX model with an input", onnx_path));
  }
  const bool as_images = proto.graph().input(0).type().tensor_type().shape().dim_size() == 4;
  io::DataLoader loader(data, {.batch_size = batch_size, .shuffle = false, .as_images = as_images});
  io::Batch b;
  Agreement a;
  int64_t same = 0, right_tq = 0, right_rt = 0, differing = 0, values = 0;
  double max_out = 0;
  while (loader.next(b)) {
    const Tensor y_tq_raw = model(b.images);
    if (y_tq_raw.is_quantized()) a.output_step = std::max<double>(a.output_step, y_tq_raw.qparams().scale[0]);
    const Tensor y_tq = kernels::contiguous(kernels::to_float(y_tq_raw));
    const Tensor y_rt = run_onnxruntime(tools, onnx_path, b.images);
    if (!(y_rt.shape() == y_tq.shape()))
      throw std::runtime_error(fmt::format("ONNX Runtime's output has shape {}, tinyqat's {}", y_rt.shape().str(),
                                           y_tq.shape().str()));
    const int64_t n = y_tq.size(0), k = y_tq.size(1);
    const float* p = y_tq.data<float>();
    const float* q = y_rt.data<float>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t am = std::max_element(p + i * k, p + (i + 1) * k) - (p + i * k);
      const int64_t bm = std::max_element(q + i * k, q + (i + 1) * k) - (q + i * k);
      const int64_t label = b.labels.data<int64_t>()[i];
      same += am == bm;
      right_tq += am == label;
      right_rt += bm == label;
      for (int64_t j = 0; j < k; ++j) {
        differing += p[i * k + j] != q[i * k + j];
        ++values;
        a.max_abs_diff = std::max(a.max_abs_diff, std::fabs(double{p[i * k + j]} - double{q[i * k + j]}));
        max_out = std::max(max_out, std::fabs(double{p[i * k + j]}));
      }
    }
    a.samples += n;
  }
  model.train(was_training);
  if (a.samples == 0) throw std::invalid_argument("compare_with_onnxruntime: no samples");
  const double total = static_cast<double>(a.samples);
  a.prediction_agreement = 100.0 * static_cast<double>(same) / total;
  a.tinyqat_accuracy = 100.0 * static_cast<double>(right_tq) / total;
  a.runtime_accuracy = 100.0 * static_cast<double>(right_rt) / total;
  a.differing_outputs = 100.0 * static_cast<double>(differing) / static_cast<double>(std::max<int64_t>(values, 1));
  a.max_rel_diff = max_out > 0 ? a.max_abs_diff / max_out : a.max_abs_diff;
  a.max_steps = a.output_step > 0 ? a.max_abs_diff / a.output_step : 0;
  return a;
}

}  // namespace tq::onnx_io
