// Hostile values in the readers the convolutional models added: BatchNorm's
// running statistics from a model file or a PyTorch state_dict, and the
// counter a training batch increments (docs/reliability.md §2).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>

#include "io/model_file.h"
#include "io/npy.h"
#include "io/state_dict.h"
#include "tinyqat.h"

using namespace tq;

namespace {

// Conv2d(1 -> 2, 3x3) + BatchNorm2d(2), as model file "m.st".
std::shared_ptr<nn::Sequential> conv_bn() {
  manual_seed(4);
  auto m = std::make_shared<nn::Sequential>();
  m->push_back("conv", nn::Conv2d(1, 2, 3));
  m->push_back("bn", nn::BatchNorm2d(2));
  return m;
}

io::SafetensorsFile with(const std::string& tensor, const Tensor& value) {
  io::SafetensorsFile f = io::model_to_safetensors(*conv_bn());
  REQUIRE(f.tensors.count(tensor));
  f.tensors[tensor] = value;
  return f;
}

}  // namespace

TEST_CASE("hostile cnn: BatchNorm running statistics a model file may not hold are refused at load", "[hostile][cnn][errors]") {
  const float nan = std::nanf(""), inf = std::numeric_limits<float>::infinity();
  REQUIRE_NOTHROW(io::build_model(io::model_to_safetensors(*conv_bn()), "m.st"));
  // Each was loaded, and evaluated with exit 0: a negative or NaN variance
  // makes every output NaN (10% accuracy), an infinite mean too.
  const std::vector<std::tuple<std::string, Tensor, std::string>> cases = {
      {"bn.running_var", from_vector({1.f, -1.f}, {2}), "loaded running_var[1] is -1"},
      {"bn.running_var", from_vector({nan, 1.f}, {2}), "loaded running_var[0] is nan"},
      {"bn.running_mean", from_vector({0.f, inf}, {2}), "loaded running_mean[1] is inf"},
      {"bn.running_var", from_vector({1.f, 1.f, 1.f}, {3}), "running_var must be f32 of shape (2), got f32 (3,)"},
      {"bn.num_batches_tracked", from_vector_i64({-5}, {}), "num_batches_tracked is -5"},
      {"bn.num_batches_tracked", from_vector({3.f}, {}), "num_batches_tracked must be one i64 value, got f32"},
  };
  for (const auto& [tensor, value, expect] : cases) {
    INFO(tensor << ": " << expect);
    CHECK_THROWS_WITH(io::build_model(with(tensor, value), "m.st"),
                      Catch::StartsWith("m.st: module 'bn'") && Catch::Contains(expect));
  }
}

TEST_CASE("hostile cnn: a BatchNorm batch count at its maximum stays there instead of overflowing", "[hostile][cnn]") {
  const int64_t max = std::numeric_limits<int64_t>::max();
  auto model = io::build_model(with("bn.num_batches_tracked", from_vector_i64({max}, {})), "m.st");
  model->train();
  Generator g(1);
  (*model)(randn({2, 1, 5, 5}, g));  // was a signed overflow (undefined behaviour; it wrapped to the minimum)
  auto& bn = dynamic_cast<nn::BatchNorm2d&>(model->get_submodule("bn"));
  CHECK(bn.num_batches_tracked() == max);
}

TEST_CASE("hostile cnn: a state_dict is checked by every module it loads into, and a refused one changes nothing",
          "[hostile][cnn][errors]") {
  auto model = conv_bn();
  io::StateDict good = io::state_dict(*model);
  const Tensor mean_before = kernels::clone(model->get_submodule("bn").buffer("running_mean"));
  io::StateDict bad;
  for (auto& [name, t] : good) bad[name] = kernels::clone(t);
  bad["bn.running_var"] = from_vector({-2.f, 1.f}, {2});
  bad["bn.running_mean"] = from_vector({5.f, 5.f}, {2});
  // Only the root module's check ran: the child BatchNorm took the negative variance.
  CHECK_THROWS_WITH(io::load_state_dict(*model, bad),
                    Catch::Contains("module 'bn'") && Catch::Contains("running_var[0] is -2"));
  const Tensor mean_after = model->get_submodule("bn").buffer("running_mean");
  CHECK(mean_after.data<float>()[0] == mean_before.data<float>()[0]);

  // A QAT model: a fake quant's scale of 0 from a state_dict was taken
  // without a word (and the fake quant did not see its restored qparams).
  auto qat = std::make_shared<nn::Sequential>();
  manual_seed(2);
  qat->push_back("fc", nn::Linear(3, 2));
  qat->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*qat);
  Generator g(3);
  (*qat)(randn({4, 3}, g));
  io::StateDict q = io::state_dict(*qat);
  io::StateDict zero;
  for (auto& [name, t] : q) zero[name] = kernels::clone(t);
  REQUIRE(zero.count("fc.activation_post_process.scale"));
  zero["fc.activation_post_process.scale"] = from_vector({0.f}, {1});
  CHECK_THROWS_WITH(io::load_state_dict(*qat, zero),
                    Catch::Contains("module 'fc.activation_post_process'") && Catch::Contains("scale"));
  CHECK_NOTHROW(io::load_state_dict(*qat, q));
}

TEST_CASE("hostile npy: more dimensions than a tensor has is a FormatError naming the file", "[hostile][npy][errors]") {
  // Was "Shape: more than 6 dimensions", without the file's name.
  const std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1), }";
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header + std::string(4, '\0');
  CHECK_THROWS_AS(io::parse_npy(bytes, "x.npy"), io::FormatError);
  CHECK_THROWS_WITH(io::parse_npy(bytes, "x.npy"), Catch::StartsWith("x.npy: ") && Catch::Contains("more than 6 dimensions"));
}

TEST_CASE("hostile npy: tinyqat run refuses an input that is not finite, naming the file and the element", "[hostile][npy][cli][errors]") {
  const std::string dir = (std::filesystem::temp_directory_path() / "tinyqat_hostile_npy").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  manual_seed(1);
  io::save_model(*nn::make_mlp({4, 3}), dir + "/m.st");
  // A NaN input ran with exit 0: ReLU turned it into 0, an int8 layer into its lowest code.
  io::save_npy(dir + "/nan.npy", from_vector({0.f, 1.f, std::nanf(""), 2.f}, {1, 4}));
  const std::string cmd = std::string(TINYQAT_BINARY_DIR) + "/tinyqat run --model " + dir + "/m.st --input " + dir +
                          "/nan.npy --out " + dir + "/y.npy 2> " + dir + "/err.txt";
  const int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  std::ifstream in(dir + "/err.txt");
  const std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(err.find(dir + "/nan.npy: element 2 of the input is nan") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir + "/y.npy"));
}
