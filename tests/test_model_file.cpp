// Tests of model files (src/io/model_file.h, docs/model_files.md): float,
// QAT, static int8 and dynamic int8 models save and load back bit for bit,
// without running prepare / convert again; load_into fills a user-defined
// model; int8 files are small and hold I8 weights; a file that does not fit
// or is corrupt gives an error naming the file and the part at fault.
#include <catch2/catch.hpp>

#include "test_files.h"
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/data_loader.h"
#include "io/dataset.h"
#include "io/model_file.h"
#include "tinyqat.h"

namespace {

namespace fs = std::filesystem;
namespace q = tq::quant;
using Catch::Matchers::Contains;
using json = nlohmann::json;
using namespace tq;

const fs::path& scratch_dir() { return tq_test::scratch_dir("model_file"); }

std::string temp_path(const std::string& name) { return (scratch_dir() / name).string(); }

std::string read_bytes(const std::string& p) { return tq_test::read_bytes(p); }

// The seed example's model, defined by the user (not a library type).
struct SimpleNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 2));
  Tensor forward(const Tensor& x) override { return relu(fc2(relu(fc1(x)))); }
};

// Same structure with one layer of another width.
struct WiderNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 6));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(6, 2));
  Tensor forward(const Tensor& x) override { return relu(fc2(relu(fc1(x)))); }
};

// fc2 with another number of outputs.
struct NarrowNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 3));
  Tensor forward(const Tensor& x) override { return relu(fc2(relu(fc1(x)))); }
};

// One more layer than SimpleNN.
struct DeeperNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 2));
  nn::Slot<nn::Linear> fc3 = register_module("fc3", nn::Linear(2, 2));
  Tensor forward(const Tensor& x) override { return fc3(relu(fc2(relu(fc1(x))))); }
};

// Eval-mode output, no gradients.
Tensor run(nn::Module& m, const Tensor& x) {
  NoGradGuard no_grad;
  m.eval();
  return m(x);
}

// Identical: dtype, shape, every byte, and the qparams of a quantized tensor.
bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || !(a.shape() == b.shape()) || a.is_quantized() != b.is_quantized()) return false;
  if (a.is_quantized()) {
    const QParams &pa = a.qparams(), &pb = b.qparams();
    if (pa.scheme != pb.scheme || pa.scale != pb.scale || pa.zero_point != pb.zero_point || pa.axis != pb.axis ||
        pa.quant_min != pb.quant_min || pa.quant_max != pb.quant_max)
      return false;
  }
  const Tensor ca = kernels::contiguous(a), cb = kernels::contiguous(b);
  return std::memcmp(ca.raw_data(), cb.raw_data(), static_cast<size_t>(a.numel()) * dtype_size(a.dtype())) == 0;
}

std::vector<int64_t> predictions(const Tensor& out) {
  const Tensor p = kernels::argmax(kernels::to_float(out), 1);
  return {p.data<int64_t>(), p.data<int64_t>() + p.numel()};
}

// A fixed batch shaped like normalised Fashion-MNIST images, and labels.
Tensor batch(int64_t n, int64_t features, uint64_t seed) {
  Generator g(seed);
  return randn({n, features}, g);
}
Tensor labels(int64_t n, int64_t classes, uint64_t seed) {
  Generator g(seed);
  return randint(0, classes, {n}, g);
}

// `steps` SGD steps in training mode on fixed batches; returns the losses.
std::vector<double> train_steps(nn::Module& m, int steps, int64_t features, int64_t classes, uint64_t seed) {
  m.train();
  nn::SGD opt(m.parameters(), {.lr = 0.01, .momentum = 0.9});
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Tensor loss = cross_entropy(m(batch(32, features, seed + s)), labels(32, classes, seed + s));
    loss.backward();
    opt.step();
    losses.push_back(loss.item());
  }
  m.eval();
  return losses;
}

// A QAT model (fused, prepared, trained a few steps) of the given sizes.
std::shared_ptr<nn::Sequential> qat_mlp(const std::vector<int64_t>& sizes, q::QConfigPtr qconfig, int steps = 4) {
  manual_seed(3);
  auto m = nn::make_mlp(sizes);
  q::fuse_linear_relu(*m);
  m->qconfig = qconfig;
  q::prepare_qat(*m);
  train_steps(*m, steps, sizes.front(), sizes.back(), 100);
  return m;
}

std::string dtype_in_file(const std::string& path, const std::string& tensor) {
  return dtype_name(io::load_safetensors(path).tensors.at(tensor).dtype());
}

// The data set, or a failed test saying how to install it (CI does).
std::string fashion_dir() {
  if (!fs::exists(std::string(io::kFashionMnistDir) + "/train-images-idx3-ubyte.gz") &&
      !fs::exists(std::string(io::kFashionMnistDir) + "/train-images-idx3-ubyte"))
    FAIL("Fashion-MNIST not found at " << io::kFashionMnistDir
                                       << ": install the Debian package dataset-fashion-mnist or run scripts/setup.sh");
  return io::kFashionMnistDir;
}

}  // namespace

TEST_CASE("model file: a float MLP loads back with identical outputs", "[modelfile]") {
  manual_seed(1);
  auto model = nn::make_mlp({784, 256, 128, 10});
  const std::string path = temp_path("float.safetensors");
  io::save_model(*model, path, {{"note", "hello"}});

  auto loaded = io::load_model(path);
  REQUIRE(dynamic_cast<nn::Sequential*>(loaded.get()));
  CHECK(loaded->repr() == model->repr());
  const Tensor x = batch(64, 784, 7);
  CHECK(bitwise_equal(run(*loaded, x), run(*model, x)));

  const io::SafetensorsFile file = io::load_safetensors(path);
  CHECK(file.metadata.at("note") == "hello");
  CHECK(file.tensors.size() == 6);
  for (auto& [name, p] : model->named_parameters()) {
    INFO(name);
    REQUIRE(file.tensors.count(name));
    CHECK(bitwise_equal(file.tensors.at(name), p));
  }
  // The module tree in the metadata.
  const json meta = json::parse(file.metadata.at("tinyqat"));
  CHECK(meta["format"] == "tinyqat-model");
  CHECK(meta["version"] == io::kModelFormatVersion);
  CHECK(meta["model"]["type"] == "Sequential");
  CHECK(meta["model"]["children"][0]["name"] == "fc1");
  CHECK(meta["model"]["children"][0]["module"]["config"] == json{{"in_features", 784}, {"out_features", 256}, {"bias", true}});
}

TEST_CASE("model file: loading a model leaves the caller's random sequence where it was", "[modelfile]") {
  manual_seed(1);
  auto model = nn::make_mlp({784, 256, 128, 10});
  const std::string path = temp_path("rng.safetensors");
  io::save_model(*model, path);
  manual_seed(42);
  const Tensor expected = randn({8});
  manual_seed(42);
  auto loaded = io::load_model(path);  // builds three Linear layers, whose constructors draw weights
  CHECK(bitwise_equal(randn({8}), expected));
  // And when the file is refused part way through building.
  io::SafetensorsFile file = io::load_safetensors(path);
  file.tensors.erase("fc3.weight");
  manual_seed(42);
  CHECK_THROWS(io::build_model(file, "no-fc3-weight"));
  CHECK(bitwise_equal(randn({8}), expected));
}

TEST_CASE("model file: a QAT model restores observers and fake quants; eval and further training match",
          "[modelfile][qat]") {
  struct Case {
    const char* name;
    q::QConfigPtr qconfig;
  };
  const Case cases[] = {{"x86", q::get_default_qat_qconfig("x86")},
                        {"qnnpack", q::get_default_qat_qconfig("qnnpack")},
                        {"4-bit", q::make_qat_qconfig(4, 4, true)},
                        {"LSQ W4A8", q::make_lsq_qat_qconfig(4, 8)},
                        {"LSQ W8A8 per-tensor", q::make_lsq_qat_qconfig(8, 8, false, q::LsqInit::observer, q::LsqInit::lsq)}};
  for (const Case& c : cases) {
    INFO("qconfig " << c.name);
    auto model = qat_mlp({784, 64, 32, 10}, c.qconfig);
    const std::string path = temp_path(std::string("qat_") + c.name + ".safetensors");
    io::save_model(*model, path);
    // Evaluating never changes a model: saving again gives the same bytes.
    const Tensor x = batch(64, 784, 8);
    const Tensor expected = run(*model, x);
    CHECK(io::serialize_safetensors(io::model_to_safetensors(*model)) == read_bytes(path));

    auto loaded = io::load_model(path);  // no prepare_qat needed
    REQUIRE(dynamic_cast<q::QATLinear*>(&loaded->get_submodule("fc1")));
    CHECK(loaded->get_submodule("fc1").type_name() == "QATLinearReLU");
    CHECK(loaded->repr() == model->repr());
    CHECK(bitwise_equal(run(*loaded, x), expected));

    // Continuing training: the same steps give the same losses and outputs.
    const auto losses_a = train_steps(*model, 3, 784, 10, 500);
    const auto losses_b = train_steps(*loaded, 3, 784, 10, 500);
    CHECK(losses_a == losses_b);
    CHECK(losses_b.back() < 5);
    CHECK(bitwise_equal(run(*loaded, x), run(*model, x)));

    // And converting either gives the same int8 model.
    q::convert(*model);
    q::convert(*loaded);
    CHECK(bitwise_equal(run(*loaded, x), run(*model, x)));
  }
}

TEST_CASE("model file: QAT models saved before their first batch train on as the original", "[modelfile][qat]") {
  for (auto qconfig : {q::get_default_qat_qconfig("x86"), q::make_lsq_qat_qconfig(4, 8)}) {
    INFO(qconfig->name);
    auto model = qat_mlp({784, 32, 10}, qconfig, 0);  // prepared, never run
    const std::string path = temp_path("qat_unused.safetensors");
    io::save_model(*model, path);
    auto loaded = io::load_model(path);
    CHECK(loaded->repr() == model->repr());
    CHECK(train_steps(*loaded, 2, 784, 10, 600) == train_steps(*model, 2, 784, 10, 600));
    const Tensor x = batch(16, 784, 13);
    CHECK(bitwise_equal(run(*loaded, x), run(*model, x)));
  }
}

TEST_CASE("model file: a static int8 model loads as QuantizedLinear bit for bit", "[modelfile][int8]") {
  auto model = qat_mlp({784, 256, 128, 10}, q::get_default_qat_qconfig("x86"), 3);
  q::convert(*model);
  const std::string path = temp_path("int8.safetensors");
  io::save_model(*model, path);

  auto loaded = io::load_model(path);  // no prepare / convert
  auto* fc1 = dynamic_cast<q::QuantizedLinear*>(&loaded->get_submodule("fc1"));
  REQUIRE(fc1);
  CHECK(fc1->fused_relu);
  CHECK(dynamic_cast<q::QuantizedLinear*>(&loaded->get_submodule("fc3")));
  CHECK(loaded->repr() == model->repr());

  const Tensor x = batch(256, 784, 9);
  const Tensor a = run(*model, x), b = run(*loaded, x);
  CHECK(b.is_quantized());
  CHECK(bitwise_equal(a, b));
  CHECK(predictions(a) == predictions(b));

  // Weights are stored as I8, biases as F32, and nothing else is stored.
  const io::SafetensorsFile file = io::load_safetensors(path);
  CHECK(file.tensors.size() == 6);
  for (const char* layer : {"fc1", "fc2", "fc3"}) {
    CHECK(dtype_in_file(path, std::string(layer) + ".weight") == std::string("i8"));
    CHECK(dtype_in_file(path, std::string(layer) + ".bias") == std::string("f32"));
  }

  // At most 27% of the float file of the same MLP.
  manual_seed(1);
  const std::string float_path = temp_path("float_for_size.safetensors");
  io::save_model(*nn::make_mlp({784, 256, 128, 10}), float_path);
  const double ratio = static_cast<double>(fs::file_size(path)) / static_cast<double>(fs::file_size(float_path));
  CAPTURE(fs::file_size(path), fs::file_size(float_path));
  CHECK(ratio <= 0.27);
}

TEST_CASE("model file: PTQ — an observed model mid-calibration and its int8 model round-trip", "[modelfile][int8]") {
  for (const char* observer : {"histogram", "minmax", "moving_average"}) {
    INFO("observer " << observer);
    manual_seed(4);
    auto model = nn::make_mlp({784, 64, 10});
    q::fuse_linear_relu(*model);
    model->qconfig = q::make_ptq_qconfig(observer);
    q::prepare(*model);
    model->eval();
    {
      NoGradGuard no_grad;
      for (int i = 0; i < 3; ++i) (*model)(batch(64, 784, 30 + i));
    }
    const std::string observed_path = temp_path(std::string("observed_") + observer + ".safetensors");
    io::save_model(*model, observed_path);
    auto loaded = io::load_model(observed_path);
    CHECK(loaded->get_submodule("fc1").type_name() == "ObservedLinearReLU");
    // One more calibration batch for both, then convert both.
    {
      NoGradGuard no_grad;
      (*model)(batch(64, 784, 40));
      loaded->eval();
      (*loaded)(batch(64, 784, 40));
    }
    q::convert(*model);
    q::convert(*loaded);
    const Tensor x = batch(128, 784, 41);
    CHECK(bitwise_equal(run(*loaded, x), run(*model, x)));

    const std::string int8_path = temp_path(std::string("ptq_") + observer + ".safetensors");
    io::save_model(*model, int8_path);
    CHECK(bitwise_equal(run(*io::load_model(int8_path), x), run(*model, x)));
  }
}

TEST_CASE("model file: a dynamic int8 model loads as DynamicQuantizedLinear bit for bit", "[modelfile][int8]") {
  for (bool per_channel : {true, false}) {
    INFO("per_channel " << per_channel);
    manual_seed(5);
    auto model = nn::make_mlp({784, 256, 128, 10});
    const std::string float_path = temp_path("dyn_float.safetensors");
    io::save_model(*model, float_path);
    REQUIRE(q::quantize_dynamic(*model, {}, DType::i8, per_channel) == 3);
    const std::string path = temp_path("dynamic.safetensors");
    io::save_model(*model, path);

    auto loaded = io::load_model(path);
    auto* fc1 = dynamic_cast<q::DynamicQuantizedLinear*>(&loaded->get_submodule("fc1"));
    REQUIRE(fc1);
    CHECK(fc1->weight_scales() == dynamic_cast<q::DynamicQuantizedLinear&>(model->get_submodule("fc1")).weight_scales());
    const Tensor x = batch(256, 784, 10);
    const Tensor a = run(*model, x), b = run(*loaded, x);
    CHECK(b.dtype() == DType::f32);
    CHECK(bitwise_equal(a, b));
    CHECK(predictions(a) == predictions(b));
    CHECK(dtype_in_file(path, "fc2.weight") == std::string("i8"));
    CHECK(dtype_in_file(path, "fc2.bias") == std::string("f32"));
    CHECK(static_cast<double>(fs::file_size(path)) <= 0.27 * static_cast<double>(fs::file_size(float_path)));
  }
}

TEST_CASE("model file: load_into a user-defined model swaps in the file's quantized layers", "[modelfile][load_into]") {
  manual_seed(0);
  SimpleNN model;
  model.qconfig = q::get_default_qat_qconfig("x86");
  q::prepare_qat(model);
  train_steps(model, 2, 10, 2, 7);
  const std::string qat_path = temp_path("simple_qat.safetensors");
  io::save_model(model, qat_path);
  q::convert(model);
  const std::string path = temp_path("simple_int8.safetensors");
  io::save_model(model, path);
  const Tensor x = batch(16, 10, 11);
  const Tensor expected = run(model, x);

  // load_model cannot build a user type, and says what to do instead.
  CHECK_THROWS_AS(io::load_model(path), io::FormatError);
  CHECK_THROWS_WITH(io::load_model(path), Contains(path) && Contains("SimpleNN") && Contains("load_into"));

  SECTION("into a fresh float model") {
    manual_seed(99);  // other weights, overwritten by the file's
    SimpleNN fresh;
    io::load_into(fresh, path);
    CHECK(dynamic_cast<q::QuantizedLinear*>(&fresh.fc1.module()));
    CHECK(dynamic_cast<q::QuantizedLinear*>(&fresh.fc2.module()));
    CHECK(fresh.repr() == model.repr());
    CHECK(bitwise_equal(run(fresh, x), expected));
  }
  SECTION("into a model already quantized with other weights") {
    manual_seed(98);
    SimpleNN other;
    other.qconfig = q::get_default_qat_qconfig("x86");
    q::prepare_qat(other);
    train_steps(other, 1, 10, 2, 70);
    q::convert(other);
    REQUIRE_FALSE(bitwise_equal(run(other, x), expected));
    io::load_into(other, path);
    CHECK(bitwise_equal(run(other, x), expected));
  }
  SECTION("a QAT file into a float model converts to the same int8 model") {
    SimpleNN fresh;
    io::load_into(fresh, qat_path);
    REQUIRE(dynamic_cast<q::QATLinear*>(&fresh.fc1.module()));
    // The file was saved before convert: converting the loaded model gives the same int8 model.
    q::convert(fresh);
    CHECK(bitwise_equal(run(fresh, x), expected));
  }
  SECTION("a QAT file with frozen observers keeps them frozen") {
    manual_seed(0);
    SimpleNN frozen;
    frozen.qconfig = q::get_default_qat_qconfig("x86");
    q::prepare_qat(frozen);
    train_steps(frozen, 1, 10, 2, 7);
    for (auto& [name, m] : frozen.named_modules())
      if (auto* fq = dynamic_cast<q::FakeQuantize*>(m)) fq->disable_observer();
    const std::string frozen_path = temp_path("simple_frozen.safetensors");
    io::save_model(frozen, frozen_path);
    SimpleNN fresh;
    fresh.qconfig = q::get_default_qat_qconfig("x86");
    q::prepare_qat(fresh);  // observers enabled, as prepare_qat leaves them
    io::load_into(fresh, frozen_path);
    for (auto& [name, m] : fresh.named_modules())
      if (auto* fq = dynamic_cast<q::FakeQuantize*>(m)) CHECK_FALSE(fq->observer_enabled);
    CHECK(fresh.repr() == frozen.repr());
  }
}

TEST_CASE("model file: load_into a model of another structure names the mismatch and changes nothing",
          "[modelfile][load_into]") {
  manual_seed(0);
  SimpleNN source;
  const std::string float_path = temp_path("simple_float.safetensors");
  io::save_model(source, float_path);
  source.qconfig = q::get_default_qat_qconfig("x86");
  q::prepare_qat(source);
  train_steps(source, 1, 10, 2, 7);
  q::convert(source);
  const std::string int8_path = temp_path("simple_int8_for_mismatch.safetensors");
  io::save_model(source, int8_path);
  const Tensor x = batch(8, 10, 12);

  auto expect_unchanged = [&](nn::Module& m, const Tensor& before, const std::string& repr_before) {
    CHECK(m.repr() == repr_before);
    CHECK(bitwise_equal(run(m, x), before));
  };

  SECTION("a layer of another width (float file)") {
    WiderNN wider;
    const Tensor before = run(wider, x);
    const std::string repr = wider.repr();
    CHECK_THROWS_WITH(io::load_into(wider, float_path), Contains(float_path) && Contains("'fc1.weight'") &&
                                                            Contains("(5, 10) in the file") && Contains("(6, 10) in the model"));
    expect_unchanged(wider, before, repr);
  }
  SECTION("a layer of another width (int8 file)") {
    WiderNN wider;
    const Tensor before = run(wider, x);
    const std::string repr = wider.repr();
    CHECK_THROWS_WITH(io::load_into(wider, int8_path), Contains("module 'fc1'") && Contains("out_features=5 in the file") &&
                                                           Contains("out_features=6 in the model"));
    expect_unchanged(wider, before, repr);
  }
  SECTION("the first layer is swapped in, then a later float layer does not fit") {
    manual_seed(0);
    SimpleNN partly;  // fc1 int8, fc2 kept float
    partly.qconfig = q::get_default_qat_qconfig("x86");
    partly.fc2->qconfig = q::QConfigPtr{};
    q::prepare_qat(partly);
    train_steps(partly, 1, 10, 2, 7);
    q::convert(partly);
    REQUIRE(dynamic_cast<q::QuantizedLinear*>(&partly.fc1.module()));
    const std::string partly_path = temp_path("simple_partly_int8.safetensors");
    io::save_model(partly, partly_path);

    NarrowNN narrow;
    const Tensor before = run(narrow, x);
    const std::string repr = narrow.repr();
    CHECK_THROWS_WITH(io::load_into(narrow, partly_path), Contains("'fc2.weight'"));
    CHECK(dynamic_cast<nn::Linear*>(&narrow.fc1.module()));  // fc1 is back
    expect_unchanged(narrow, before, repr);
  }
  SECTION("a module the file does not have") {
    DeeperNN deeper;
    const Tensor before = run(deeper, x);
    const std::string repr = deeper.repr();
    CHECK_THROWS_WITH(io::load_into(deeper, int8_path), Contains("module 'fc3' that the file does not have"));
    expect_unchanged(deeper, before, repr);
  }
  SECTION("a module the model does not have") {
    auto mlp = nn::make_mlp({10, 5});  // only fc1
    const Tensor before = run(*mlp, x);
    const std::string repr = mlp->repr();
    CHECK_THROWS_WITH(io::load_into(*mlp, float_path), Contains("module 'fc2' that the model does not have"));
    expect_unchanged(*mlp, before, repr);
  }
}

TEST_CASE("model file: defects of a model file are FormatErrors naming the file and the part", "[modelfile][corrupt]") {
  manual_seed(2);
  auto model = qat_mlp({20, 8, 4}, q::make_qat_qconfig(5, 8, true), 2);  // 5 bits: stored as I8
  q::convert(*model);
  const std::string path = temp_path("to_corrupt.safetensors");
  io::save_model(*model, path);
  const io::SafetensorsFile good = io::load_safetensors(path);
  const json meta = json::parse(good.metadata.at("tinyqat"));
  const std::string name = "edited.safetensors";
  auto with_meta = [&](const json& m) {
    io::SafetensorsFile f = good;
    f.metadata["tinyqat"] = m.dump();
    return f;
  };
  auto expect_error = [&](const io::SafetensorsFile& f, const std::string& problem) {
    CAPTURE(problem);
    CHECK_THROWS_AS(io::build_model(f, name), io::FormatError);
    CHECK_THROWS_WITH(io::build_model(f, name), Catch::Matchers::StartsWith(name + ": ") && Contains(problem));
  };

  REQUIRE_NOTHROW(io::build_model(good, name));
  {
    io::SafetensorsFile f = good;
    f.metadata.clear();
    expect_error(f, "not a tinyqat model file");
  }
  {
    io::SafetensorsFile f = good;
    f.metadata["tinyqat"] = "{not json";
    expect_error(f, "not valid JSON");
  }
  {
    json m = meta;
    m["version"] = 99;
    expect_error(with_meta(m), "version 99 is not supported");
  }
  {
    json m = meta;
    m["model"]["children"][0]["module"]["type"] = "Conv3d";
    expect_error(with_meta(m), "module 'fc1' has type Conv3d");
  }
  {
    json m = meta;
    m["model"]["children"][0]["module"]["config"].erase("in_features");
    expect_error(with_meta(m), "module 'fc1'");
  }
  {
    json m = meta;
    m["model"]["children"][0]["module"]["config"]["weight_qparams"]["scale"][0] = -1.0;
    expect_error(with_meta(m), "scale 0 must be positive");
  }
  {
    json m = meta;
    m["model"]["children"][0]["module"]["config"]["output_qparams"].erase("scale");
    expect_error(with_meta(m), "scale");
  }
  {
    json m = meta;
    m["model"]["children"][0]["module"]["config"]["output_qparams"]["scale"][0] = 0.0;
    expect_error(with_meta(m), "must be positive");
  }
  {
    json m = meta;  // JSON has no NaN: a writer that had one leaves null
    m["model"]["children"][0]["module"]["config"]["weight_qparams"]["scale"][1] = nullptr;
    expect_error(with_meta(m), "scale");
  }
  {
    json m = meta;
    m["model"]["children"][0]["module"]["config"]["output_qparams"]["zero_point"][0] = 300;
    expect_error(with_meta(m), "zero point 300");
  }
  {
    json m = meta;  // a float where an integer belongs: refused, not cast (a cast of 1e30 is undefined behaviour)
    m["model"]["children"][0]["module"]["config"]["in_features"] = 1e30;
    expect_error(with_meta(m), "'in_features' must be an integer");
  }
  {
    json m = meta;
    m["model"]["children"][0]["module"]["config"]["output_qparams"]["zero_point"][0] = 1e10;
    expect_error(with_meta(m), "'zero_point[0]' must be an integer in [-2147483648, 2147483647]");
  }
  {
    io::SafetensorsFile f = good;
    f.tensors["fc1.weight"] = zeros({8, 19}, DType::i8);  // fc1 is Linear(20, 8)
    expect_error(f, "fc1");
  }
  {
    io::SafetensorsFile f = good;
    f.tensors.erase("fc2.bias");
    expect_error(f, "no tensor 'bias'");
  }
  {
    // A 5-bit weight file holding an 8-bit value.
    io::SafetensorsFile f = good;
    Tensor w = kernels::clone(f.tensors.at("fc1.weight"));
    w.data<int8_t>()[0] = 100;
    f.tensors["fc1.weight"] = w;
    expect_error(f, "weight value 100 lies outside its range [-16, 15]");
  }
  {
    io::SafetensorsFile f = good;
    f.tensors["fc1.weight"] = kernels::to_dtype(f.tensors.at("fc1.weight"), DType::f32);
    expect_error(f, "weight must be I8");
  }

  // A float file missing a parameter: a defect of the file, not of the caller's arguments.
  manual_seed(2);
  auto fl = nn::make_mlp({20, 8, 4});
  io::SafetensorsFile ff = io::model_to_safetensors(*fl);
  ff.tensors.erase("fc2.weight");
  expect_error(ff, "fc2");
  ff = io::model_to_safetensors(*fl);
  ff.tensors["fc1.bias"] = zeros({8}, DType::i32);
  expect_error(ff, "'fc1.bias' is i32 (8,) in the file but f32 (8,) in the model");

  // A QAT file whose fake-quant buffer has the wrong shape.
  auto qat = qat_mlp({20, 8, 4}, q::get_default_qat_qconfig("x86"), 1);
  io::SafetensorsFile qf = io::model_to_safetensors(*qat);
  qf.tensors["fc1.activation_post_process.scale"] = zeros({2, 2});
  expect_error(qf, "fc1.activation_post_process");
}

TEST_CASE("model file: a failed save leaves the existing file as it was", "[modelfile][atomic]") {
  manual_seed(0);
  auto model = nn::make_mlp({10, 4});
  const std::string dir = temp_path("save_fail");
  fs::create_directories(dir + "/a_directory");
  CHECK_THROWS_WITH(io::save_model(*model, dir + "/a_directory"), Contains(dir + "/a_directory"));
  CHECK(fs::is_directory(dir + "/a_directory"));
  CHECK_THROWS_WITH(io::save_model(*model, dir + "/missing/m.safetensors"), Contains(dir + "/missing/m.safetensors"));

  const std::string path = dir + "/m.safetensors";
  io::save_model(*model, path);
  const std::string before = read_bytes(path);
  const std::string blocker = path + ".tmp-" + std::to_string(getpid());
  fs::create_directories(blocker);  // the temporary file cannot be created
  manual_seed(1);
  CHECK_THROWS(io::save_model(*nn::make_mlp({10, 4}), path));
  CHECK(read_bytes(path) == before);
  fs::remove(blocker);
  CHECK(io::load_model(path)->repr() == model->repr());
}

TEST_CASE("model file: one epoch on real Fashion-MNIST then save and load", "[modelfile][data]") {
  const std::string dir = fashion_dir();
  const io::Dataset train = io::load_fashion_mnist(dir, io::Split::train);
  const io::Dataset test = io::load_fashion_mnist(dir, io::Split::test);
  manual_seed(0);
  auto model = nn::make_mlp({784, 256, 128, 10});
  io::DataLoader loader(train, {.batch_size = 64, .seed = 0});
  nn::SGD opt(model->parameters(), {.lr = 0.01, .momentum = 0.9});
  const auto t0 = std::chrono::steady_clock::now();
  model->train();
  io::Batch b;
  while (loader.next(b)) {
    opt.zero_grad();
    Tensor loss = cross_entropy((*model)(b.images), b.labels);
    loss.backward();
    opt.step();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  io::DataLoader test_loader(test, {.batch_size = test.size(), .shuffle = false});
  REQUIRE(test_loader.next(b));
  auto accuracy = [&](nn::Module& m) {
    const auto p = predictions(run(m, b.images));
    int64_t correct = 0;
    for (size_t i = 0; i < p.size(); ++i) correct += p[i] == b.labels.data<int64_t>()[i];
    return 100.0 * static_cast<double>(correct) / static_cast<double>(p.size());
  };
  const double acc = accuracy(*model);
  std::printf("[modelfile] 1 epoch of MLP 784-256-128-10 on Fashion-MNIST: %.2f%% test accuracy, %.1f s\n", acc, seconds);
  CHECK(acc > 80.0);

  const std::string path = temp_path("fashion.safetensors");
  io::save_model(*model, path);
  auto loaded = io::load_model(path);
  CHECK(accuracy(*loaded) == acc);
  q::quantize_dynamic(*loaded);
  const std::string dyn_path = temp_path("fashion_dynamic.safetensors");
  io::save_model(*loaded, dyn_path);
  auto dyn = io::load_model(dyn_path);
  const double dyn_acc = accuracy(*dyn);
  CHECK(dyn_acc > acc - 1.0);
  CHECK(static_cast<double>(fs::file_size(dyn_path)) <= 0.27 * static_cast<double>(fs::file_size(path)));
}
