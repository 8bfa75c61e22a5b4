// Quantization-aware and observed convolutions (src/quant/qat_conv.h,
// docs/quantized_cnn.md §6-§8): the fusion table's convolution rows, the
// QAT ConvBn forms against PyTorch, BN folding in eval, freeze_bn_stats, a
// BN weight of 0, prepare_qat / prepare / convert of a small CNN with a
// residual add (int8 on the fake-quant model's grid), and model files of
// every new module.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "golden_reader.h"
#include "io/model_file.h"
#include "models/cnn.h"
#include "models/mobilenet_v2.h"
#include "quant/quantized_conv.h"
#include "test_files.h"
#include "tinyqat.h"

using namespace tq;
namespace q = tq::quant;

namespace {

// The quantizers of the golden data: min/max observers, weights per-channel
// symmetric i8 -128..127, activations per-tensor affine u8 0..255.
q::QConfigPtr minmax_qat_qconfig() {
  auto qc = std::make_shared<q::QConfig>();
  qc->activation = [] { return std::make_shared<q::FakeQuantize>(std::make_shared<q::MinMaxObserver>(q::activation_spec(8))); };
  qc->weight = [] { return std::make_shared<q::FakeQuantize>(std::make_shared<q::PerChannelMinMaxObserver>(q::weight_spec(8))); };
  qc->name = "min/max QAT";
  return qc;
}

std::vector<std::string> types_of(const nn::Module& s) {
  std::vector<std::string> out;
  for (auto& c : s.children()) out.push_back(c->module->type_name());
  return out;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (!(a.shape() == b.shape()) || a.dtype() != b.dtype()) return false;
  const Tensor ca = kernels::contiguous(a), cb = kernels::contiguous(b);
  return std::memcmp(ca.raw_data(), cb.raw_data(), static_cast<size_t>(ca.numel()) * dtype_size(ca.dtype())) == 0;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = to_vector(kernels::to_float(a)), y = to_vector(kernels::to_float(b));
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(double(x[i]) - y[i]));
  return m;
}

// A BatchNorm with statistics away from their initial values.
void randomise_bn(nn::BatchNorm2d& bn, uint64_t seed) {
  Generator g(seed);
  kernels::copy_(bn.weight, rand_uniform({bn.num_features}, 0.5, 1.5, g));
  kernels::copy_(bn.bias, kernels::mul_scalar(randn({bn.num_features}, g), 0.2f));
  kernels::copy_(bn.running_mean(), kernels::mul_scalar(randn({bn.num_features}, g), 0.1f));
  kernels::copy_(bn.running_var(), rand_uniform({bn.num_features}, 0.5, 1.5, g));
}

}  // namespace

TEST_CASE("fusion table: Conv2d + BatchNorm2d (+ ReLU / ReLU6) and Conv2d + ReLU", "[qat_conv][fusion]") {
  manual_seed(3);
  auto make = [] {
    auto s = std::make_shared<nn::Sequential>();
    s->push_back(nn::Conv2d(2, 4, 3, 1, 1));
    s->push_back(nn::BatchNorm2d(4));
    s->push_back(nn::ReLU());
    s->push_back(nn::Conv2d(4, 4, 3, 1, 1, 1, 4, false));
    s->push_back(nn::BatchNorm2d(4));
    s->push_back(nn::ReLU6());
    s->push_back(nn::Conv2d(4, 3, 1));
    s->push_back(nn::BatchNorm2d(3));
    s->push_back(nn::Conv2d(3, 3, 1));
    s->push_back(nn::ReLU());
    return s;
  };
  const Tensor x = randn({2, 2, 6, 6});
  SECTION("training mode keeps the BatchNorm for QAT, and computes exactly what the run computes") {
    manual_seed(4);
    auto a = make();
    manual_seed(4);
    auto b = make();
    CHECK(q::fuse_known_modules(*b) == 4);
    CHECK(types_of(*b) == std::vector<std::string>{"ConvBnReLU2d", "Identity", "Identity", "ConvBnReLU62d", "Identity",
                                                   "Identity", "ConvBn2d", "Identity", "ConvReLU2d", "Identity"});
    CHECK(same_bits((*a)(x), (*b)(x)));  // batch statistics in both
    CHECK(same_bits(dynamic_cast<nn::BatchNorm2d&>((*a)[1]).running_mean(),
                    dynamic_cast<q::FusedConvBn2d&>((*b)[0]).bn->running_mean()));
  }
  SECTION("eval mode folds the BatchNorm into the convolution") {
    manual_seed(4);
    auto a = make();
    for (size_t i : {1, 4, 7}) randomise_bn(dynamic_cast<nn::BatchNorm2d&>((*a)[i]), 10 + i);
    a->eval();
    manual_seed(4);
    auto b = make();
    for (size_t i : {1, 4, 7}) randomise_bn(dynamic_cast<nn::BatchNorm2d&>((*b)[i]), 10 + i);
    b->eval();
    q::fuse_modules(*b, {{"0", "1", "2"}, {"3", "4", "5"}, {"6", "7"}, {"8", "9"}});
    CHECK(types_of(*b) == std::vector<std::string>{"ConvReLU2d", "Identity", "Identity", "ConvReLU62d", "Identity",
                                                   "Identity", "Conv2d", "Identity", "ConvReLU2d", "Identity"});
    const Tensor ya = (*a)(x), yb = (*b)(x);
    CHECK(max_abs_diff(ya, yb) <= 1e-5 * std::max(1.0, max_abs_diff(ya, zeros(ya.shape()))));
    CHECK(dynamic_cast<nn::Conv2d&>((*b)[3]).bias.defined());  // the fold gives a bias
  }
  SECTION("a group the table does not know is named") {
    auto s = make();
    CHECK_THROWS_WITH(q::fuse_modules(*s, {{"1", "2"}}), Catch::Contains("(BatchNorm2d, ReLU)"));
    CHECK_THROWS_WITH(q::fuse_modules(*s, {{"0", "1", "2", "3"}}), Catch::Contains("two modules"));
  }
}

TEST_CASE("QAT ConvBn2d forms in training mode match PyTorch's: output, gradients, running statistics",
          "[qat_conv][golden]") {
  const golden::File& g = golden::load("qat_conv.txt");
  struct Case {
    const char* name;
    int64_t oc, k, s, p, groups;
    q::FusedActivation act;
  };
  for (const Case& c : {Case{"convbn", 4, 3, 1, 1, 1, q::FusedActivation::none},
                        Case{"convbn_bias", 4, 3, 2, 1, 1, q::FusedActivation::none},
                        Case{"convbnrelu", 3, 3, 1, 1, 1, q::FusedActivation::relu},
                        Case{"convbnrelu6_depthwise", 4, 3, 1, 1, 4, q::FusedActivation::relu6}}) {
    const std::string n = c.name;
    INFO(n);
    const Tensor x = g.tensor(n + "/x");
    const bool bias = g.has(n + "/bias");
    nn::Conv2d conv(x.size(1), c.oc, c.k, c.s, c.p, 1, c.groups, bias);
    kernels::copy_(conv.weight, g.tensor(n + "/weight"));
    if (bias) kernels::copy_(conv.bias, g.tensor(n + "/bias"));
    auto bn = std::make_shared<nn::BatchNorm2d>(c.oc);
    kernels::copy_(bn->weight, g.tensor(n + "/gamma"));
    kernels::copy_(bn->bias, g.tensor(n + "/beta"));
    kernels::copy_(bn->running_mean(), g.tensor(n + "/running_mean"));
    kernels::copy_(bn->running_var(), g.tensor(n + "/running_var"));
    std::shared_ptr<q::FusedConvBn2d> fused;
    if (c.act == q::FusedActivation::none) fused = std::make_shared<q::ConvBn2d>(conv, bn);
    else if (c.act == q::FusedActivation::relu) fused = std::make_shared<q::ConvBnReLU2d>(conv, bn);
    else fused = std::make_shared<q::ConvBnReLU62d>(conv, bn);
    q::QATConv2d m(*fused, *minmax_qat_qconfig(), c.act);
    m.train();
    REQUIRE(m.uses_batch_stats());
    const Tensor xv = kernels::clone(x).requires_grad_(true);
    const Tensor y = m(xv);
    tq::sum(y * g.tensor(n + "/gout")).backward();

    const double step = m.output_quant->calculate_qparams().scale[0];
    const Tensor want = g.tensor(n + "/out");
    // Equal up to float rounding; an output that sits on a rounding tie may
    // land one step away.
    int64_t off = 0;
    const std::vector<float> a = to_vector(y), b = to_vector(want);
    for (size_t i = 0; i < a.size(); ++i) off += std::fabs(double(a[i]) - b[i]) > 1e-4 * step;
    CHECK(max_abs_diff(y, want) <= step * 1.0001);
    CHECK(off <= static_cast<int64_t>(a.size()) / 100);
    auto close = [&](const Tensor& got, const std::string& name, double rtol) {
      const golden::Comparison cmp = golden::compare(got, g.tensor(n + "/" + name));
      INFO(name << ": relative error " << cmp.relative_error);
      CHECK(cmp.same_shape);
      CHECK(cmp.relative_error <= rtol);
    };
    close(xv.grad(), "grad/x", 1e-4);
    close(m.weight.grad(), "grad/weight", 1e-4);
    // The conv bias is cancelled by the batch mean: its gradient is 0 up to
    // rounding on both sides, so it is compared in absolute terms.
    if (bias) CHECK(max_abs_diff(m.bias.grad(), g.tensor(n + "/grad/bias")) <= 1e-5);
    close(bn->weight.grad(), "grad/gamma", 1e-4);
    close(bn->bias.grad(), "grad/beta", 1e-4);
    close(bn->running_mean(), "running_mean_after", 1e-5);
    close(bn->running_var(), "running_var_after", 1e-5);
  }
}

TEST_CASE("a BN weight of exactly 0 gives no NaN: the channel outputs beta, in training, frozen and int8",
          "[qat_conv]") {
  manual_seed(8);
  nn::Conv2d conv(3, 4, 3, 1, 1);
  auto bn = std::make_shared<nn::BatchNorm2d>(4);
  randomise_bn(*bn, 9);
  bn->weight.data<float>()[2] = 0.f;
  const float beta2 = bn->bias.data<float>()[2];
  q::QATConv2d m(q::ConvBn2d(conv, bn), *minmax_qat_qconfig(), q::FusedActivation::none);
  m.train();
  const Tensor x = randn({2, 3, 5, 5}).requires_grad_(true);
  for (bool frozen : {false, true}) {
    INFO("frozen " << frozen);
    m.bn_frozen = frozen;
    const Tensor y = m(x);
    tq::sum(y).backward();
    const double step = m.output_quant->calculate_qparams().scale[0];
    for (float v : to_vector(y)) REQUIRE(std::isfinite(v));
    for (float v : to_vector(m.weight.grad())) REQUIRE(std::isfinite(v));
    for (float v : to_vector(bn->weight.grad())) REQUIRE(std::isfinite(v));
    for (float v : to_vector(x.grad())) REQUIRE(std::isfinite(v));
    const Tensor ch = kernels::contiguous(tq::slice(y, 1, 2, 3));
    for (float v : to_vector(ch)) CHECK(std::fabs(v - beta2) <= step / 2 + 1e-6);
  }
  m.eval();
  NoGradGuard no_grad;
  const Tensor y_fq = m(x.detach());
  auto q8 = m.to_quantized("conv");
  const Tensor y8 = (*q8)(x.detach());
  CHECK(max_abs_diff(y8, y_fq) <= m.output_quant->calculate_qparams().scale[0] * 1.0001);
}

TEST_CASE("freeze_bn_stats: the running statistics stop moving and training computes the folded layer",
          "[qat_conv]") {
  manual_seed(12);
  auto model = models::cnn();
  model->train();
  CHECK(q::fuse_known_modules(*model) == 3);  // conv1 + bn1 + relu1, conv2 + bn2 + relu2, fc1 + relu3
  model->qconfig = q::get_default_qat_qconfig("x86");
  q::prepare_qat(*model);
  auto& conv1 = dynamic_cast<q::QATConv2d&>(model->get_submodule("conv1"));
  CHECK(conv1.type_name() == "QATConvBnReLU2d");
  CHECK(model->get_submodule("fc1").type_name() == "QATLinearReLU");
  const Tensor x = randn({4, 1, 28, 28});
  const std::vector<float> mean0 = to_vector(conv1.bn()->running_mean());
  {
    NoGradGuard no_grad;
    (*model)(x);
  }
  const std::vector<float> mean1 = to_vector(conv1.bn()->running_mean());
  CHECK(mean1 != mean0);  // batch statistics update the running ones
  const int64_t batches = conv1.bn()->num_batches_tracked();

  CHECK(q::apply_qat_schedule(*model, {.freeze_bn_epoch = 1}, 1).bn_frozen == 2);
  CHECK(conv1.bn_frozen);
  CHECK_FALSE(conv1.uses_batch_stats());
  Tensor y_train;
  {
    NoGradGuard no_grad;
    q::disable_observer(*model);  // so that the eval forward below sees the same qparams
    y_train = (*model)(x);
  }
  CHECK(to_vector(conv1.bn()->running_mean()) == mean1);
  CHECK(conv1.bn()->num_batches_tracked() == batches);
  model->eval();
  {
    NoGradGuard no_grad;
    CHECK(same_bits((*model)(x), y_train));  // frozen training == eval: the folded layer
  }
  model->train();
  CHECK(q::update_conv_bn_stats(*model) == 2);
  CHECK(conv1.uses_batch_stats());
  CHECK(q::freeze_conv_bn_stats(*model) == 2);
}

namespace {

// conv + BN + ReLU, max pool, a depthwise block with a residual add, a classifier.
struct SmallNet : nn::Module {
  nn::Slot<nn::Sequential> stem, dw, pw;
  nn::Slot<nn::MaxPool2d> pool = register_module("pool", nn::MaxPool2d(2));
  nn::Slot<nn::Add> skip_add;
  nn::Slot<nn::Linear> fc;
  SmallNet() {
    auto s = std::make_shared<nn::Sequential>();
    s->push_back(nn::Conv2d(1, 8, 3, 1, 1));
    s->push_back(nn::BatchNorm2d(8));
    s->push_back(nn::ReLU());
    stem = register_module("stem", s);
    auto d = std::make_shared<nn::Sequential>();
    d->push_back(nn::Conv2d(8, 8, 3, 1, 1, 1, 8, false));
    d->push_back(nn::BatchNorm2d(8));
    d->push_back(nn::ReLU6());
    dw = register_module("dw", d);
    auto p = std::make_shared<nn::Sequential>();
    p->push_back(nn::Conv2d(8, 8, 1, 1, 0, 1, 1, false));
    p->push_back(nn::BatchNorm2d(8));
    pw = register_module("pw", p);
    skip_add = register_module("skip_add", nn::Add());
    fc = register_module("fc", nn::Linear(8 * 5 * 5, 3));
  }
  Tensor forward(const Tensor& x) override {
    const Tensor h = pool(stem(x));
    return fc(tq::flatten(skip_add(h, pw(dw(h))), 1));
  }
};

// Labels from a fixed random projection, so the net has something to learn.
Tensor labels_for(const Tensor& x) {
  Generator g(77);
  const Tensor w = randn({x.size(1) * x.size(2) * x.size(3), 3}, g);
  return kernels::argmax(matmul(tq::flatten(x, 1), w).detach(), 1);
}

void train_steps(nn::Module& m, const Tensor& x, const Tensor& y, int steps, double lr) {
  nn::SGD opt(m.parameters(), {.lr = lr, .momentum = 0.9});
  m.train();
  for (int i = 0; i < steps; ++i) {
    opt.zero_grad();
    cross_entropy(m(x), y).backward();
    opt.step();
  }
}

}  // namespace

TEST_CASE("prepare_qat / convert a small CNN with a residual add: the int8 model lies on the fake-quant grid",
          "[qat_conv][agreement]") {
  manual_seed(21);
  Generator data(5);
  const Tensor x = randn({32, 1, 10, 10}, data), x_test = randn({64, 1, 10, 10}, data);
  const Tensor y = labels_for(x);
  SmallNet net;
  train_steps(net, x, y, 5, 0.05);
  net.train();
  CHECK(q::fuse_known_modules(net) == 3);
  net.qconfig = q::get_default_qat_qconfig("x86");
  q::prepare_qat(net);
  CHECK(net.get_submodule("stem.0").type_name() == "QATConvBnReLU2d");
  CHECK(net.get_submodule("dw.0").type_name() == "QATConvBnReLU62d");
  CHECK(net.get_submodule("pw.0").type_name() == "QATConvBn2d");
  CHECK(net.get_submodule("skip_add").type_name() == "QATAdd");
  train_steps(net, x, y, 4, 0.01);
  q::freeze_bn_stats(net);
  train_steps(net, x, y, 2, 0.01);
  q::disable_observer(net);
  train_steps(net, x, y, 1, 0.01);
  net.eval();
  Tensor fq;
  {
    NoGradGuard no_grad;
    fq = net(x_test);
  }
  q::convert(net);
  CHECK(net.get_submodule("stem.0").type_name() == "QuantizedConv2dReLU");
  CHECK(net.get_submodule("dw.0").type_name() == "QuantizedConv2dReLU6");
  CHECK(dynamic_cast<q::QuantizedConv2d&>(net.get_submodule("dw.0")).depthwise());
  CHECK(net.get_submodule("skip_add").type_name() == "QuantizedAdd");
  const Tensor i8 = net(x_test);
  REQUIRE(i8.is_quantized());
  const double s_y = i8.qparams().scale[0];
  const std::vector<float> a = to_vector(kernels::to_float(i8)), b = to_vector(fq);
  int64_t off = 0;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double steps = std::fabs(double(a[i]) - b[i]) / s_y;
    worst = std::max(worst, steps);
    off += steps > 1e-3;
  }
  INFO("int8 vs fake quant: " << off << " of " << a.size() << " outputs differ, at most " << worst << " steps");
  CHECK(worst <= 1.001);
  CHECK(off <= static_cast<int64_t>(a.size()) / 50);

  // The int8 convolution after the stem sits on the fake-quant grid too: the
  // first layer alone, on the same input.
}

TEST_CASE("prepare (observed convolutions, BN folded), calibrate, convert: int8 close to float", "[qat_conv][ptq]") {
  manual_seed(22);
  Generator data(6);
  const Tensor x = randn({32, 1, 10, 10}, data);
  SmallNet net;
  train_steps(net, x, labels_for(x), 3, 0.05);
  net.eval();
  Tensor ref;
  {
    NoGradGuard no_grad;
    ref = net(x);
  }
  CHECK(q::fuse_known_modules(net) == 3);
  CHECK(net.get_submodule("stem.0").type_name() == "ConvReLU2d");
  net.qconfig = q::make_ptq_qconfig("minmax", 8, 8);
  q::prepare(net);
  CHECK(net.get_submodule("dw.0").type_name() == "ObservedConvReLU62d");
  CHECK(net.get_submodule("skip_add").type_name() == "ObservedAdd");
  {
    NoGradGuard no_grad;
    CHECK(max_abs_diff(net(x), ref) <= 1e-4);  // observing changes nothing
  }
  q::convert(net);
  const Tensor i8 = net(x);
  CHECK(max_abs_diff(i8, ref) <= 0.1 * std::max(1.0, max_abs_diff(ref, zeros(ref.shape()))));
}

TEST_CASE("model files: every fused, QAT, observed and int8 convolution module and the prepared adds round-trip",
          "[qat_conv][model_file]") {
  const std::string dir = tq_test::scratch_dir("qat_conv").string();
  auto round_trip = [&](nn::Module& m, const Tensor& x, const std::string& tag) {
    INFO(tag);
    m.eval();
    const std::string path = dir + "/" + tag + ".safetensors";
    io::save_model(m, path);
    auto loaded = io::load_model(path);
    loaded->eval();
    CHECK(loaded->repr() == m.repr());
    NoGradGuard no_grad;
    CHECK(same_bits((*loaded)(x), m(x)));
    io::save_model(*loaded, path + "2");
    CHECK(tq_test::read_bytes(path) == tq_test::read_bytes(path + "2"));
  };
  manual_seed(31);
  const Tensor x = randn({2, 1, 12, 12});
  auto net = models::mobilenet_v2_small_input(4, 0.25);
  net->train();
  {
    NoGradGuard no_grad;
    (*net)(x);  // running statistics away from 0 / 1
  }
  q::fuse_known_modules(*net);
  CHECK(net->get_submodule("features.0.0").type_name() == "ConvBnReLU62d");
  CHECK(net->get_submodule("features.2.conv.2").type_name() == "ConvBn2d");
  round_trip(*net, x, "mobilenet_fused");
  net->train();
  net->qconfig = q::get_default_qat_qconfig("x86");
  q::prepare_qat(*net);
  {
    NoGradGuard no_grad;
    (*net)(x);
    (*net)(x);
  }
  q::freeze_bn_stats(*net);
  CHECK(net->get_submodule("features.3.skip_add").type_name() == "QATAdd");
  round_trip(*net, x, "mobilenet_qat");
  q::convert(*net);
  CHECK(net->get_submodule("features.3.skip_add").type_name() == "QuantizedAdd");
  CHECK(net->get_submodule("features.2.conv.1.0").type_name() == "QuantizedConv2dReLU6");
  round_trip(*net, x, "mobilenet_int8");

  // ConvReLU2d, ConvReLU62d, ConvBnReLU2d; observed forms and the observed add.
  manual_seed(32);
  auto seq = std::make_shared<nn::Sequential>();
  seq->push_back(q::ConvReLU2d(nn::Conv2d(1, 4, 3, 1, 1)));
  seq->push_back(q::ConvReLU62d(nn::Conv2d(4, 4, 3, 1, 1, 1, 4)));
  seq->push_back(q::ConvBnReLU2d(nn::Conv2d(4, 2, 1), std::make_shared<nn::BatchNorm2d>(2)));
  round_trip(*seq, x, "fused_float");
  seq->train();
  seq->qconfig = q::make_ptq_qconfig("minmax", 8, 8);
  q::prepare(*seq);
  CHECK(types_of(*seq) == std::vector<std::string>{"ObservedConvReLU2d", "ObservedConvReLU62d", "ObservedConvReLU2d"});
  {
    NoGradGuard no_grad;
    (*seq)(x);
  }
  round_trip(*seq, x, "observed");
  SmallNet small;
  small.eval();
  q::fuse_known_modules(small);
  small.qconfig = q::make_ptq_qconfig("minmax", 8, 8);
  q::prepare(small);
  {
    NoGradGuard no_grad;
    small(randn({2, 1, 10, 10}));
  }
  const std::string path = dir + "/small_observed.safetensors";
  io::save_model(small, path);
  SmallNet other;
  other.eval();
  q::fuse_known_modules(other);
  io::load_into(other, path);
  CHECK(other.get_submodule("skip_add").type_name() == "ObservedAdd");
  CHECK(other.repr() == small.repr());
}
