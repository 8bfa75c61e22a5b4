// Model files of convolutional networks: models::cnn() and the small-input
// MobileNetV2 save and load back (load_model, no code that knows the
// architecture) with the same printout, the same BatchNorm running
// statistics and bit-identical outputs; a bad convolution config is named;
// int8 convolutions keep their per-channel weight scales as F32 tensors, and
// files with the scales as JSON text still load.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/model_file.h"
#include "io/safetensors.h"
#include "models/cnn.h"
#include "models/mobilenet_v2.h"
#include "quant/fused.h"
#include "quant/passes.h"
#include "quant/qconfig.h"
#include "quant/quantized_conv.h"
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

namespace {

// Every QuantizedConv2d node of a model tree, with its dotted path.
void conv_nodes(nlohmann::json& node, const std::string& path, std::vector<std::pair<std::string, nlohmann::json*>>& out) {
  if (node.at("type").get<std::string>().starts_with("QuantizedConv2d")) out.push_back({path, &node});
  for (auto& child : node.at("children"))
    conv_nodes(child.at("module"), path.empty() ? child.at("name").get<std::string>() : path + "." + child.at("name").get<std::string>(),
               out);
}

}  // namespace

TEST_CASE("int8 convolution files keep per-channel weight scales as F32 tensors; the JSON-scale form still loads",
          "[model_file][cnn][quant]") {
  manual_seed(41);
  auto net = models::mobilenet_v2_small_input(4, 0.25);
  net->eval();
  quant::fuse_known_modules(*net);
  net->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*net);
  const Tensor x = randn({2, 1, 12, 12});
  {
    NoGradGuard no_grad;
    (*net)(randn({4, 1, 12, 12}));
  }
  quant::convert(*net);
  const std::string path = temp_path("mbv2_int8.safetensors");
  io::save_model(*net, path);
  Tensor want;
  {
    NoGradGuard no_grad;
    want = kernels::to_float((*net)(x));
  }

  // The new form: "scale": "tensor" in the config, <layer>.weight_scale F32 (out)
  // in the file, no zero points (symmetric weights: all 0).
  io::SafetensorsFile file = io::load_safetensors(path);
  auto meta = nlohmann::json::parse(file.metadata.at("tinyqat"));
  std::vector<std::pair<std::string, nlohmann::json*>> convs;
  conv_nodes(meta.at("model"), "", convs);
  REQUIRE(convs.size() == 52);  // 17 blocks, stem and head: every convolution of the network
  for (auto& [layer, node] : convs) {
    INFO(layer);
    const auto& config = node->at("config");
    CHECK(config.at("weight_qparams").at("scale") == "tensor");
    CHECK(!config.at("weight_qparams").contains("zero_point"));
    REQUIRE(file.tensors.count(layer + ".weight_scale"));
    const Tensor& s = file.tensors.at(layer + ".weight_scale");
    CHECK(s.dtype() == DType::f32);
    CHECK(s.shape() == Shape{config.at("out_channels").get<int64_t>()});
    CHECK(!file.tensors.count(layer + ".weight_zero_point"));
    const QParams& wq = dynamic_cast<const quant::QuantizedConv2d&>(net->get_submodule(layer)).weight().qparams();
    CHECK(to_vector(s) == wq.scale);
  }

  // The form written before: the scales and zero points as JSON arrays in the
  // config, no weight_scale tensors. It loads and gives the same outputs.
  io::SafetensorsFile old = file;
  auto old_meta = meta;
  std::vector<std::pair<std::string, nlohmann::json*>> old_convs;
  conv_nodes(old_meta.at("model"), "", old_convs);
  for (auto& [layer, node] : old_convs) {
    auto& wq = (*node)["config"]["weight_qparams"];
    const std::vector<float> scales = to_vector(file.tensors.at(layer + ".weight_scale"));
    wq["scale"] = scales;
    wq["zero_point"] = std::vector<int32_t>(scales.size(), 0);
    old.tensors.erase(layer + ".weight_scale");
  }
  old.metadata["tinyqat"] = old_meta.dump();
  auto from_old = io::build_model(old, "old form");
  CHECK(from_old->repr() == net->repr());
  {
    NoGradGuard no_grad;
    from_old->eval();
    CHECK(same_bits(kernels::to_float((*from_old)(x)), want));
  }
  // The scales as text took more room than as F32 tensors.
  io::save_safetensors(temp_path("mbv2_int8_old.safetensors"), old);
  CHECK(tq_test::read_bytes(path).size() + 4 * 5000 < tq_test::read_bytes(temp_path("mbv2_int8_old.safetensors")).size());

  // A damaged scale tensor is named.
  const std::string first = convs.front().first;
  {
    io::SafetensorsFile bad = file;
    bad.tensors[first + ".weight_scale"] = zeros({3});
    CHECK_THROWS_WITH(io::build_model(bad, "bad"), Contains("weight_scale must be F32 of shape"));
  }
  {
    io::SafetensorsFile bad = file;
    Tensor s = kernels::clone(file.tensors.at(first + ".weight_scale"));
    s.data<float>()[1] = -1.0f;
    bad.tensors[first + ".weight_scale"] = s;
    CHECK_THROWS_WITH(io::build_model(bad, "bad"), Contains("scale 1 must be positive"));
  }
  {
    io::SafetensorsFile bad = file;
    bad.tensors.erase(first + ".weight_scale");
    CHECK_THROWS_WITH(io::build_model(bad, "bad"), Contains("weight_scale"));
  }
  {
    io::SafetensorsFile bad = file;
    const int64_t n = file.tensors.at(first + ".weight_scale").numel();
    Tensor z = zeros({n}, DType::i32);
    z.data<int32_t>()[0] = 500;
    bad.tensors[first + ".weight_zero_point"] = z;
    CHECK_THROWS_WITH(io::build_model(bad, "bad"), Contains("zero point 500"));
  }
}
