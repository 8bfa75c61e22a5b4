// Model files of convolutional networks: models::cnn() and the small-input
// MobileNetV2 save and load back (load_model, no code that knows the
// architecture) with the same printout, the same BatchNorm running
// statistics and bit-identical outputs; a bad convolution config is named.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "io/model_file.h"
#include "io/safetensors.h"
#include "models/cnn.h"
#include "models/mobilenet_v2.h"
#include "test_files.h"
#include "tinyqat.h"

namespace {

using namespace tq;
using Catch::Matchers::Contains;

std::string temp_path(const std::string& name) { return (tq_test::scratch_dir("cnn_model_file") / name).string(); }

bool same_bits(const Tensor& a, const Tensor& b) {
  if (!(a.shape() == b.shape()) || a.dtype() != b.dtype()) return false;
  const Tensor ca = kernels::contiguous(a), cb = kernels::contiguous(b);
  return std::memcmp(ca.raw_data(), cb.raw_data(), static_cast<size_t>(ca.numel()) * dtype_size(ca.dtype())) == 0;
}

// Moves the BatchNorm running statistics away from their initial values, so
// that a loader that dropped them would change the eval output.
void run_a_training_batch(nn::Module& m, const Shape& input) {
  m.train();
  NoGradGuard no_grad;
  m(randn(input));
  m.eval();
}

void check_round_trip(nn::Module& model, const Shape& input, const std::string& file) {
  run_a_training_batch(model, input);
  const Tensor x = randn(input);
  Tensor want;
  {
    NoGradGuard no_grad;
    want = model(x);
  }
  io::save_model(model, temp_path(file));
  auto loaded = io::load_model(temp_path(file));
  loaded->eval();
  CHECK(loaded->repr() == model.repr());
  const auto a = io::model_to_safetensors(model).tensors, b = io::model_to_safetensors(*loaded).tensors;
  REQUIRE(a.size() == b.size());
  for (auto& [name, t] : a) {
    INFO(name);
    REQUIRE(b.count(name));
    CHECK(same_bits(t, b.at(name)));
  }
  NoGradGuard no_grad;
  CHECK(same_bits((*loaded)(x), want));
}

}  // namespace

TEST_CASE("cnn model file loads back with identical outputs", "[model_file][cnn]") {
  manual_seed(3);
  auto model = models::cnn();
  check_round_trip(*model, {2, 1, 28, 28}, "cnn.safetensors");
}

TEST_CASE("small-input MobileNetV2 model file loads back with identical outputs", "[model_file][cnn]") {
  manual_seed(4);
  auto model = models::mobilenet_v2_small_input(10, 0.25);
  check_round_trip(*model, {2, 1, 28, 28}, "mbv2.safetensors");
  // The residual adds and the BatchNorm buffers are in the file.
  const auto file = io::load_safetensors(temp_path("mbv2.safetensors"));
  CHECK(file.tensors.count("features.1.conv.2.running_var"));
  CHECK(file.tensors.at("features.1.conv.2.num_batches_tracked").dtype() == DType::i64);
  CHECK_THAT(file.metadata.at("tinyqat"), Contains("\"type\":\"Add\""));
}

TEST_CASE("pooling, dropout and flatten keep their settings in a model file", "[model_file][cnn]") {
  nn::Sequential s;
  s.push_back(nn::AvgPool2d(3, 2, 1));
  s.push_back(nn::MaxPool2d({2, 3}, 1, {1, 0}, 1));
  s.push_back(nn::AdaptiveAvgPool2d({2, 1}));
  s.push_back(nn::Dropout(0.3));
  s.push_back(nn::Flatten(2));
  io::save_model(s, temp_path("pool.safetensors"));
  auto loaded = io::load_model(temp_path("pool.safetensors"));
  CHECK(loaded->repr() == s.repr());
  loaded->eval();
  s.eval();
  const Tensor x = randn({1, 2, 7, 6});
  NoGradGuard no_grad;
  CHECK(same_bits((*loaded)(x), s(x)));
}

TEST_CASE("a convolution config that does not fit its tensors is named", "[model_file][cnn]") {
  nn::Sequential s;
  s.push_back(nn::Conv2d(2, 4, 3));
  auto file = io::model_to_safetensors(s);
  auto meta = nlohmann::json::parse(file.metadata.at("tinyqat"));
  meta["model"]["children"][0]["module"]["config"]["out_channels"] = 5;
  file.metadata["tinyqat"] = meta.dump();
  CHECK_THROWS_WITH(io::build_model(file, "f"), Contains("0.weight"));
  meta["model"]["children"][0]["module"]["config"]["groups"] = 3;
  file.metadata["tinyqat"] = meta.dump();
  CHECK_THROWS_WITH(io::build_model(file, "f"), Contains("module '0' (Conv2d)"));
}
