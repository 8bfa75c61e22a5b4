// Model files written by version 1 of the format keep loading, with the same
// results (docs/model_files.md §6). tests/data/model_files_v1/ holds files of a
// small MLP (12-16-8-4) as the library wrote them when the fixtures were made:
// float, QAT (prepared and converted), PTQ (observed and converted), dynamic
// int8 and 4-bit LSQ (prepared and converted, weights packed two to a byte),
// plus the inputs and each model's outputs on them then.
//
// The files are committed and never regenerated: they stand for files users
// already have. The hidden test case at the end wrote them:
//   TINYQAT_FIXTURE_OUT=tests/data/model_files_v1 build/tests/tinyqat_tests "[.generate_model_files_v1]"
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "tinyqat.h"

namespace {

using namespace tq;
namespace q = tq::quant;
namespace fs = std::filesystem;

const fs::path kFixtureDir = fs::path(TINYQAT_GOLDEN_DIR) / ".." / "data" / "model_files_v1";

// Float outputs go through OpenBLAS, whose last bits depend on the CPU it
// picks a kernel for; integer outputs are the same everywhere.
constexpr double kFloatTolerance = 1e-4;

// The fixture names: <name>.safetensors, and outputs named <name> in expected.safetensors.
const std::vector<std::string> kFloatOutputModels = {"float", "qat", "ptq_observed", "dynamic", "lsq4"};
const std::vector<std::string> kInt8OutputModels = {"qat_int8", "ptq_int8", "lsq4_int8"};

Tensor run(nn::Module& m, const Tensor& x) {
  NoGradGuard no_grad;
  m.eval();
  return m(x);
}

std::vector<int64_t> predictions(const Tensor& out) {
  const Tensor p = kernels::argmax(kernels::to_float(out), 1);
  return {p.data<int64_t>(), p.data<int64_t>() + p.numel()};
}

// The stored integers of a quantized output, as a plain u8 tensor.
Tensor raw_u8(const Tensor& y) {
  Tensor out = empty(y.shape(), DType::u8);
  const Tensor c = kernels::contiguous(y);
  std::copy(c.data<uint8_t>(), c.data<uint8_t>() + c.numel(), out.data<uint8_t>());
  return out;
}

void train(nn::Module& m, int steps, uint64_t seed) {
  m.train();
  nn::SGD opt(m.parameters(), {.lr = 0.05, .momentum = 0.9});
  for (int s = 0; s < steps; ++s) {
    Generator g(seed + s);
    const Tensor x = randn({16, 12}, g);
    const Tensor y = randint(0, 4, {16}, g);
    opt.zero_grad();
    Tensor loss = cross_entropy(m(x), y);
    loss.backward();
    opt.step();
  }
  m.eval();
}

}  // namespace

TEST_CASE("model files v1: every fixture loads and gives the outputs it gave when written", "[modelfile][fixtures]") {
  const io::SafetensorsFile expected = io::load_safetensors((kFixtureDir / "expected.safetensors").string());
  const Tensor x = expected.tensors.at("inputs");
  REQUIRE(x.shape() == Shape{8, 12});
  for (const std::string& name : kFloatOutputModels) {
    INFO("fixture " << name);
    auto model = io::load_model((kFixtureDir / (name + ".safetensors")).string());
    const Tensor y = run(*model, x);
    const Tensor want = expected.tensors.at(name);
    REQUIRE(y.dtype() == DType::f32);
    REQUIRE(y.shape() == want.shape());
    for (int64_t i = 0; i < y.numel(); ++i) CHECK(std::fabs(y.data<float>()[i] - want.data<float>()[i]) <= kFloatTolerance);
    CHECK(predictions(y) == predictions(want));
  }
  for (const std::string& name : kInt8OutputModels) {
    INFO("fixture " << name);
    auto model = io::load_model((kFixtureDir / (name + ".safetensors")).string());
    const Tensor y = run(*model, x);
    REQUIRE(y.is_quantized());
    const Tensor want = expected.tensors.at(name);
    REQUIRE(y.shape() == want.shape());
    const Tensor got = raw_u8(y);
    for (int64_t i = 0; i < y.numel(); ++i) CHECK(int(got.data<uint8_t>()[i]) == int(want.data<uint8_t>()[i]));
    CHECK(y.qparams().scale[0] == expected.tensors.at(name + ".scale").data<float>()[0]);
    CHECK(y.qparams().zero_point[0] == expected.tensors.at(name + ".zero_point").data<int32_t>()[0]);
  }
}

TEST_CASE("model files v1: the fixtures hold what their names say", "[modelfile][fixtures]") {
  auto type_at = [](const std::string& file, const std::string& path) {
    return io::load_model((kFixtureDir / (file + ".safetensors")).string())->get_submodule(path).type_name();
  };
  CHECK(type_at("float", "fc1") == "Linear");
  CHECK(type_at("qat", "fc1") == "QATLinearReLU");
  CHECK(type_at("qat_int8", "fc1") == "QuantizedLinearReLU");
  CHECK(type_at("qat_int8", "fc3") == "QuantizedLinear");
  CHECK(type_at("ptq_observed", "fc2") == "ObservedLinearReLU");
  CHECK(type_at("ptq_int8", "fc2") == "QuantizedLinearReLU");
  CHECK(type_at("dynamic", "fc1.0") == "DynamicQuantizedLinear");
  CHECK(type_at("dynamic", "fc3") == "DynamicQuantizedLinear");
  CHECK(type_at("lsq4", "fc1.weight_fake_quant") == "LearnableFakeQuantize");
  // 4-bit weights are stored packed, two to a byte.
  const io::SafetensorsFile lsq = io::load_safetensors((kFixtureDir / "lsq4_int8.safetensors").string());
  CHECK(lsq.tensors.at("fc1.weight").dtype() == DType::u8);
  CHECK(lsq.tensors.at("fc1.weight").numel() == 16 * 12 / 2);
}

// Wrote the committed fixtures (see the top of this file). Hidden: ctest does not run it.
TEST_CASE("model files v1: write the fixtures", "[.generate_model_files_v1]") {
  const char* out_dir = std::getenv("TINYQAT_FIXTURE_OUT");
  REQUIRE(out_dir);
  const fs::path out(out_dir);
  fs::create_directories(out);
  io::SafetensorsFile expected;
  Generator g(2024);
  const Tensor x = randn({8, 12}, g);
  expected.tensors["inputs"] = x;
  auto save = [&](nn::Module& m, const std::string& name) {
    io::save_model(m, (out / (name + ".safetensors")).string());
    const Tensor y = run(m, x);
    if (y.is_quantized()) {
      expected.tensors[name] = raw_u8(y);
      expected.tensors[name + ".scale"] = from_vector(std::vector<float>{y.qparams().scale[0]}, {1});
      Tensor zp = empty({1}, DType::i32);
      zp.data<int32_t>()[0] = y.qparams().zero_point[0];
      expected.tensors[name + ".zero_point"] = zp;
    } else {
      expected.tensors[name] = kernels::clone(y);
    }
  };
  auto fresh = [] {
    manual_seed(11);
    auto m = nn::make_mlp({12, 16, 8, 4});
    return m;
  };
  {
    auto m = fresh();
    train(*m, 5, 100);
    save(*m, "float");
  }
  {
    auto m = fresh();
    q::fuse_linear_relu(*m);
    m->qconfig = q::get_default_qat_qconfig("x86");
    q::prepare_qat(*m);
    train(*m, 5, 200);
    save(*m, "qat");
    q::convert(*m);
    save(*m, "qat_int8");
  }
  {
    auto m = fresh();
    q::fuse_linear_relu(*m);
    m->qconfig = q::get_default_qconfig("x86");
    q::prepare(*m);
    m->eval();
    for (uint64_t s = 0; s < 3; ++s) {
      Generator cg(300 + s);
      NoGradGuard no_grad;
      (*m)(randn({16, 12}, cg));
    }
    save(*m, "ptq_observed");
    q::convert(*m);
    save(*m, "ptq_int8");
  }
  {
    auto m = fresh();
    q::fuse_linear_relu(*m);
    REQUIRE(q::quantize_dynamic(*m) == 3);
    save(*m, "dynamic");
  }
  {
    auto m = fresh();
    q::fuse_linear_relu(*m);
    m->qconfig = q::make_lsq_qat_qconfig(4, 4);
    q::prepare_qat(*m);
    train(*m, 5, 400);
    save(*m, "lsq4");
    q::convert(*m);
    save(*m, "lsq4_int8");
  }
  io::save_safetensors((out / "expected.safetensors").string(), expected);
}
