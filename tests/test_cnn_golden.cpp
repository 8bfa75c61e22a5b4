// Convolutional layers against PyTorch 1.13 (tests/golden/cnn_layers.txt and
// mobilenet_v2_*, written by tests/golden/generate_cnn.py): forward and the
// gradients of d sum(out * gout) for conv2d (stride, padding, dilation,
// groups, depthwise, 1x1, odd sizes, batch 1), pooling, relu6 and BatchNorm2d
// (train, eval, running statistics after three steps); MobileNetV2's printout,
// a reduced-width MobileNetV2 loaded from PyTorch's state_dict, and `tinyqat
// run` on its numpy .npy input against PyTorch's output.
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "golden_reader.h"
#include "tinyqat.h"

using namespace tq;

namespace {

// Same formulas in f32; only the order of additions differs (sgemm blocking,
// per-plane partial sums).
constexpr double kForwardRelTol = 1e-5;
constexpr double kGradientRelTol = 2e-5;
// A whole network: errors of 52 layers compound a little.
constexpr double kModelRelTol = 1e-4;

const golden::File& file() { return golden::load("cnn_layers.txt"); }

void require_match(const Tensor& got, const std::string& name, double tol) {
  const golden::Comparison c = golden::compare(got, file().tensor(name));
  INFO(c.describe(name));
  REQUIRE(c.relative_error <= tol);
}

// Runs fn on the case's inputs (leaves requiring gradients), seeds backward
// with gout and compares out and every input gradient.
void check_case(const std::string& c, const std::vector<std::string>& names,
                const std::function<Tensor(const std::vector<Tensor>&)>& fn) {
  std::vector<Tensor> in;
  for (const auto& n : names) in.push_back(file().tensor(c + "/" + n).requires_grad_(true));
  const Tensor out = fn(in);
  require_match(out, c + "/out", kForwardRelTol);
  backward(out, file().tensor(c + "/gout"));
  for (size_t i = 0; i < names.size(); ++i) require_match(in[i].grad(), c + "/grad/" + names[i], kGradientRelTol);
}

std::vector<int64_t> params(const std::string& c) { return golden::ints_of(file().tensor(c + "/params")); }

}  // namespace

TEST_CASE("conv2d matches PyTorch: forward, input, weight and bias gradients", "[cnn][golden]") {
  for (const char* name : {"basic", "stride2", "no_padding_odd", "dilation2", "groups2", "depthwise",
                           "depthwise_stride2", "depthwise_multiplier2", "pointwise", "pointwise_stride2",
                           "rectangular", "batch1"}) {
    SECTION(name) {
      const std::string c = std::string("conv2d/") + name;
      const auto p = params(c);
      const Conv2dOptions o{{p[0], p[1]}, {p[2], p[3]}, {p[4], p[5]}, p[6]};
      const bool has_bias = file().has(c + "/bias");
      std::vector<std::string> names = {"x", "weight"};
      if (has_bias) names.push_back("bias");
      check_case(c, names, [&](const std::vector<Tensor>& in) {
        return conv2d(in[0], in[1], has_bias ? in[2] : Tensor(), o);
      });
    }
  }
}

TEST_CASE("max_pool2d, avg_pool2d and adaptive_avg_pool2d match PyTorch", "[cnn][golden]") {
  for (const char* name : {"k2", "k2_odd", "k3s2p1", "k3s1p1_dilation2"}) {
    const std::string c = std::string("max_pool2d/") + name;
    const auto p = params(c);
    INFO(c);
    check_case(c, {"x"}, [&](const std::vector<Tensor>& in) {
      return max_pool2d(in[0], {{p[0], p[1]}, {p[2], p[3]}, {p[4], p[5]}, {p[6], p[7]}});
    });
  }
  for (const char* name : {"k2", "k3s2p1", "k3s1_odd"}) {
    const std::string c = std::string("avg_pool2d/") + name;
    const auto p = params(c);
    INFO(c);
    check_case(c, {"x"}, [&](const std::vector<Tensor>& in) {
      return avg_pool2d(in[0], {{p[0], p[1]}, {p[2], p[3]}, {p[4], p[5]}, {1, 1}});
    });
  }
  for (const char* name : {"global", "7x5_to_3x2", "9x9_to_4x4"}) {
    const std::string c = std::string("adaptive_avg_pool2d/") + name;
    const auto p = params(c);
    INFO(c);
    check_case(c, {"x"}, [&](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0], p[0], p[1]); });
  }
}

TEST_CASE("relu6 matches PyTorch", "[cnn][golden]") {
  check_case("relu6/basic", {"x"}, [](const std::vector<Tensor>& in) { return nn::relu6(in[0]); });
}

TEST_CASE("BatchNorm2d in training matches PyTorch: output, gradients and running statistics after three steps",
          "[cnn][golden]") {
  for (const char* name : {"train", "train_batch1", "train_no_affine"}) {
    SECTION(name) {
      const std::string c = std::string("batch_norm/") + name;
      const Tensor x0 = file().tensor(c + "/x0");
      const bool affine = file().has(c + "/weight");
      nn::BatchNorm2d bn(x0.size(1), 1e-5, 0.1, affine);
      if (affine) {
        kernels::copy_(bn.weight, file().tensor(c + "/weight"));
        kernels::copy_(bn.bias, file().tensor(c + "/bias"));
      }
      bn.train();
      const Tensor x = kernels::clone(x0).requires_grad_(true);
      const Tensor out = bn(x);
      require_match(out, c + "/out", kForwardRelTol);
      backward(out, file().tensor(c + "/gout"));
      require_match(x.grad(), c + "/grad/x", kGradientRelTol);
      if (affine) {
        require_match(bn.weight.grad(), c + "/grad/weight", kGradientRelTol);
        require_match(bn.bias.grad(), c + "/grad/bias", kGradientRelTol);
      }
      bn(file().tensor(c + "/x1"));
      bn(file().tensor(c + "/x2"));
      require_match(bn.running_mean(), c + "/running_mean", kForwardRelTol);
      require_match(bn.running_var(), c + "/running_var", kForwardRelTol);
      REQUIRE(bn.num_batches_tracked() == golden::ints_of(file().tensor(c + "/num_batches_tracked"))[0]);
    }
  }
}

TEST_CASE("BatchNorm2d in eval uses the running statistics and matches PyTorch", "[cnn][golden]") {
  const std::string c = "batch_norm/eval";
  nn::BatchNorm2d bn(3);
  kernels::copy_(bn.weight, file().tensor(c + "/weight"));
  kernels::copy_(bn.bias, file().tensor(c + "/bias"));
  kernels::copy_(bn.running_mean(), file().tensor(c + "/running_mean"));
  kernels::copy_(bn.running_var(), file().tensor(c + "/running_var"));
  bn.eval();
  const Tensor x = file().tensor(c + "/x").requires_grad_(true);
  const Tensor out = bn(x);
  require_match(out, c + "/out", kForwardRelTol);
  backward(out, file().tensor(c + "/gout"));
  require_match(x.grad(), c + "/grad/x", kGradientRelTol);
  require_match(bn.weight.grad(), c + "/grad/weight", kGradientRelTol);
  require_match(bn.bias.grad(), c + "/grad/bias", kGradientRelTol);
  // Eval changes no statistics.
  require_match(bn.running_mean(), c + "/running_mean", 0.0);
  REQUIRE(bn.num_batches_tracked() == 0);
}

TEST_CASE("mobilenet_v2() prints like torchvision's (skip_add children aside)", "[cnn][golden]") {
  std::ifstream in(golden::path("mobilenet_v2_repr.txt"));
  REQUIRE(in.good());
  std::stringstream want;
  want << in.rdbuf();
  // tinyqat's residual blocks also list their nn::Add, which torchvision's float model has not.
  std::istringstream lines(models::mobilenet_v2()->repr());
  std::string got, line;
  int skip_adds = 0;
  while (std::getline(lines, line)) {
    if (line.find("(skip_add): Add()") != std::string::npos) {
      ++skip_adds;
      continue;
    }
    got += line + "\n";
  }
  REQUIRE(skip_adds == 10);  // the blocks with stride 1 and equal channels
  REQUIRE(got == want.str());
}

TEST_CASE("A reduced-width MobileNetV2 loaded from PyTorch's state_dict gives PyTorch's outputs", "[cnn][golden]") {
  const golden::File& g = golden::load("mobilenet_v2_w025.txt");
  auto model = models::mobilenet_v2(10, 0.25);
  int64_t count = 0;
  for (const Tensor& p : model->parameters()) count += p.numel();
  REQUIRE(count == golden::ints_of(g.tensor("parameter_count"))[0]);
  const auto result = io::load_state_dict_file(*model, golden::path("mobilenet_v2_w025.safetensors"));
  REQUIRE(result.missing_keys.empty());
  REQUIRE(result.unexpected_keys.empty());
  model->eval();
  NoGradGuard no_grad;
  for (const char* which : {"", "_odd"}) {
    const Tensor y = (*model)(g.tensor(std::string("input") + which));
    const golden::Comparison c = golden::compare(y, g.tensor(std::string("output") + which));
    INFO(c.describe(std::string("output") + which));
    REQUIRE(c.relative_error <= kModelRelTol);
  }
}

TEST_CASE("tinyqat run on numpy's .npy input gives PyTorch's output for a PyTorch state_dict", "[cnn][golden][cli]") {
  // The interop path end to end: PyTorch's state_dict (plain safetensors) into
  // the matching architecture, saved as a tinyqat model file, then the `run`
  // command on an .npy file numpy wrote; its .npy output against PyTorch's.
  auto model = models::mobilenet_v2(10, 0.25);
  const auto result = io::load_state_dict_file(*model, golden::path("mobilenet_v2_w025.safetensors"));
  REQUIRE(result.missing_keys.empty());
  REQUIRE(result.unexpected_keys.empty());
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("tinyqat_run_npy_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string model_file = (dir / "mobilenet_v2_w025.safetensors").string(), out = (dir / "y.npy").string();
  io::save_model(*model, model_file);
  const std::string cmd = std::string(TINYQAT_BINARY_DIR) + "/tinyqat run --model " + model_file + " --input " +
                          golden::path("mobilenet_v2_w025_input.npy") + " --out " + out + " >/dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  INFO(cmd);
  REQUIRE(status == 0);
  const Tensor y = io::load_npy(out), want = io::load_npy(golden::path("mobilenet_v2_w025_output.npy"));
  REQUIRE(y.shape() == want.shape());
  const golden::Comparison c = golden::compare(y, want);
  INFO(c.describe("run output"));
  CHECK(c.relative_error <= kModelRelTol);
  std::filesystem::remove_all(dir);
}
