// Dynamic quantization in one line, as in PyTorch:
//
//     model = torch.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
//
// Every Linear becomes a DynamicQuantizedLinear: its weights are quantized to
// int8 once, now; its input is quantized at run time, batch by batch, from
// that batch's own min / max (docs/dynamic.md eq. 1-3). No qconfig, no
// calibration data, float in and float out.
// Run: ./build/examples/dynamic_quant
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <typeindex>

#include "tinyqat.h"

using namespace tq;

// A classifier head: 256 features in (say, from an encoder), 10 classes out.
struct ClassifierHead : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(256, 512));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(512, 256));
  nn::Slot<nn::Linear> fc3 = register_module("fc3", nn::Linear(256, 10));
  Tensor forward(const Tensor& x) override { return fc3(relu(fc2(relu(fc1(x))))); }
};

// Seeded toy features: 10 Gaussian clusters in 256-D.
static void make_data(int64_t n, uint64_t seed, Tensor& x, Tensor& y) {
  Generator centres_gen(42), g(seed);
  const std::vector<float> centres = to_vector(randn({10, 256}, centres_gen));
  y = randint(0, 10, {n}, g);
  std::vector<float> values = to_vector(randn({n, 256}, g));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = static_cast<int64_t>(y.at({i}));
    for (int64_t j = 0; j < 256; ++j)
      values[static_cast<size_t>(i * 256 + j)] += 0.2f * centres[static_cast<size_t>(c * 256 + j)];
  }
  x = from_vector(values, {n, 256});
}

static double accuracy(nn::Module& model, const Tensor& x, const Tensor& y) {
  NoGradGuard no_grad;
  const Tensor pred = argmax(model(x), 1);
  int64_t correct = 0;
  for (int64_t i = 0; i < x.size(0); ++i) correct += pred.at({i}) == y.at({i});
  return 100.0 * static_cast<double>(correct) / static_cast<double>(x.size(0));
}

// Bytes of the layers' weight matrices (biases stay f32 in both models).
static int64_t weight_bytes(nn::Module& model) {
  int64_t bytes = 0;
  for (auto& [name, t] : model.named_parameters())
    if (name.ends_with(".weight")) bytes += t.numel() * static_cast<int64_t>(dtype_size(t.dtype()));
  for (auto& [name, t] : model.named_buffers())
    if (name.ends_with(".weight")) bytes += t.numel() * static_cast<int64_t>(dtype_size(t.dtype()));
  return bytes;
}

int main() {
  // ---- 1. A float model, trained a little ----
  manual_seed(0);
  Tensor x_train, y_train, x_test, y_test;
  make_data(4000, 1, x_train, y_train);
  make_data(1000, 2, x_test, y_test);
  ClassifierHead model;
  nn::SGD optimizer(model.parameters(), {.lr = 0.02, .momentum = 0.9});
  nn::CrossEntropyLoss criterion;
  for (int epoch = 0; epoch < 3; ++epoch)
    for (int64_t b = 0; b < 4000; b += 100) {
      optimizer.zero_grad();
      criterion(model(slice(x_train, 0, b, b + 100)), slice(y_train, 0, b, b + 100)).backward();
      optimizer.step();
    }
  model.eval();

  // quantize_dynamic swaps modules in place; keep a float twin to compare with
  // (same architecture, parameters copied by name).
  ClassifierHead float_model;
  for (auto& [name, p] : float_model.named_parameters())
    for (auto& [src_name, src] : model.named_parameters())
      if (name == src_name) std::copy_n(src.data<float>(), src.numel(), p.data<float>());
  float_model.eval();

  std::cout << "Before:\n" << model << "\n\n";
  const int64_t bytes_before = weight_bytes(model);

  // ---- 2. The one line ----
  const int swapped = quant::quantize_dynamic(model, {std::type_index(typeid(nn::Linear))}, DType::i8);

  std::cout << "After quantize_dynamic (" << swapped << " layers swapped):\n" << model << "\n\n";

  // ---- 3. What changed in the outputs ----
  Tensor y_float, y_int8;
  {
    NoGradGuard no_grad;
    y_float = float_model(x_test);
    y_int8 = model(x_test);  // float in, float out: the user's forward is unchanged
  }
  float max_diff = 0, max_abs = 0;
  const std::vector<float> a = to_vector(y_float), b = to_vector(y_int8);
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(a[i] - b[i]));
    max_abs = std::max(max_abs, std::fabs(a[i]));
  }
  std::printf("logits on 1000 test points: max |int8 - float| = %.5f (max |float| = %.3f), SQNR %.1f dB\n", max_diff,
              max_abs, quant::sqnr_db(y_float, y_int8));
  const Tensor p_float = argmax(y_float, 1), p_int8 = argmax(y_int8, 1);
  int64_t same = 0;
  for (int64_t i = 0; i < 1000; ++i) same += p_float.at({i}) == p_int8.at({i});
  std::printf("accuracy: float %.2f%%, dynamic int8 %.2f%%; the two predict the same class on %.1f%%\n\n",
              accuracy(float_model, x_test, y_test), accuracy(model, x_test, y_test), static_cast<double>(same) / 10.0);
  // Layer by layer: each layer's output in the int8 model against the same
  // layer's in the float model (errors of earlier layers included).
  std::cout << quant::format_comparison(quant::compare_model_outputs(float_model, model, x_test),
                                        "per-layer output SQNR (float model vs dynamic int8 model):")
            << "\n";

  // ---- 4. What changed in memory ----
  const int64_t bytes_after = weight_bytes(model);
  std::printf("weight bytes: float %lld, int8 %lld (%.1fx smaller)\n", static_cast<long long>(bytes_before),
              static_cast<long long>(bytes_after), static_cast<double>(bytes_before) / static_cast<double>(bytes_after));
  return 0;
}
