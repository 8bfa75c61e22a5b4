// tinyqat run: a model file applied to an .npy array, the output written as
// .npy (docs/cli.md "run"), for exchanging inputs and outputs with numpy.
#include <fmt/format.h>

#include <cmath>

#include "commands.h"
#include "common.h"
#include "io/model_file.h"
#include "io/npy.h"
#include "quant/passes.h"
#include "tensor/ops.h"

namespace tq::cli {

int run_run(int argc, char** argv) {
  cxxopts::Options o("tinyqat run", "Run a model file on an .npy input and write its output as .npy.");
  o.add_options()("model", "model file", cxxopts::value<std::string>())("input", "input array (.npy, float32 or float64)",
                                                                        cxxopts::value<std::string>())(
      "out", "output array to write (.npy, float32)", cxxopts::value<std::string>());
  add_common(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string model_path = require(r, "model"), input = require(r, "input"), out = require(r, "out");
  check_output_path(out);
  auto model = io::load_model(model_path);
  quant::set_int8_threads(*model, r["threads"].as<int>());
  model->eval();
  const Tensor x = io::load_npy(input);
  memory_grows_with(fmt::format("the input {} of shape {} (the model of --model {})", input, x.shape().str(), model_path), 1);
  // A NaN or infinite input gives an answer that means nothing (ReLU turns a
  // NaN into 0, an int8 layer quantizes it to its lowest code): refused.
  {
    const float* v = x.data<float>();
    for (int64_t i = 0, i_end = x.numel(); i < i_end; ++i)
      if (!std::isfinite(v[i]))
        throw std::runtime_error(fmt::format("{}: element {} of the input is {}; a model input must be finite", input, i, v[i]));
  }
  Tensor y;
  {
    NoGradGuard no_grad;
    try {
      y = (*model)(x);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(fmt::format("{}: the model cannot take the input {} of shape {}: {}", model_path, input,
                                           x.shape().str(), e.what()));
    }
  }
  // An int8 model's output is a quantized tensor: written as its real values.
  if (y.is_quantized()) y = kernels::to_float(y);
  io::save_npy(out, y);
  json j = {{"input_shape", x.shape().str()}, {"output_shape", y.shape().str()}, {"out", out}};
  finish(r, j, fmt::format("{} on {} {} -> {} {}\n", model_path, input, x.shape().str(), out, y.shape().str()));
  return 0;
}

}  // namespace tq::cli
