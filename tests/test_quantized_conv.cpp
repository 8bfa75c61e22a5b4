// Tests of QuantizedConv2d and QuantizedAdd (src/quant/quantized_conv.h):
// the int8 layer against the real-valued convolution of its own dequantized
// input and weight (within one output step: only the i32 bias and the Q31
// multiplier round), per-tensor and per-channel weights, groups=1 and
// depthwise, fused ReLU / ReLU6; the add against the real sum; bad input.
#include <algorithm>
#include <cstdio>
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "autograd/functions.h"
#include "autograd/pool_ops.h"
#include "io/model_file.h"
#include "nn/activation.h"
#include "nn/sequential.h"
#include "quant/quantize.h"
#include "quant/quantized_conv.h"
#include "quant/quantized_pool.h"
#include "tensor/channels_last.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace {

using tq::DType;
using tq::QParams;
using tq::QScheme;
using tq::Shape;
using tq::Tensor;
using tq::quant::FusedActivation;

QParams per_tensor_affine(float scale, int32_t zero_point) {
  QParams q;
  q.scheme = QScheme::per_tensor_affine;
  q.scale = {scale};
  q.zero_point = {zero_point};
  return q;
}

// Symmetric i8 qparams of w (out, ...): one scale, or one per output channel.
QParams weight_qparams(const Tensor& w, bool per_channel) {
  const std::vector<float> v = tq::to_vector(w);
  const int64_t out = w.size(0), per = w.numel() / out;
  QParams q;
  q.scheme = per_channel ? QScheme::per_channel_symmetric : QScheme::per_tensor_symmetric;
  q.quant_min = -127;
  q.quant_max = 127;
  q.axis = per_channel ? 0 : -1;
  float all = 0;
  for (int64_t o = 0; o < out; ++o) {
    float m = 0;
    for (int64_t i = 0; i < per; ++i) m = std::max(m, std::abs(v[static_cast<size_t>(o * per + i)]));
    all = std::max(all, m);
    if (per_channel) {
      q.scale.push_back(std::max(m, 1e-6f) / 127.f);
      q.zero_point.push_back(0);
    }
  }
  if (!per_channel) {
    q.scale = {std::max(all, 1e-6f) / 127.f};
    q.zero_point = {0};
  }
  return q;
}

struct ConvCase {
  int64_t n, c, h, w, oc, k, stride, pad, groups;
  bool per_channel;
  FusedActivation act;
};

}  // namespace

TEST_CASE("QuantizedConv2d equals the real convolution of its dequantized operands within one step", "[quantized_conv]") {
  tq::Generator g(11);
  const ConvCase cases[] = {
      {1, 3, 7, 6, 8, 3, 1, 1, 1, true, FusedActivation::none},   {2, 4, 9, 9, 5, 3, 2, 1, 1, false, FusedActivation::relu},
      {1, 16, 5, 5, 24, 1, 1, 0, 1, true, FusedActivation::relu6}, {2, 8, 7, 7, 8, 3, 1, 1, 8, true, FusedActivation::relu6},
      {1, 19, 8, 9, 19, 3, 2, 1, 19, true, FusedActivation::none}, {1, 5, 6, 6, 5, 3, 2, 0, 5, false, FusedActivation::relu},
  };
  for (const auto& cc : cases) {
    const Tensor w = tq::randn(Shape{cc.oc, cc.c / cc.groups, cc.k, cc.k}, g);
    const Tensor b = tq::rand_uniform(Shape{cc.oc}, -0.5, 0.5, g);
    const QParams wq = weight_qparams(w, cc.per_channel);
    const QParams iq = per_tensor_affine(0.03f, 90);
    const QParams oq = per_tensor_affine(0.08f, 100);
    tq::quant::Conv2dGeometry geo;
    geo.stride_h = geo.stride_w = cc.stride;
    geo.pad_h = geo.pad_w = cc.pad;
    geo.groups = cc.groups;
    tq::quant::QuantizedConv2d layer(w, b, wq, oq, nullptr, cc.act, geo, "conv");
    CHECK(layer.depthwise() == (cc.groups > 1));
    const Tensor x_float = tq::rand_uniform(Shape{cc.n, cc.c, cc.h, cc.w}, -2.5, 4.5, g);
    const Tensor x = tq::quant::quantize(x_float, iq, DType::u8);
    const Tensor y = layer.forward(x);
    const int64_t OH = (cc.h + 2 * cc.pad - cc.k) / cc.stride + 1, OW = (cc.w + 2 * cc.pad - cc.k) / cc.stride + 1;
    REQUIRE(y.shape() == (Shape{cc.n, cc.oc, OH, OW}));
    REQUIRE(y.is_quantized());

    const std::vector<float> xr = tq::to_vector(tq::quant::dequantize(x));
    const std::vector<float> wr = tq::to_vector(tq::quant::dequantize(layer.weight()));
    const std::vector<float> bv = tq::to_vector(b);
    const std::vector<float> yq = tq::to_vector(y);
    const int64_t cpg = cc.c / cc.groups, opg = cc.oc / cc.groups;
    const double lo = cc.act == FusedActivation::none ? 0 : 100;
    const double hi = cc.act == FusedActivation::relu6 ? std::min(255.0, 100 + std::round(6.0 / 0.08)) : 255;
    int64_t off_by_one = 0, worse = 0, total = 0;
    for (int64_t n = 0; n < cc.n; ++n)
      for (int64_t o = 0; o < cc.oc; ++o)
        for (int64_t oy = 0; oy < OH; ++oy)
          for (int64_t ox = 0; ox < OW; ++ox) {
            double acc = bv[static_cast<size_t>(o)];
            const int64_t group = o / opg;
            for (int64_t ci = 0; ci < cpg; ++ci)
              for (int64_t kh = 0; kh < cc.k; ++kh)
                for (int64_t kw = 0; kw < cc.k; ++kw) {
                  const int64_t iy = oy * cc.stride - cc.pad + kh, ix = ox * cc.stride - cc.pad + kw;
                  if (iy < 0 || iy >= cc.h || ix < 0 || ix >= cc.w) continue;
                  const int64_t c = group * cpg + ci;
                  acc += double(xr[static_cast<size_t>(((n * cc.c + c) * cc.h + iy) * cc.w + ix)]) *
                         wr[static_cast<size_t>(((o * cpg + ci) * cc.k + kh) * cc.k + kw)];
                }
            const double expected = std::clamp(100 + std::round(acc / 0.08), lo, hi);
            const double got = yq[static_cast<size_t>(((n * cc.oc + o) * OH + oy) * OW + ox)];
            ++total;
            if (std::abs(got - expected) == 1) ++off_by_one;
            if (std::abs(got - expected) > 1) ++worse;
          }
    INFO("c=" << cc.c << " oc=" << cc.oc << " k=" << cc.k << " stride=" << cc.stride << " pad=" << cc.pad
              << " groups=" << cc.groups);
    CHECK(worse == 0);
    CHECK(off_by_one * 50 <= total);  // off by one only near halves (bias rounding): < 2%
  }
}

TEST_CASE("QuantizedConv2d rejects what it cannot run, naming the layer", "[quantized_conv]") {
  tq::Generator g(12);
  const QParams oq = per_tensor_affine(0.1f, 0);
  tq::quant::Conv2dGeometry geo;
  geo.groups = 2;
  const Tensor w = tq::randn(Shape{4, 2, 3, 3}, g);
  CHECK_THROWS_WITH(
      tq::quant::QuantizedConv2d(w, Tensor(), weight_qparams(w, true), oq, nullptr, FusedActivation::none, geo, "body.0"),
      Catch::Contains("body.0") && Catch::Contains("depthwise 3x3"));
  geo.groups = 1;
  tq::quant::QuantizedConv2d layer(w, Tensor(), weight_qparams(w, true), oq, nullptr, FusedActivation::none, geo, "c1");
  const Tensor x = tq::quant::quantize(tq::randn(Shape{1, 3, 5, 5}, g), per_tensor_affine(0.05f, 128), DType::u8);
  CHECK_THROWS_WITH(layer.forward(x), Catch::Contains("in_channels=2"));
  CHECK_THROWS_WITH(layer.forward(tq::randn(Shape{1, 2, 5, 5}, g)), Catch::Contains("no input qparams"));
}

TEST_CASE("QuantizedAdd: the residual add on the output grid", "[quantized_conv]") {
  tq::Generator g(13);
  const QParams qa = per_tensor_affine(0.02f, 120), qb = per_tensor_affine(0.05f, 30), oq = per_tensor_affine(0.06f, 70);
  const Tensor a = tq::quant::quantize(tq::rand_uniform(Shape{2, 3, 5, 7}, -2, 2, g), qa, DType::u8);
  const Tensor b = tq::quant::quantize(tq::rand_uniform(Shape{2, 3, 5, 7}, -1, 8, g), qb, DType::u8);
  for (FusedActivation act : {FusedActivation::none, FusedActivation::relu}) {
    tq::quant::QuantizedAdd add(oq, act, "skip_add");
    const Tensor y = add.forward(a, b);
    const auto ar = tq::to_vector(tq::quant::dequantize(a)), br = tq::to_vector(tq::quant::dequantize(b));
    const auto yq = tq::to_vector(y);
    int64_t worse = 0;
    for (size_t i = 0; i < yq.size(); ++i) {
      const double lo = act == FusedActivation::relu ? 70 : 0;
      const double expected = std::clamp(70 + std::round((double(ar[i]) + br[i]) / 0.06), lo, 255.0);
      if (std::abs(yq[i] - expected) > (std::abs(std::fmod((double(ar[i]) + br[i]) / 0.06, 1.0)) > 0.4999 ? 1 : 0))
        ++worse;
    }
    CHECK(worse == 0);
    CHECK(y.qparams().scale[0] == 0.06f);
  }
  tq::quant::QuantizedAdd add(oq, FusedActivation::none, "skip_add");
  CHECK_THROWS_WITH(add.forward(a, tq::quant::quantize(tq::randn(Shape{2, 3, 5, 6}, g), qb, DType::u8)),
                    Catch::Contains("different shapes"));
  CHECK_THROWS_WITH(add.forward(a, tq::randn(Shape{2, 3, 5, 7}, g)), Catch::Contains("both inputs"));
}

TEST_CASE("QuantizedConv2d and QuantizedAdd survive save and load bit for bit", "[quantized_conv][model_file]") {
  tq::Generator g(14);
  const QParams iq = per_tensor_affine(0.04f, 128);
  const Tensor w1 = tq::randn(Shape{6, 3, 3, 3}, g), b1 = tq::randn(Shape{6}, g);
  const Tensor w2 = tq::randn(Shape{6, 1, 3, 3}, g);
  tq::quant::Conv2dGeometry g1;
  g1.pad_h = g1.pad_w = 1;
  tq::quant::Conv2dGeometry g2 = g1;
  g2.groups = 6;
  g2.stride_h = g2.stride_w = 2;
  auto model = std::make_shared<tq::nn::Sequential>();
  model->push_back(std::make_shared<tq::quant::QuantizedConv2d>(w1, b1, weight_qparams(w1, true), per_tensor_affine(0.05f, 0),
                                                                std::make_shared<const QParams>(iq),
                                                                FusedActivation::relu, g1, "0"));
  model->push_back(std::make_shared<tq::quant::QuantizedConv2d>(w2, Tensor(), weight_qparams(w2, false),
                                                                per_tensor_affine(0.07f, 0), nullptr,
                                                                FusedActivation::relu6, g2, "1"));
  model->push_back(std::make_shared<tq::quant::QuantizedAdd>(per_tensor_affine(0.1f, 3), FusedActivation::none, "2"));
  const Tensor x = tq::rand_uniform(Shape{2, 3, 9, 8}, -3, 3, g);
  auto* c0 = dynamic_cast<tq::quant::QuantizedConv2d*>(&(*model)[0]);
  auto* c1 = dynamic_cast<tq::quant::QuantizedConv2d*>(&(*model)[1]);
  REQUIRE(c0 != nullptr);
  REQUIRE(c1 != nullptr);
  const Tensor y1 = c1->forward(c0->forward(x));  // a float input: quantized with the recorded qparams
  const std::string path = "test_quantized_conv_model.safetensors";
  tq::io::save_model(*model, path);
  auto loaded = tq::io::load_model(path);
  std::remove(path.c_str());
  auto* l0 = dynamic_cast<tq::quant::QuantizedConv2d*>(&loaded->get_submodule("0"));
  auto* l1 = dynamic_cast<tq::quant::QuantizedConv2d*>(&loaded->get_submodule("1"));
  auto* l2 = dynamic_cast<tq::quant::QuantizedAdd*>(&loaded->get_submodule("2"));
  REQUIRE(l0 != nullptr);
  REQUIRE(l1 != nullptr);
  REQUIRE(l2 != nullptr);
  CHECK(l0->type_name() == "QuantizedConv2dReLU");
  CHECK(l1->type_name() == "QuantizedConv2dReLU6");
  CHECK(l1->depthwise());
  CHECK(l2->output_qparams().zero_point[0] == 3);
  const Tensor y2 = l1->forward(l0->forward(x));
  CHECK(tq::to_vector(y2) == tq::to_vector(y1));
  const Tensor s1 = dynamic_cast<tq::quant::QuantizedAdd&>((*model)[2]).forward(y1, y1);
  CHECK(tq::to_vector(l2->forward(y2, y2)) == tq::to_vector(s1));
}

TEST_CASE("quantized pooling modules and Flatten keep the tensor quantized", "[quantized_conv]") {
  tq::Generator g(15);
  const QParams q = per_tensor_affine(0.05f, 60);
  const Tensor x = tq::quant::quantize(tq::randn(Shape{2, 5, 7, 6}, g), q, DType::u8);
  const auto xv = tq::to_vector(x);
  tq::quant::Pool2dOptions o;
  o.kernel_h = o.kernel_w = 2;
  o.stride_h = o.stride_w = 2;
  tq::quant::QuantizedMaxPool2d mp(o);
  const Tensor m = mp.forward(x);
  REQUIRE(m.shape() == (Shape{2, 5, 3, 3}));
  CHECK(m.is_quantized());
  CHECK(m.qparams().zero_point[0] == 60);
  // NCHW indexing: the transposes inside are right.
  const auto mv = tq::to_vector(m);
  int64_t bad = 0;
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 5; ++c)
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 3; ++j) {
          float best = 0;
          for (int64_t a = 0; a < 2; ++a)
            for (int64_t b = 0; b < 2; ++b)
              best = std::max(best, xv[static_cast<size_t>(((n * 5 + c) * 7 + 2 * i + a) * 6 + 2 * j + b)]);
          if (mv[static_cast<size_t>(((n * 5 + c) * 3 + i) * 3 + j)] != best) ++bad;
        }
  CHECK(bad == 0);
  tq::quant::QuantizedAdaptiveAvgPool2d gap(1, 1);
  const Tensor avg = gap.forward(x);
  REQUIRE(avg.shape() == (Shape{2, 5, 1, 1}));
  double sum = 0;
  for (int64_t p = 0; p < 42; ++p) sum += xv[static_cast<size_t>(42 + p)];  // n = 0, c = 1
  CHECK(tq::to_vector(avg)[1] == std::floor(sum / 42 + 0.5));
  tq::quant::QuantizedAvgPool2d ap(o);
  CHECK(ap.forward(x).shape() == (Shape{2, 5, 3, 3}));
  tq::nn::Flatten flatten;
  const Tensor f = flatten.forward(avg);
  CHECK(f.shape() == (Shape{2, 5}));
  CHECK(f.is_quantized());
  CHECK(f.qparams().scale[0] == 0.05f);
  CHECK_THROWS_WITH(mp.forward(tq::randn(Shape{1, 1, 4, 4}, g)), Catch::Contains("u8 tensor quantized"));

  // Model files: the three modules come back with their options.
  tq::nn::Sequential seq;
  seq.push_back(std::make_shared<tq::quant::QuantizedMaxPool2d>(o));
  seq.push_back(std::make_shared<tq::quant::QuantizedAvgPool2d>(o, false));
  seq.push_back(std::make_shared<tq::quant::QuantizedAdaptiveAvgPool2d>(1, 1));
  const std::string path = "test_quantized_pool_model.safetensors";
  tq::io::save_model(seq, path);
  auto loaded = tq::io::load_model(path);
  std::remove(path.c_str());
  CHECK(loaded->repr() == seq.repr());
  CHECK(tq::to_vector(loaded->forward(x)) == tq::to_vector(seq.forward(x)));
}

TEST_CASE("quantized layers hand channels-last activations on without changing a value", "[quantized_conv]") {
  // A quantized convolution returns its (N, C, H, W) output with NHWC memory
  // (tensor/channels_last.h); the next quantized layer, max pooling and
  // Flatten take it as it is. Every value must be the one of the NCHW path.
  tq::Generator g(17);
  const QParams iq = per_tensor_affine(0.03f, 90), mq = per_tensor_affine(0.05f, 20), oq = per_tensor_affine(0.08f, 100);
  tq::quant::Conv2dGeometry geo;
  geo.pad_h = geo.pad_w = 1;
  const Tensor w1 = tq::randn(Shape{5, 3, 3, 3}, g), w2 = tq::randn(Shape{7, 5, 3, 3}, g);
  tq::quant::QuantizedConv2d conv1(w1, Tensor(), weight_qparams(w1, true), mq, nullptr, FusedActivation::relu, geo, "c1");
  tq::quant::QuantizedConv2d conv2(w2, Tensor(), weight_qparams(w2, false), oq, nullptr, FusedActivation::none, geo, "c2");
  const Tensor x = tq::quant::quantize(tq::rand_uniform(Shape{2, 3, 6, 5}, -2.5, 4.5, g), iq, DType::u8);
  REQUIRE(x.is_contiguous());
  CHECK_FALSE(tq::is_channels_last(x));
  const Tensor x_cl = tq::to_channels_last_bytes(x);
  CHECK(tq::is_channels_last(x_cl));
  CHECK(tq::to_vector(x_cl) == tq::to_vector(x));

  const Tensor y1 = conv1.forward(x);
  CHECK(tq::is_channels_last(y1));
  CHECK(y1.shape() == (Shape{2, 5, 6, 5}));
  CHECK(tq::to_vector(conv1.forward(x_cl)) == tq::to_vector(y1));
  // contiguous() gives the NCHW copy with the same values and qparams.
  const Tensor y1_nchw = tq::kernels::contiguous(y1);
  CHECK(y1_nchw.is_contiguous());
  CHECK(y1_nchw.qparams().zero_point[0] == 20);
  CHECK(tq::to_vector(y1_nchw) == tq::to_vector(y1));
  // The next convolution: the same output from either layout.
  CHECK(tq::to_vector(conv2.forward(y1)) == tq::to_vector(conv2.forward(y1_nchw)));
  // Max pooling (the float module's op on a quantized tensor) and Flatten.
  tq::Pool2dOptions po;
  po.kernel = {2, 2};
  const Tensor p = tq::max_pool2d(y1, po);
  CHECK(tq::is_channels_last(p));
  CHECK(tq::to_vector(p) == tq::to_vector(tq::max_pool2d(y1_nchw, po)));
  tq::nn::Flatten flatten;
  const Tensor f = flatten.forward(p);
  CHECK(f.is_quantized());
  CHECK(f.shape() == (Shape{2, 5 * 3 * 2}));
  CHECK(tq::to_vector(f) == tq::to_vector(flatten.forward(tq::kernels::contiguous(p))));
  // The add: both channels-last stays so; mixed layouts give the same values.
  tq::quant::QuantizedAdd add(oq, FusedActivation::none, "add");
  const Tensor s1 = add.forward(y1, y1);
  CHECK(tq::is_channels_last(s1));
  CHECK(tq::to_vector(add.forward(y1, y1_nchw)) == tq::to_vector(s1));
  CHECK(tq::to_vector(add.forward(y1_nchw, y1_nchw)) == tq::to_vector(s1));
}
