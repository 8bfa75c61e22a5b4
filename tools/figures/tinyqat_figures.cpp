// tinyqat-figures: the numbers behind the docs' pictures and "run it and
// check" boxes, computed by the library itself. Each section prints what a
// page shows (docs/tensor.md, autograd.md, sgd.md, optim.md, quantization.md,
// lsq.md, convolution.md, batchnorm.md, quantized_cnn.md, int8_kernel.md).
//
//   build/tinyqat-figures SECTION
//
// Every number is computed on tiny shapes by plain loops (no BLAS call), so it
// is the same on every x86-64 machine.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/conv_kernels.h"
#include "tensor/int8_gemm.h"
#include "quant/conv_bn_fold.h"
#include "tinyqat.h"

using namespace tq;

namespace {

std::string view_of(const Tensor& t) {
  return "shape " + t.shape().str() + " strides " + t.strides().str() + " offset " + std::to_string(t.offset()) +
         (t.is_contiguous() ? " contiguous" : " not contiguous");
}

// ---- docs/tensor.md: strides and views ----
int strides() {
  const Tensor t = reshape(arange(24), {2, 3, 4});
  std::printf("t = arange(24).reshape(2, 3, 4): %s\n", view_of(t).c_str());
  std::printf("t[1, 2, 3]: offset 0 + 1*12 + 2*4 + 3*1 = 23, value %g\n", t.at({1, 2, 3}));
  const Tensor tt = transpose(t, 0, 2);
  std::printf("transpose(t, 0, 2): %s\n", view_of(tt).c_str());
  std::printf("  its [3, 2, 1] is t[1, 2, 3]: %g\n", tt.at({3, 2, 1}));
  const Tensor s = slice(t, 1, 1, 3);
  std::printf("slice(t, 1, 1, 3): %s\n", view_of(s).c_str());
  std::printf("  its [0, 0, 0] is t[0, 1, 0]: %g\n", s.at({0, 0, 0}));
  const Tensor col = reshape(arange(3), {3, 1});
  const Tensor e = kernels::expand(col, {3, 4});
  std::printf("expand (3, 1) to (3, 4): %s\n", view_of(e).c_str());
  std::printf("shares storage: transpose %s, slice %s, expand %s\n",
              tt.impl()->storage == t.impl()->storage ? "yes" : "no",
              s.impl()->storage == t.impl()->storage ? "yes" : "no",
              e.impl()->storage == col.impl()->storage ? "yes" : "no");
  try {
    (void)add(zeros({2, 3}), zeros({4}));
  } catch (const std::exception& ex) {
    std::printf("%s\n", ex.what());
  }
  return 0;
}

// ---- docs/autograd.md: the graph of SimpleNN ----
struct SimpleNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 2));
  Tensor forward(const Tensor& x) override { return relu(fc2(relu(fc1(x)))); }
};

int graph() {
  manual_seed(0);
  SimpleNN model;
  Generator rng(1);
  const Tensor x = randn({1, 10}, rng);
  const Tensor target = from_vector_i64({1}, {1});
  const Tensor loss = cross_entropy(model(x), target);

  std::map<const TensorImpl*, std::string> leaf_names;
  for (const auto& [name, p] : model.named_parameters()) leaf_names[p.impl()] = name;
  leaf_names[x.impl()] = "x";

  // Depth-first post-order from the loss, reversed: the order backward() visits.
  std::vector<const Node*> order;
  std::set<const Node*> seen;
  std::function<void(const Node*)> visit = [&](const Node* n) {
    if (!seen.insert(n).second) return;
    for (int i = 0; i < n->num_inputs; ++i)
      if (n->inputs[static_cast<size_t>(i)].defined() && n->inputs[static_cast<size_t>(i)].grad_fn())
        visit(n->inputs[static_cast<size_t>(i)].grad_fn().get());
    order.push_back(n);
  };
  visit(loss.grad_fn().get());
  std::map<const Node*, int> id;
  for (size_t i = 0; i < order.size(); ++i) id[order[order.size() - 1 - i]] = static_cast<int>(i) + 1;

  std::printf("loss = cross_entropy(relu(fc2(relu(fc1(x)))), target): %zu nodes\n", order.size());
  std::printf("backward visits them in this order; each lists its inputs:\n");
  for (size_t i = order.size(); i-- > 0;) {
    const Node* n = order[i];
    std::string ins;
    for (int k = 0; k < n->num_inputs; ++k) {
      const Tensor& in = n->inputs[static_cast<size_t>(k)];
      if (!ins.empty()) ins += ", ";
      if (!in.defined()) ins += "-";
      else if (in.grad_fn()) ins += "node " + std::to_string(id[in.grad_fn().get()]);
      else if (leaf_names.count(in.impl())) ins += leaf_names[in.impl()] + (in.requires_grad() ? " (leaf)" : " (no grad)");
      else ins += in.requires_grad() ? "leaf" : "constant";
    }
    std::printf("  node %d %-22s <- %s\n", id[n], n->name(), ins.c_str());
  }
  loss.backward();
  std::printf("after backward: fc1.weight.grad %s, x has %s\n", model.fc1->weight.grad().shape().str().c_str(),
              x.grad().defined() ? "a gradient" : "no gradient");
  return 0;
}

// ---- docs/sgd.md: three steps with momentum, by the optimizer and by hand ----
int sgd() {
  Tensor w = from_vector({1.0f, -2.0f}, {2});
  w.requires_grad_();
  nn::SGD opt({w}, {.lr = 0.1, .momentum = 0.9});
  float v[2] = {0, 0}, h[2] = {1.0f, -2.0f};
  std::printf("loss = sum(w^2) / 2, so g = w; lr 0.1, momentum 0.9, w0 = [1, -2]\n");
  for (int step = 1; step <= 3; ++step) {
    opt.zero_grad();
    Tensor loss = mul(sum(pow2(w)), 0.5f);
    loss.backward();
    opt.step();
    for (int i = 0; i < 2; ++i) {  // docs/sgd.md eq. 3 by hand: v = mu v + g; w = w - lr v
      const float g = h[i];
      v[i] = step == 1 ? g : 0.9f * v[i] + g;
      h[i] = h[i] - 0.1f * v[i];
    }
    std::printf("step %d: w = [%.6f, %.6f]  by hand [%.6f, %.6f]\n", step, w.at({0}), w.at({1}), h[0], h[1]);
  }
  return 0;
}

// ---- docs/optim.md: Adam's first step moves every weight by lr ----
int adam() {
  Tensor w = from_vector({1.0f, 1.0f}, {2});
  w.requires_grad_();
  nn::Adam opt({w}, {.lr = 0.01});
  opt.zero_grad();
  Tensor loss = sum(mul(w, from_vector({1000.0f, 0.001f}, {2})));  // g = [1000, 0.001]
  loss.backward();
  opt.step();
  std::printf("Adam, lr 0.01, gradients [1000, 0.001]: first step moves w by [%.6f, %.6f]\n", 1.0 - w.at({0}),
              1.0 - w.at({1}));
  Tensor u = from_vector({1.0f, 1.0f}, {2});
  u.requires_grad_();
  nn::SGD sgd({u}, 0.01);
  sgd.zero_grad();
  sum(mul(u, from_vector({1000.0f, 0.001f}, {2}))).backward();
  sgd.step();
  std::printf("SGD,  lr 0.01, same gradients:           first step moves w by [%.6f, %.6f]\n", 1.0 - u.at({0}),
              1.0 - u.at({1}));
  return 0;
}

// ---- docs/quantization.md: the fake-quant staircase and its STE gradient ----
// A 3-bit grid (0..7) with s = 0.25, z = 2: it covers [-0.5, 1.25].
int staircase() {
  QParams qp;
  qp.scale = {0.25f};
  qp.zero_point = {2};
  qp.quant_min = 0;
  qp.quant_max = 7;
  const std::vector<float> xs = {-0.8f, -0.5f, -0.3f, 0.1f, 0.13f, 0.6f, 1.2f, 1.25f, 1.5f};
  Tensor x = from_vector(xs, {static_cast<int64_t>(xs.size())});
  x.requires_grad_();
  Tensor y = quant::fake_quantize(x, qp);
  sum(y).backward();
  std::printf("fake quant on 0..7, s = 0.25, z = 2: grid [%.2f, %.2f]\n", 0.25 * (0 - 2), 0.25 * (7 - 2));
  std::printf("     x    fq(x)  d fq / dx (STE)\n");
  for (size_t i = 0; i < xs.size(); ++i)
    std::printf("%6.2f  %7.2f  %g\n", xs[i], y.at({static_cast<int64_t>(i)}), x.grad().at({static_cast<int64_t>(i)}));
  return 0;
}

// ---- docs/lsq.md: LSQ's gradient of y with respect to s, against x ----
int lsq() {
  const float s = 0.25f;
  const int32_t z = 2, qmin = 0, qmax = 7;
  std::printf("LSQ on 0..7, s = 0.25, z = 2 (grid [-0.50, 1.25]); upstream gradient 1\n");
  std::printf("     x    x/s  d y / d s  d y / d z\n");
  for (float x : {-0.8f, -0.5f, -0.3f, -0.2f, 0.1f, 0.13f, 0.6f, 1.2f, 1.5f}) {
    const auto g = quant::fake_quantize_learnable_gradients_value(x, 1.0f, s, z, qmin, qmax);
    std::printf("%6.2f  %5.2f  %9.4f  %9.4f\n", x, x / s, g.scale, g.zero_point);
  }
  return 0;
}

// ---- docs/convolution.md: im2col of a 3x3 image, 2x2 kernel ----
int im2col() {
  const auto g = kernels::conv2d_geometry({1, 1, 3, 3}, {1, 1, 2, 2}, 1, 1, 0, 0, 1, 1, 1);
  std::vector<float> x(9), col(static_cast<size_t>(g.patch() * g.OH * g.OW));
  for (int i = 0; i < 9; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i + 1);
  kernels::im2col(x.data(), g, col.data());
  std::printf("x (1, 3, 3) = 1..9, kernel 2x2, stride 1: output %lldx%lld\n", static_cast<long long>(g.OH),
              static_cast<long long>(g.OW));
  std::printf("im2col (C*KH*KW = %lld rows, OH*OW = %lld columns):\n", static_cast<long long>(g.patch()),
              static_cast<long long>(g.OH * g.OW));
  for (int64_t r = 0; r < g.patch(); ++r) {
    std::printf(" ");
    for (int64_t c = 0; c < g.OH * g.OW; ++c) std::printf(" %2g", col[static_cast<size_t>(r * g.OH * g.OW + c)]);
    std::printf("\n");
  }
  // With padding 1 the receptive fields reach outside: zeros.
  const auto p = kernels::conv2d_geometry({1, 1, 3, 3}, {1, 1, 2, 2}, 1, 1, 1, 1, 1, 1, 1);
  std::vector<float> colp(static_cast<size_t>(p.patch() * p.OH * p.OW));
  kernels::im2col(x.data(), p, colp.data());
  int zeros = 0;
  for (float v : colp) zeros += v == 0;
  std::printf("with padding 1: output %lldx%lld, %d of the %zu entries are padding zeros\n",
              static_cast<long long>(p.OH), static_cast<long long>(p.OW), zeros, colp.size());
  return 0;
}

// ---- docs/batchnorm.md: train vs eval ----
int batchnorm() {
  nn::BatchNorm2d bn(1);
  const Tensor x = from_vector({1, 2, 3, 6}, {4, 1, 1, 1});  // one channel, batch of 4
  Tensor y = bn(x);
  std::printf("x = [1, 2, 3, 6]: batch mean 3, biased variance 3.5, unbiased 4.6667\n");
  std::printf("train: y = [%.4f, %.4f, %.4f, %.4f]\n", y.at({0, 0, 0, 0}), y.at({1, 0, 0, 0}), y.at({2, 0, 0, 0}),
              y.at({3, 0, 0, 0}));
  std::printf("running_mean %.4f, running_var %.4f (momentum 0.1, from 0 and 1)\n", bn.running_mean().at({0}),
              bn.running_var().at({0}));
  bn.eval();
  y = bn(x);
  std::printf("eval:  y = [%.4f, %.4f, %.4f, %.4f]\n", y.at({0, 0, 0, 0}), y.at({1, 0, 0, 0}), y.at({2, 0, 0, 0}),
              y.at({3, 0, 0, 0}));
  return 0;
}

// ---- docs/quantized_cnn.md: BatchNorm folded into the convolution before it ----
int bnfold() {
  nn::Conv2d conv(1, 2, {1, 2});
  {
    NoGradGuard no_grad;
    kernels::copy_(conv.weight, from_vector({0.5f, -1.0f, 2.0f, 0.25f}, {2, 1, 1, 2}));
    kernels::copy_(conv.bias, from_vector({0.1f, -0.2f}, {2}));
  }
  nn::BatchNorm2d bn(2);
  {
    NoGradGuard no_grad;
    kernels::copy_(bn.weight, from_vector({2.0f, 3.0f}, {2}));
    kernels::copy_(bn.bias, from_vector({0.0f, 1.0f}, {2}));
    kernels::copy_(bn.running_mean(), from_vector({1.0f, -1.0f}, {2}));
    kernels::copy_(bn.running_var(), from_vector({16.0f, 9.0f}, {2}));
  }
  bn.eval();
  const auto f = quant::batch_norm_factor(bn.weight, bn.running_var(), bn.eps);
  const auto folded = quant::fold_batch_norm(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean(),
                                             bn.running_var(), bn.eps);
  std::printf("W = [[0.5, -1], [2, 0.25]], b = [0.1, -0.2]; gamma [2, 3], beta [0, 1], mean [1, -1], var [16, 9]\n");
  std::printf("f = gamma / sqrt(var + eps) = [%.5f, %.5f]\n", f[0], f[1]);
  std::printf("W' = W f:  [[%.5f, %.5f], [%.5f, %.5f]]\n", folded.weight.at({0, 0, 0, 0}),
              folded.weight.at({0, 0, 0, 1}), folded.weight.at({1, 0, 0, 0}), folded.weight.at({1, 0, 0, 1}));
  std::printf("b' = (b - mean) f + beta: [%.5f, %.5f]\n", folded.bias.at({0}), folded.bias.at({1}));
  NoGradGuard no_grad;
  const Tensor x = from_vector({1, 2, 3, -1, 0.5f, 4}, {1, 1, 2, 3});
  const Tensor a = bn(conv(x));
  nn::Conv2d fused(1, 2, {1, 2});
  kernels::copy_(fused.weight, folded.weight);
  kernels::copy_(fused.bias, folded.bias);
  const Tensor b = fused(x);
  double worst = 0;
  const auto va = to_vector(a), vb = to_vector(b);
  for (size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(va[i]) - vb[i]));
  std::printf("bn(conv(x)) vs conv'(x) on a 2x3 input: %zu outputs, max difference %s 1e-6\n", va.size(),
              worst <= 1e-6 ? "<=" : ">");
  return worst <= 1e-6 ? 0 : 1;
}

// ---- docs/quantization.md §5: how the "on a grid" mark flows ----
struct Flow : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(4, 3));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(3, 2));
  std::vector<std::pair<std::string, Tensor>> seen;
  Tensor forward(const Tensor& x) override {
    seen.clear();
    seen.emplace_back("x", x);
    const Tensor a = fc1(x);
    seen.emplace_back("fc1(x)", a);
    const Tensor r = relu(a);
    seen.emplace_back("relu", r);
    const Tensor y = fc2(r);
    seen.emplace_back("fc2", y);
    return y;
  }
};

std::string mark_of(const Tensor& t) {
  if (t.is_quantized()) {
    const QParams& q = t.qparams();
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s, scale %.4g, zero point %d", dtype_name(t.dtype()), q.scale[0],
                  q.zero_point[0]);
    return buf;
  }
  const auto& grid = t.impl()->fake_quant_grid;
  if (!grid) return "f32, no mark";
  if (grid->scale.empty()) return "f32, marked: an observed output";
  char buf[96];
  std::snprintf(buf, sizeof buf, "f32, on the grid scale %.4g, zero point %d", grid->scale[0], grid->zero_point[0]);
  return buf;
}

int grid() {
  manual_seed(0);
  Flow model;
  model.qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(model);
  Generator rng(3);
  const Tensor x = randn({8, 4}, rng);
  {
    NoGradGuard no_grad;
    (void)model(x);
  }
  std::printf("QAT (after prepare_qat):\n");
  for (const auto& [name, t] : model.seen) std::printf("  %-7s %s\n", name.c_str(), mark_of(t).c_str());
  for (const auto& [name, m] : model.named_modules())
    if (const auto* q = dynamic_cast<const quant::QATLinear*>(m))
      std::printf("  %s fake-quantized a float input: %s\n", name.c_str(), q->saw_float_input() ? "yes" : "no");
  model.eval();
  quant::convert(model);
  NoGradGuard no_grad;
  (void)model(x);
  std::printf("int8 (after convert):\n");
  for (const auto& [name, t] : model.seen) std::printf("  %-7s %s\n", name.c_str(), mark_of(t).c_str());
  for (const auto& [name, m] : model.named_modules()) {
    if (name != "fc2") continue;
    try {
      (void)m->forward(from_vector({0.1f, 0.2f, 0.3f}, {1, 3}));
    } catch (const std::exception& ex) {
      std::printf("fc2 given a float tensor: %s\n", ex.what());
    }
  }
  return 0;
}

// ---- docs/mobilenet_v2.md: the block table, counted ----
int mobilenet() {
  for (double width : {1.0, 0.25}) {
    manual_seed(0);
    const auto model = models::mobilenet_v2(1000, width);
    int64_t params = 0, blocks = 0, skips = 0, depthwise = 0;
    for (const Tensor& p : model->parameters()) params += p.numel();
    for (const auto& [name, m] : model->named_modules()) {
      const std::string type = m->type_name();
      blocks += type == "InvertedResidual";
      skips += type == "Add";
      if (const auto* c = dynamic_cast<const nn::Conv2d*>(m))
        depthwise += c->weight.size(1) == 1 && c->weight.size(0) > 1 && c->weight.size(2) == 3;
    }
    std::printf("width %.2f: %lld parameters, %lld inverted residual blocks (%lld with a skip add), %lld depthwise "
                "3x3 convs, last_channel %lld\n",
                width, static_cast<long long>(params), static_cast<long long>(blocks), static_cast<long long>(skips),
                static_cast<long long>(depthwise), static_cast<long long>(model->last_channel));
  }
  std::printf("make_divisible: 24 * 0.5 = 12 -> %lld, 96 * 0.35 = 33.6 -> %lld, 16 * 0.25 = 4 -> %lld\n",
              static_cast<long long>(models::make_divisible(24 * 0.5)),
              static_cast<long long>(models::make_divisible(96 * 0.35)),
              static_cast<long long>(models::make_divisible(16 * 0.25)));
  return 0;
}

// ---- docs/int8_kernel.md §3: which AVX2 path eq. 9 allows ----
int paths() {
  struct Case {
    const char* preset;
    int32_t x_max, w_max;
  };
  std::printf("eq. 9: vpmaddubsw is exact when 2 * x_quant_max * max|w| <= 32767\n");
  for (const Case c : {Case{"x86 / fbgemm (u8 0..127, i8 weights)", 127, 128},
                       Case{"qnnpack (u8 0..255, i8 weights)", 255, 128},
                       Case{"qnnpack, 7-bit weights (|w| <= 64)", 255, 64}}) {
    const long long bound = 2LL * c.x_max * c.w_max;
    std::printf("  %-38s 2 * %d * %d = %lld: AVX2 rung takes %s\n", c.preset, c.x_max, c.w_max,
                bound, maddubs_is_exact(c.x_max, c.w_max) ? "avx2_maddubs" : "avx2_widening");
  }
  // The library's own answer for the qnnpack case, under the rungs this CPU has
  // (machine-dependent: printed last).
  std::vector<int8_t> w(16 * 4, 0);
  w[0] = -128;
  const PackedWeightsI8 packed(w.data(), 16, 4);
  std::printf("library: maddubs_is_exact(255, 128) = %s; on this CPU, qnnpack case:",
              maddubs_is_exact(255, 128) ? "true" : "false");
  for (auto k : {Int8Kernel::avx2, Int8Kernel::automatic}) {
    const char* name = k == Int8Kernel::avx2 ? "avx2" : "auto";
    if (!int8_kernel_available(k)) {
      std::printf(" %s -> not available;", name);
      continue;
    }
    ScopedInt8Kernel scoped(k);
    std::printf(" %s -> %s;", name, to_string(select_int8_path(255, packed)));
  }
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, int (*)()> sections = {
      {"strides", strides}, {"graph", graph},         {"sgd", sgd},   {"adam", adam},
      {"staircase", staircase}, {"lsq", lsq},         {"im2col", im2col}, {"batchnorm", batchnorm},
      {"bnfold", bnfold},   {"grid", grid}, {"mobilenet", mobilenet},           {"paths", paths}};
  if (argc != 2 || !sections.count(argv[1])) {
    std::fprintf(stderr, "usage: tinyqat-figures SECTION\nsections:");
    for (const auto& [name, fn] : sections) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  }
  try {
    return sections.at(argv[1])();
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "tinyqat-figures %s: %s\n", argv[1], ex.what());
    return 1;
  }
}
