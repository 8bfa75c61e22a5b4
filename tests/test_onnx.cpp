// ONNX import and export (docs/onnx.md): PyTorch's exported MLP imports with
// PyTorch's outputs; tinyqat's float, int8 (PTQ, QAT, low-bit) and dynamic
// exports pass onnx.checker and agree with tinyqat in ONNX Runtime on a
// slice of the Fashion-MNIST test set.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <onnx/onnx_pb.h>

#include "golden_reader.h"
#include "io/model_limits.h"
#include "onnx_io/onnx_export.h"
#include "onnx_io/onnx_import.h"
#include "onnx_io/runtime_check.h"
#include "tinyqat.h"

using namespace tq;

namespace {

const std::string kFixture = std::string(TINYQAT_GOLDEN_DIR) + "/onnx_mlp.onnx";

// max |a - b| / max |b|
double relative_difference(const Tensor& a, const Tensor& b) { return golden::compare(a, b).relative_error; }

double accuracy(nn::Module& m, const io::Dataset& data) {
  NoGradGuard no_grad;
  m.eval();
  io::DataLoader loader(data, {.batch_size = 1000, .shuffle = false});
  io::Batch b;
  int64_t right = 0;
  while (loader.next(b)) {
    const Tensor pred = kernels::argmax(kernels::contiguous(kernels::to_float(m(b.images))), 1);
    for (int64_t i = 0; i < b.size(); ++i) right += pred.data<int64_t>()[i] == b.labels.data<int64_t>()[i];
  }
  return 100.0 * static_cast<double>(right) / static_cast<double>(data.size());
}

Tensor run(nn::Module& m, const Tensor& x) {
  NoGradGuard no_grad;
  m.eval();
  return kernels::to_float(m(x));
}

std::string temp_dir() {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("tinyqat_onnx_test_{}", ::getpid());
  std::filesystem::create_directories(dir);
  return dir.string();
}

onnx_io::RuntimeTools runtime_tools() {
  onnx_io::RuntimeTools t;
  t.runner = std::string(TINYQAT_SOURCE_DIR) + "/tools/onnx/run.js";
  t.work_dir = temp_dir();
  const std::string ort = std::string(TINYQAT_SOURCE_DIR) + "/tools/onnx/node_modules/onnxruntime-node";
  if (!std::filesystem::exists(ort))
    FAIL("ONNX Runtime for Node.js is not installed in tools/onnx: run scripts/setup.sh");
  return t;
}

// A one-node graph input -> op -> output, for the importer's error paths.
::onnx::ModelProto one_node_model(const std::string& op) {
  ::onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  g->add_input()->set_name("x");
  g->add_output()->set_name("y");
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name("/act/" + op);
  n->add_input("x");
  n->add_output("y");
  return m;
}

}  // namespace

TEST_CASE("onnx import: PyTorch's exported MLP gives PyTorch's outputs, with PyTorch's names", "[onnx]") {
  auto model = onnx_io::import_onnx(kFixture);
  REQUIRE(model->size() == 3);
  CHECK(model->children()[0]->name == "fc1");
  CHECK(model->children()[1]->name == "relu1");
  CHECK(model->children()[2]->name == "fc2");
  CHECK(model->get_submodule("fc1").type_name() == "Linear");
  CHECK(model->get_submodule("relu1").type_name() == "ReLU");
  golden::File g("onnx_mlp.txt");
  const Tensor y = run(*model, g.tensor("inputs"));
  const double rel = relative_difference(y, g.tensor("outputs"));
  INFO("max relative difference " << rel);
  CHECK(rel <= 1e-4);
}

TEST_CASE("onnx import: unsupported operators, branches and bad files are refused by name", "[onnx][errors]") {
  CHECK_THROWS_WITH(onnx_io::import_onnx(one_node_model("Softmax")), Catch::Contains("operator Softmax is not supported"));
  // A node that does not continue the chain.
  auto branch = one_node_model("Relu");
  branch.mutable_graph()->mutable_node(0)->set_input(0, "elsewhere");
  CHECK_THROWS_WITH(onnx_io::import_onnx(branch), Catch::Contains("only chains"));
  // Not an ONNX file.
  const std::string bad = temp_dir() + "/bad.onnx";
  std::ofstream(bad) << "not a model";
  CHECK_THROWS_WITH(onnx_io::import_onnx(bad), Catch::Contains("not an ONNX model"));
  CHECK_THROWS_WITH(onnx_io::import_onnx(temp_dir() + "/missing.onnx"), Catch::Contains("cannot open"));
}

TEST_CASE("onnx import: hostile constants, attributes and graph sizes are refused naming the file and the field",
          "[onnx][errors]") {
  ::onnx::ModelProto base;
  {
    std::ifstream f(kFixture, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    REQUIRE(base.ParseFromString(ss.str()));
  }
  auto refused = [](const ::onnx::ModelProto& m, const std::string& text) {
    INFO(text);
    CHECK_THROWS_WITH(onnx_io::import_onnx(m, "'hostile.onnx'"),
                      Catch::Contains("ONNX import of 'hostile.onnx': ") && Catch::Contains(text));
  };
  auto weight = [](::onnx::ModelProto& m) { return m.mutable_graph()->mutable_initializer(0); };  // fc1.weight
  {  // dimensions whose product is far beyond the data: refused before anything is allocated
    auto m = base;
    weight(m)->clear_dims();
    weight(m)->add_dims(int64_t{1} << 31);
    weight(m)->add_dims(int64_t{1} << 31);
    refused(m, "constant 'fc1.weight' holds 100352 bytes for 4611686018427387904 floats");
    weight(m)->add_dims(int64_t{1} << 31);  // the product overflows 64 bits
    refused(m, "constant 'fc1.weight' has more elements than any file can hold");
  }
  {
    auto m = base;
    for (int i = 0; i < 5; ++i) weight(m)->add_dims(1);
    refused(m, "constant 'fc1.weight' has 7 dimensions; a tensor has at most 6");
  }
  {  // a weight that is not a number
    auto m = base;
    std::string raw = weight(m)->raw_data();
    const float nan = std::nanf("");
    std::memcpy(raw.data() + 3 * sizeof(float), &nan, sizeof nan);
    weight(m)->set_raw_data(raw);
    refused(m, "constant 'fc1.weight' holds nan at element 3; weights must be finite");
  }
  {  // one name, two constants: which one is meant is not known
    auto m = base;
    *m.mutable_graph()->add_initializer() = m.graph().initializer(0);
    refused(m, "constant 'fc1.weight' is defined twice");
  }
  {  // an attribute given twice, or not finite
    auto m = base;
    auto* gemm = m.mutable_graph()->mutable_node(0);
    REQUIRE(gemm->op_type() == "Gemm");
    auto* alpha = gemm->add_attribute();
    alpha->set_name("alpha");
    alpha->set_type(::onnx::AttributeProto::FLOAT);
    alpha->set_f(2.f);
    refused(m, "node '/fc1/Gemm' (Gemm): attribute alpha is given twice");
    gemm->mutable_attribute()->RemoveLast();
    for (auto& a : *gemm->mutable_attribute())
      if (a.name() == "alpha") a.set_f(INFINITY);
    refused(m, "node '/fc1/Gemm' (Gemm): attribute alpha = inf is not finite");
  }
  {  // more nodes than a model may have modules
    auto m = one_node_model("Identity");
    auto* g = m.mutable_graph();
    std::string last = "y";
    for (size_t i = 0; i < io::kMaxModules; ++i) {
      auto* n = g->add_node();
      n->set_op_type("Identity");
      n->add_input(last);
      last = fmt::format("v{}", i);
      n->add_output(last);
    }
    g->mutable_output(0)->set_name(last);
    refused(m, "the graph has 200001 nodes, more than the limit of 200000 (io::kMaxModules)");
  }
}

TEST_CASE("onnx import: a long chain of unnamed and same-named nodes gets PyTorch-like unique names", "[onnx]") {
  // The importer's naming and branch search look at each node a bounded
  // number of times (they were quadratic: 100,000 nodes took minutes).
  auto m = one_node_model("Relu");
  auto* g = m.mutable_graph();
  std::string last = "y";
  for (int i = 0; i < 3000; ++i) {
    auto* n = g->add_node();
    n->set_op_type("Relu");
    if (i % 2 == 0) n->set_name("/act/Relu");  // every other node names module "act"
    n->add_input(last);
    last = fmt::format("v{}", i);
    n->add_output(last);
  }
  g->mutable_output(0)->set_name(last);
  auto model = onnx_io::import_onnx(m);
  REQUIRE(model->size() == 3001);
  CHECK(model->children()[0]->name == "act");
  CHECK(model->children()[1]->name == "act_1");  // "/act/Relu" again
  CHECK(model->children()[2]->name == "relu1");  // no name: "relu" + 1 + children named relu*
  CHECK(model->children()[3]->name == "act_2");
  CHECK(model->children()[4]->name == "relu2");
  CHECK(model->children()[3000]->name == "relu1500");
}

TEST_CASE("onnx import: Clip(0, 6) is ReLU6, other bounds are refused", "[onnx]") {
  auto model = onnx_io::import_onnx(kFixture);
  model->replace_module("relu1", std::make_shared<nn::ReLU6>());
  const ::onnx::ModelProto proto = onnx_io::to_onnx(*model);
  auto back = onnx_io::import_onnx(proto);
  CHECK(back->get_submodule("relu1").type_name() == "ReLU6");
  golden::File g("onnx_mlp.txt");
  const Tensor x = g.tensor("inputs");
  CHECK(to_vector(run(*back, x)) == to_vector(run(*model, x)));
  auto clip = one_node_model("Clip");
  auto* hi = clip.mutable_graph()->add_initializer();
  hi->set_name("hi");
  hi->set_data_type(::onnx::TensorProto::FLOAT);
  hi->add_float_data(4.f);
  auto* lo = clip.mutable_graph()->add_initializer();
  lo->set_name("lo");
  lo->set_data_type(::onnx::TensorProto::FLOAT);
  lo->add_float_data(0.f);
  clip.mutable_graph()->mutable_node(0)->add_input("lo");
  clip.mutable_graph()->mutable_node(0)->add_input("hi");
  CHECK_THROWS_WITH(onnx_io::import_onnx(clip), Catch::Contains("Clip(0, 4) is not supported"));
}

TEST_CASE("onnx export: a float model survives export and import unchanged", "[onnx]") {
  auto model = onnx_io::import_onnx(kFixture);
  const ::onnx::ModelProto proto = onnx_io::to_onnx(*model);
  std::vector<std::string> ops;
  for (const auto& n : proto.graph().node()) ops.push_back(n.op_type());
  CHECK(ops == std::vector<std::string>{"Gemm", "Relu", "Gemm", "Identity"});
  auto back = onnx_io::import_onnx(proto);
  golden::File g("onnx_mlp.txt");
  const Tensor x = g.tensor("inputs");
  CHECK(to_vector(run(*back, x)) == to_vector(run(*model, x)));
}

TEST_CASE("onnx export: a QAT model that is not converted is refused by name", "[onnx][errors]") {
  auto model = onnx_io::import_onnx(kFixture);
  model->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*model);
  CHECK_THROWS_WITH(onnx_io::to_onnx(*model), Catch::Contains("'fc1' of type QATLinear has no exporter"));
}

TEST_CASE("onnx export: int8 QDQ graph holds tinyqat's qparams and i32 bias", "[onnx]") {
  auto model = onnx_io::import_onnx(kFixture);
  quant::fuse_linear_relu(*model);
  model->qconfig = quant::make_ptq_qconfig("minmax");
  quant::prepare(*model);
  golden::File g("onnx_mlp.txt");
  run(*model, g.tensor("inputs"));
  quant::convert(*model);
  const auto& fc2 = dynamic_cast<quant::QuantizedLinear&>(model->get_submodule("fc2"));
  const ::onnx::ModelProto proto = onnx_io::to_onnx(*model);
  std::map<std::string, const ::onnx::TensorProto*> init;
  for (const auto& t : proto.graph().initializer()) init[t.name()] = &t;
  // fc2's weight: its i8 values and per-channel scales, as they are.
  REQUIRE(init.count("fc2.weight_quantized"));
  const auto& wq = *init.at("fc2.weight_quantized");
  CHECK(wq.data_type() == ::onnx::TensorProto::INT8);
  CHECK(std::memcmp(wq.raw_data().data(), fc2.weight().data<int8_t>(), wq.raw_data().size()) == 0);
  const auto& ws = *init.at("fc2.weight_scale");
  REQUIRE(ws.raw_data().size() == 10 * sizeof(float));
  CHECK(reinterpret_cast<const float*>(ws.raw_data().data())[3] == fc2.weight().qparams().scale[3]);
  // The output qparams of fc1 feed fc2: its bias sits on s_x * s_w.
  const auto& fc1 = dynamic_cast<quant::QuantizedLinear&>(model->get_submodule("fc1"));
  const auto& bs = *init.at("fc2.bias_scale");
  CHECK(reinterpret_cast<const float*>(bs.raw_data().data())[3] ==
        static_cast<float>(double{fc1.output_qparams().scale[0]} * fc2.weight().qparams().scale[3]));
  CHECK(init.at("fc2.bias_quantized")->data_type() == ::onnx::TensorProto::INT32);
  int quantize = 0, dequantize = 0, relu = 0;
  for (const auto& n : proto.graph().node()) {
    quantize += n.op_type() == "QuantizeLinear";
    dequantize += n.op_type() == "DequantizeLinear";
    relu += n.op_type() == "Relu";
  }
  CHECK(quantize == 3);    // the input, fc1's output, fc2's output
  CHECK(dequantize == 7);  // those three, two weights, two biases
  CHECK(relu == 1);        // fc1's fused ReLU
}

// The runtime check. Small: the fixture MLP, a short calibration / QAT run.
TEST_CASE("onnx runtime: float, PTQ, QAT, low-bit and dynamic exports agree with tinyqat in ONNX Runtime",
          "[onnx][runtime]") {
  const onnx_io::RuntimeTools tools = runtime_tools();
  // Loaded once for all sections (Catch runs the test case once per section).
  static const io::Dataset train = io::load_fashion_mnist(io::kFashionMnistDir, io::Split::train).slice(0, 2048);
  static const io::Dataset test = io::load_fashion_mnist(io::kFashionMnistDir, io::Split::test).slice(0, 1000);
  const std::string dir = tools.work_dir;

  auto check = [&](nn::Module& model, const std::string& name, bool int8) {
    const std::string path = dir + "/" + name + ".onnx";
    onnx_io::export_onnx(model, path);
    onnx_io::check_with_python_onnx(tools, path);
    const auto a = onnx_io::compare_with_onnxruntime(model, tools, path, test, 1000);
    INFO(name << ": agreement " << a.prediction_agreement << "%, max difference " << a.max_abs_diff << " ("
              << a.max_rel_diff << " relative, " << a.max_steps << " steps)");
    CHECK(a.samples == 1000);
    CHECK(a.prediction_agreement >= 99.9);
    if (int8) {
      CHECK(a.output_step > 0);
      CHECK(a.max_steps <= 1.0 + 1e-6);
    }
    return a;
  };
  auto calibrate = [&](nn::Module& model) {
    NoGradGuard no_grad;
    model.eval();
    io::DataLoader loader(train, {.batch_size = 256, .shuffle = false});
    io::Batch b;
    while (loader.next(b)) model(b.images);
  };

  SECTION("float") {
    auto model = onnx_io::import_onnx(kFixture);
    const auto a = check(*model, "float", false);
    CHECK(a.max_rel_diff <= 1e-4);
  }
  SECTION("PTQ int8 (x86: 7-bit activations) and 4-bit") {
    for (int bits : {8, 4}) {
      auto model = onnx_io::import_onnx(kFixture);
      quant::fuse_linear_relu(*model);
      model->qconfig = bits == 8 ? quant::make_ptq_qconfig("histogram") : quant::make_ptq_qconfig("histogram", 4, 4);
      quant::prepare(*model);
      calibrate(*model);
      quant::convert(*model);
      check(*model, fmt::format("ptq{}", bits), true);
    }
  }
  SECTION("QAT from the imported model, then int8") {
    auto model = onnx_io::import_onnx(kFixture);
    const double float_accuracy = accuracy(*model, test);
    quant::fuse_linear_relu(*model);
    model->qconfig = quant::get_default_qat_qconfig("x86");
    quant::prepare_qat(*model);
    model->train();
    nn::SGD optimizer(model->parameters(), nn::SGDOptions{.lr = 0.01, .momentum = 0.9});
    nn::CrossEntropyLoss criterion;
    io::DataLoader loader(train, {.batch_size = 64, .seed = 1});
    io::Batch b;
    while (loader.next(b)) {
      optimizer.zero_grad();
      Tensor loss = criterion((*model)(b.images), b.labels);
      loss.backward();
      optimizer.step();
    }
    quant::convert(*model);
    const auto a = check(*model, "qat", true);
    INFO("float " << float_accuracy << "%, QAT int8 " << a.tinyqat_accuracy << "%");
    CHECK(a.tinyqat_accuracy >= float_accuracy - 2.0);
  }
  SECTION("ReLU6: float, fused into int8 Linear, and a separate int8 ReLU6") {
    for (bool fuse : {false, true}) {
      auto model = onnx_io::import_onnx(kFixture);
      model->replace_module("relu1", std::make_shared<nn::ReLU6>());
      if (!fuse) check(*model, "relu6_float", false);
      if (fuse) CHECK(quant::fuse_linear_relu(*model) == 1);
      model->qconfig = quant::make_ptq_qconfig("minmax", 8, 8);
      quant::prepare(*model);
      calibrate(*model);
      quant::convert(*model);
      CHECK(model->get_submodule("fc1").type_name() == (fuse ? "QuantizedLinearReLU6" : "QuantizedLinear"));
      check(*model, fuse ? "relu6_fused" : "relu6_int8", true);
    }
  }
  SECTION("dynamic") {
    auto model = onnx_io::import_onnx(kFixture);
    quant::quantize_dynamic(*model);
    const auto a = check(*model, "dynamic", false);
    // Per-batch activation qparams are computed alike; inputs at a rounding
    // tie may land one level apart, a small fraction of an output.
    CHECK(a.max_rel_diff <= 0.01);
  }
}
