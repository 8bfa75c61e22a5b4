// ONNX for convolutional networks (docs/onnx.md): PyTorch's exported CNN
// imports with PyTorch's names and outputs; models::cnn and a small
// models::mobilenet_v2, float and int8 (QuantizedConv2d incl. depthwise,
// QuantizedAdd, u8 pooling, as QDQ), pass onnx.checker and agree with
// tinyqat in ONNX Runtime on a slice of the Fashion-MNIST test set.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include <onnx/onnx_pb.h>

#include "golden_reader.h"
#include "models/cnn.h"
#include "models/mobilenet_v2.h"
#include "onnx_io/onnx_export.h"
#include "onnx_io/onnx_import.h"
#include "onnx_io/runtime_check.h"
#include "quant/conv_bn_fold.h"
#include "quant/quantized_conv.h"
#include "quant/quantized_pool.h"
#include "test_files.h"
#include "tinyqat.h"

using namespace tq;

namespace {

const std::string kFixture = std::string(TINYQAT_GOLDEN_DIR) + "/onnx_cnn.onnx";

Tensor run(nn::Module& m, const Tensor& x) {
  NoGradGuard no_grad;
  m.eval();
  return kernels::to_float(m(x));
}

// max |a - b| / max |b|
double relative_difference(const Tensor& a, const Tensor& b) { return golden::compare(a, b).relative_error; }

std::vector<std::string> op_types(const ::onnx::ModelProto& m) {
  std::vector<std::string> ops;
  for (const auto& n : m.graph().node()) ops.push_back(n.op_type());
  return ops;
}

// ---- int8 by hand: calibrate on float activations, fold BN, build the int8 layers ----

// u8 qparams covering t's range (and 0).
std::shared_ptr<const QParams> activation_qparams(const Tensor& t) {
  const auto v = to_vector(kernels::to_float(t));
  float lo = 0, hi = 0;
  for (float x : v) lo = std::min(lo, x), hi = std::max(hi, x);
  auto q = std::make_shared<QParams>();
  q->scale = {std::max(hi - lo, 1e-6f) / 255.f};
  q->zero_point = {static_cast<int32_t>(std::clamp(std::nearbyint(-lo / q->scale[0]), 0.f, 255.f))};
  return q;
}

QParams weight_qparams(const Tensor& w) {
  const std::vector<float> v = to_vector(w);
  const int64_t out = w.size(0), per = w.numel() / out;
  QParams q;
  q.scheme = QScheme::per_channel_symmetric;
  q.quant_min = -127;
  q.quant_max = 127;
  q.axis = 0;
  for (int64_t o = 0; o < out; ++o) {
    float m = 0;
    for (int64_t i = 0; i < per; ++i) m = std::max(m, std::abs(v[static_cast<size_t>(o * per + i)]));
    q.scale.push_back(std::max(m, 1e-6f) / 127.f);
    q.zero_point.push_back(0);
  }
  return q;
}

quant::FusedActivation activation_at(const nn::Module& m, size_t i) {
  const auto& c = m.children();
  if (i >= c.size()) return quant::FusedActivation::none;
  const std::string t = c[i]->module->type_name();
  return t == "ReLU" ? quant::FusedActivation::relu : t == "ReLU6" ? quant::FusedActivation::relu6 : quant::FusedActivation::none;
}

// Converts the chain `seq` in place. x: the float calibration input; x_q: the
// qparams of what flows in (nullptr: float). Returns the float output; x_q
// becomes the qparams of what flows out.
Tensor convert_by_hand(nn::Module& seq, const std::string& path, Tensor x, std::shared_ptr<const QParams>& x_q);

Tensor convert_child(nn::Module& seq, const std::string& path, size_t& i, Tensor x, std::shared_ptr<const QParams>& x_q) {
  const auto& slot = seq.children()[i];
  nn::Module& m = *slot->module;
  const std::string name = path.empty() ? slot->name : path + "." + slot->name;
  const std::string type = m.type_name();
  auto identity = [&](size_t k) { seq.replace_module(seq.children()[k]->name, std::make_shared<quant::Identity>()); };
  if (type == "Conv2d" || type == "Linear") {
    Tensor y = m(x);
    size_t last = i;
    Tensor w = type == "Conv2d" ? dynamic_cast<nn::Conv2d&>(m).weight : dynamic_cast<nn::Linear&>(m).weight;
    Tensor b = type == "Conv2d" ? dynamic_cast<nn::Conv2d&>(m).bias : dynamic_cast<nn::Linear&>(m).bias;
    if (i + 1 < seq.children().size() && seq.children()[i + 1]->module->type_name() == "BatchNorm2d") {
      auto& bn = dynamic_cast<nn::BatchNorm2d&>(*seq.children()[i + 1]->module);
      y = bn(y);
      const auto f = quant::fold_batch_norm(w, b, bn.weight, bn.bias, bn.running_mean(), bn.running_var(), bn.eps);
      w = f.weight, b = f.bias;
      last = i + 1;
    }
    const quant::FusedActivation act = activation_at(seq, last + 1);
    if (act != quant::FusedActivation::none) y = (*seq.children()[++last]->module)(y);
    if (!x_q) x_q = activation_qparams(x);
    const auto out_q = activation_qparams(y);
    std::shared_ptr<nn::Module> q;
    if (type == "Conv2d") {
      const auto& c = dynamic_cast<nn::Conv2d&>(m);
      q = std::make_shared<quant::QuantizedConv2d>(
          w.detach(), b.defined() ? b.detach() : b, weight_qparams(w), *out_q, x_q, act,
          quant::Conv2dGeometry{c.stride.h, c.stride.w, c.padding.h, c.padding.w, c.dilation.h, c.dilation.w, c.groups},
          name);
    } else {
      q = std::make_shared<quant::QuantizedLinear>(w.detach(), b.detach(), weight_qparams(w), *out_q, x_q, act, name);
    }
    seq.replace_module(slot->name, q);
    for (size_t k = i + 1; k <= last; ++k) identity(k);
    i = last;
    x_q = out_q;
    return y;
  }
  if (type == "MaxPool2d" || type == "AvgPool2d" || type == "AdaptiveAvgPool2d") {
    const Tensor y = m(x);
    std::shared_ptr<nn::Module> q;
    if (type == "MaxPool2d") {
      const auto& p = dynamic_cast<nn::MaxPool2d&>(m);
      q = std::make_shared<quant::QuantizedMaxPool2d>(quant::Pool2dOptions{
          p.kernel_size.h, p.kernel_size.w, p.stride.h ? p.stride.h : p.kernel_size.h,
          p.stride.w ? p.stride.w : p.kernel_size.w, p.padding.h, p.padding.w});
    } else if (type == "AvgPool2d") {
      const auto& p = dynamic_cast<nn::AvgPool2d&>(m);
      q = std::make_shared<quant::QuantizedAvgPool2d>(quant::Pool2dOptions{
          p.kernel_size.h, p.kernel_size.w, p.stride.h ? p.stride.h : p.kernel_size.h,
          p.stride.w ? p.stride.w : p.kernel_size.w, p.padding.h, p.padding.w});
    } else {
      const auto& p = dynamic_cast<nn::AdaptiveAvgPool2d&>(m);
      q = std::make_shared<quant::QuantizedAdaptiveAvgPool2d>(p.output_size.h, p.output_size.w);
    }
    seq.replace_module(slot->name, q);
    return y;
  }
  if (type == "Conv2dNormActivation") return convert_by_hand(m, name, x, x_q);
  if (type == "InvertedResidual") {
    auto& block = dynamic_cast<models::InvertedResidual&>(m);
    const std::shared_ptr<const QParams> in_q = x_q;
    const Tensor y = convert_by_hand(block.conv.module(), name + ".conv", x, x_q);
    if (!block.use_res_connect) return y;
    const Tensor sum = kernels::add(x, y);
    const auto out_q = activation_qparams(sum);
    block.replace_module("skip_add",
                         std::make_shared<quant::QuantizedAdd>(*out_q, quant::FusedActivation::none, name + ".skip_add"));
    x_q = out_q;
    return sum;
  }
  return m(x);  // Flatten, Dropout, Identity: the same on u8 and float
}

Tensor convert_by_hand(nn::Module& seq, const std::string& path, Tensor x, std::shared_ptr<const QParams>& x_q) {
  for (size_t i = 0; i < seq.children().size(); ++i) x = convert_child(seq, path, i, x, x_q);
  return x;
}

// The whole model; MobileNetV2 pools in float between features and classifier.
void quantize_by_hand(nn::Module& model, const Tensor& calibration) {
  NoGradGuard no_grad;
  model.eval();
  std::shared_ptr<const QParams> x_q;
  if (auto* mb = dynamic_cast<models::MobileNetV2*>(&model)) {
    Tensor h = convert_by_hand(mb->features.module(), "features", calibration, x_q);
    h = tq::flatten(tq::adaptive_avg_pool2d(h, 1, 1), 1);
    x_q = nullptr;
    convert_by_hand(mb->classifier.module(), "classifier", h, x_q);
  } else {
    convert_by_hand(model, "", calibration, x_q);
  }
}

// Some training-mode passes so that BatchNorm's running statistics are not 0 / 1.
void settle_batch_norm(nn::Module& model, const Tensor& x) {
  NoGradGuard no_grad;
  model.train();
  for (int i = 0; i < 3; ++i) model(x);
  model.eval();
}

onnx_io::RuntimeTools runtime_tools() {
  onnx_io::RuntimeTools t;
  t.runner = std::string(TINYQAT_SOURCE_DIR) + "/tools/onnx/run.js";
  t.work_dir = tq_test::scratch_dir("onnx_cnn").string();
  if (!std::filesystem::exists(std::string(TINYQAT_SOURCE_DIR) + "/tools/onnx/node_modules/onnxruntime-node"))
    FAIL("ONNX Runtime for Node.js is not installed in tools/onnx: run scripts/setup.sh");
  return t;
}

Tensor images(const io::Dataset& d) {
  io::DataLoader loader(d, {.batch_size = d.size(), .shuffle = false, .as_images = true});
  io::Batch b;
  loader.next(b);
  return b.images;
}

}  // namespace

TEST_CASE("onnx import: PyTorch's exported CNN gives PyTorch's outputs, with PyTorch's names", "[onnx][cnn]") {
  auto model = onnx_io::import_onnx(kFixture);
  std::vector<std::string> names, types;
  for (const auto& s : model->children()) names.push_back(s->name), types.push_back(s->module->type_name());
  CHECK(names == std::vector<std::string>{"conv1", "relu1", "pool1", "conv2", "relu2", "conv3", "relu3", "bn3", "pool2",
                                          "conv4", "relu4", "pool3", "flatten", "fc"});
  CHECK(types == std::vector<std::string>{"Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU6", "Conv2d", "ReLU",
                                          "BatchNorm2d", "AvgPool2d", "Conv2d", "ReLU", "AdaptiveAvgPool2d", "Flatten",
                                          "Linear"});
  const auto& conv2 = dynamic_cast<nn::Conv2d&>(model->get_submodule("conv2"));
  CHECK(conv2.groups == 8);
  const auto& conv3 = dynamic_cast<nn::Conv2d&>(model->get_submodule("conv3"));
  CHECK((conv3.stride.h == 2 && conv3.padding.h == 2 && conv3.dilation.h == 2));
  golden::File g("onnx_cnn.txt");
  const double rel = relative_difference(run(*model, g.tensor("inputs")), g.tensor("outputs"));
  INFO("max relative difference " << rel);
  CHECK(rel <= 1e-4);
  // Exported and imported again: the same layers, the same outputs, bit for bit.
  const ::onnx::ModelProto proto = onnx_io::to_onnx(*model);
  auto back = onnx_io::import_onnx(proto);
  CHECK(back->repr() == model->repr());
  CHECK(to_vector(run(*back, g.tensor("inputs"))) == to_vector(run(*model, g.tensor("inputs"))));
}

TEST_CASE("onnx import: CNN operators it cannot represent are refused by name", "[onnx][cnn][errors]") {
  auto proto = onnx_io::to_onnx(*onnx_io::import_onnx(kFixture));
  auto* graph = proto.mutable_graph();
  auto node = [&](const std::string& op) -> ::onnx::NodeProto& {
    for (auto& n : *graph->mutable_node())
      if (n.op_type() == op) return n;
    FAIL("no " << op);
    throw;
  };
  SECTION("asymmetric pads") {
    auto& conv = node("Conv");
    for (auto& a : *conv.mutable_attribute())
      if (a.name() == "pads") a.set_ints(2, 0);
    CHECK_THROWS_WITH(onnx_io::import_onnx(proto), Catch::Contains("asymmetric pads"));
  }
  SECTION("ceil_mode") {
    auto* a = node("MaxPool").add_attribute();
    a->set_name("ceil_mode");
    a->set_type(::onnx::AttributeProto::INT);
    a->set_i(1);
    CHECK_THROWS_WITH(onnx_io::import_onnx(proto), Catch::Contains("ceil_mode=1 is not supported"));
  }
  // Add(relu1's output, relu1's input): a residual sum around one Relu, placed `after` nodes into the graph.
  auto add_skip = [&](int after) {
    auto& relu = node("Relu");
    auto* add = graph->add_node();
    add->set_op_type("Add");
    add->set_name("/skip/Add");
    add->add_input(relu.output(0));
    add->add_input(relu.input(0));
    add->add_output("sum");
    for (int i = graph->node_size() - 1; i > after; --i) graph->mutable_node()->SwapElements(i, i - 1);
  };
  SECTION("a residual Add whose branch is not an inverted residual block") {
    int relu = 0;
    while (graph->node(relu).op_type() != "Relu") ++relu;
    add_skip(relu + 1);  // right after relu1: the rest of the graph follows the sum
    auto& next = graph->mutable_node()->at(relu + 2);
    for (auto& in : *next.mutable_input())
      if (in == graph->node(relu).output(0)) in = "sum";
    CHECK_THROWS_WITH(onnx_io::import_onnx(proto), Catch::Contains("'/skip/Add' (Add)") &&
                                                       Catch::Contains("inverted residual") &&
                                                       Catch::Contains("0 convolutions"));
  }
  SECTION("a residual Add that does not close the branch it starts") {
    graph->mutable_output(0)->set_name("sum");
    add_skip(graph->node_size());  // last, after relu4 and the rest: the branch ends in fc's output
    CHECK_THROWS_WITH(onnx_io::import_onnx(proto),
                      Catch::Contains("'/skip/Add' (Add)") && Catch::Contains("is not the end of the branch"));
  }
}

TEST_CASE("onnx import: residual sums come back as InvertedResidual blocks; an exported MobileNetV2 w0.25 loads back",
          "[onnx][cnn]") {
  manual_seed(4);
  auto model = models::mobilenet_v2_small_input(10, 0.25);
  const Tensor x = randn({4, 1, 28, 28});
  settle_batch_norm(*model, x);
  // Blocks with a residual sum: "features.1" -> the imported child "features_1".
  std::vector<std::string> residual;
  for (const auto& [path, m] : model->named_modules())
    if (auto* b = dynamic_cast<models::InvertedResidual*>(m); b && b->use_res_connect) {
      std::string name = path;
      std::replace(name.begin(), name.end(), '.', '_');
      residual.push_back(name);
    }
  REQUIRE(residual.size() >= 2);  // with and without the 1x1 expansion (features_1 has none)
  const ::onnx::ModelProto proto = onnx_io::to_onnx(*model);
  auto back = onnx_io::import_onnx(proto);
  std::vector<std::string> blocks;
  for (const auto& s : back->children()) {
    if (s->module->type_name() != "InvertedResidual") continue;
    blocks.push_back(s->name);
    const auto& b = dynamic_cast<models::InvertedResidual&>(*s->module);
    CHECK(b.use_res_connect);
    CHECK(b.skip_add.module().type_name() == "Add");
  }
  CHECK(blocks == residual);
  const Tensor want = run(*model, x);
  const double rel = relative_difference(run(*back, x), want);
  INFO("max relative difference " << rel);
  CHECK(rel <= 1e-4);
  // The imported model is an ordinary model file: saved and loaded, the same outputs.
  const std::string file = (tq_test::scratch_dir("onnx_cnn") / "mobilenet_imported.safetensors").string();
  io::save_model(*back, file);
  auto loaded = io::load_model(file);
  CHECK(to_vector(run(*loaded, x)) == to_vector(run(*back, x)));
  // Exported again, the same graph operators.
  CHECK(op_types(onnx_io::to_onnx(*back)) == op_types(proto));
}

TEST_CASE("onnx export: int8 CNN layers as QDQ with per-channel weights, depthwise groups and the residual add",
          "[onnx][cnn]") {
  manual_seed(3);
  auto model = models::mobilenet_v2_small_input(10, 0.25);
  const Tensor x = randn({4, 1, 28, 28});
  settle_batch_norm(*model, x);
  quantize_by_hand(*model, x);
  const ::onnx::ModelProto proto = onnx_io::to_onnx(*model);
  std::map<std::string, int> ops;
  for (const auto& op : op_types(proto)) ++ops[op];
  int convs = 0, adds = 0;
  for (const auto& [name, m] : model->named_modules()) {
    convs += m->type_name().rfind("QuantizedConv2d", 0) == 0;
    adds += m->type_name() == "QuantizedAdd";
  }
  REQUIRE(adds > 0);
  CHECK(ops["Conv"] == convs);
  CHECK(ops["Add"] == adds);
  CHECK(ops["GlobalAveragePool"] == 1);
  CHECK(ops.count("BatchNormalization") == 0);  // folded into the int8 convolutions
  // features.1.conv.0.0: the first block's depthwise convolution; its weight i8 and per-channel scales as they are.
  const auto& dw = dynamic_cast<quant::QuantizedConv2d&>(model->get_submodule("features.1.conv.0.0"));
  REQUIRE(dw.depthwise());
  std::map<std::string, const ::onnx::TensorProto*> init;
  for (const auto& t : proto.graph().initializer()) init[t.name()] = &t;
  REQUIRE(init.count("features.1.conv.0.0.weight_quantized"));
  const auto& wq = *init.at("features.1.conv.0.0.weight_quantized");
  CHECK(wq.data_type() == ::onnx::TensorProto::INT8);
  CHECK(std::memcmp(wq.raw_data().data(), dw.weight().data<int8_t>(), wq.raw_data().size()) == 0);
  CHECK(init.at("features.1.conv.0.0.weight_scale")->dims(0) == dw.out_channels);
  for (const auto& n : proto.graph().node())
    if (n.name() == "/features.1.conv.0.0/Conv")
      for (const auto& a : n.attribute())
        if (a.name() == "group") CHECK(a.i() == dw.out_channels);
  // The residual Add sits between two DequantizeLinear inputs and a QuantizeLinear output.
  std::map<std::string, std::string> producer;
  for (const auto& n : proto.graph().node())
    for (const auto& o : n.output()) producer[o] = n.op_type();
  for (const auto& n : proto.graph().node()) {
    if (n.op_type() != "Add") continue;
    CHECK(producer[n.input(0)] == "DequantizeLinear");
    CHECK(producer[n.input(1)] == "DequantizeLinear");
  }
}

// The runtime check: a few hundred test images through tinyqat and ONNX Runtime.
TEST_CASE("onnx runtime: models::cnn and a small MobileNetV2, float and int8, agree with tinyqat in ONNX Runtime",
          "[onnx][cnn][runtime]") {
  const onnx_io::RuntimeTools tools = runtime_tools();
  static const io::Dataset test = io::load_fashion_mnist(io::kFashionMnistDir, io::Split::test).slice(0, 300);
  static const Tensor calibration = images(test.slice(0, 64));
  auto check = [&](nn::Module& model, const std::string& name, bool int8) {
    const std::string path = tools.work_dir + "/" + name + ".onnx";
    onnx_io::export_onnx(model, path);
    onnx_io::check_with_python_onnx(tools, path);
    const auto a = onnx_io::compare_with_onnxruntime(model, tools, path, test, 100);
    INFO(name << ": agreement " << a.prediction_agreement << "%, max difference " << a.max_abs_diff << " ("
              << a.max_rel_diff << " relative, " << a.max_steps << " steps), " << a.differing_outputs
              << "% of outputs differ");
    CHECK(a.samples == 300);
    CHECK(a.prediction_agreement >= 99.0);
    if (int8) {
      // One rounding tie resolved the other way moves an output by one step
      // (measured in float: the difference of two dequantized values).
      CHECK(a.output_step > 0);
      CHECK(a.max_steps <= 1.0 + 1e-4);
    }
    return a;
  };
  SECTION("models::cnn") {
    manual_seed(1);
    auto model = models::cnn();
    settle_batch_norm(*model, calibration);
    const auto f = check(*model, "cnn_float", false);
    CHECK(f.max_rel_diff <= 1e-4);
    quantize_by_hand(*model, calibration);
    CHECK(model->get_submodule("conv1").type_name() == "QuantizedConv2dReLU");
    check(*model, "cnn_int8", true);
  }
  SECTION("mobilenet_v2_small_input(width 0.25)") {
    manual_seed(2);
    auto model = models::mobilenet_v2_small_input(10, 0.25);
    settle_batch_norm(*model, calibration);
    const auto f = check(*model, "mobilenet_float", false);
    CHECK(f.max_rel_diff <= 1e-4);
    quantize_by_hand(*model, calibration);
    check(*model, "mobilenet_int8", true);
  }
}

TEST_CASE("onnx export: an input shape the first convolution cannot take is refused naming both", "[onnx][cnn][errors]") {
  manual_seed(0);
  auto model = models::cnn();
  model->eval();
  onnx_io::ExportOptions options;
  options.input_shape = {3, 28, 28};
  CHECK_THROWS_WITH(onnx_io::to_onnx(*model, options),
                    Catch::Contains("input shape (3, 28, 28)") && Catch::Contains("takes (1, H, W)"));
  options.input_shape = {784};
  CHECK_THROWS_WITH(onnx_io::to_onnx(*model, options), Catch::Contains("takes (1, H, W)"));
  options.input_shape = {1, 28, 28};
  const ::onnx::ModelProto proto = onnx_io::to_onnx(*model, options);
  CHECK(proto.graph().input(0).type().tensor_type().shape().dim(2).dim_value() == 28);
}
