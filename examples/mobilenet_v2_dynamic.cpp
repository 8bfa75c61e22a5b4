// The first lesson of PyTorch's quantization tutorial, in tinyqat:
//
//     model = torchvision.models.mobilenet_v2(pretrained=True)
//     model_quantized = torch.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
//     print(model_quantized)
//
// Dynamic quantization turns every Linear into an int8 layer whose input is
// quantized batch by batch at run time (docs/dynamic.md). In MobileNetV2 the
// only Linear is the classifier (1280 -> 1000), so the convolutions stay float
// and the model shrinks by that layer's weights: 4 bytes each become 1.
//
// Run: ./build/examples/mobilenet_v2_dynamic [state_dict.safetensors]
// With a file (torchvision's state_dict saved as safetensors, PyTorch's key
// names) the pretrained weights are loaded; without one the model is
// initialised from seed 0, as torchvision initialises it.
#include <cstdio>
#include <iostream>
#include <typeindex>

#include "measure.h"
#include "tinyqat.h"

using namespace tq;

int main(int argc, char** argv) {
  manual_seed(0);
  auto model = models::mobilenet_v2();
  if (argc > 1) {
    io::load_state_dict_file(*model, argv[1]);
    std::printf("loaded pretrained weights from %s\n", argv[1]);
  } else {
    std::printf("no weights file given (nothing can be downloaded here): using torchvision's initialisation, seed 0\n");
  }
  model->eval();

  // A second copy to quantize, so both can be compared (PyTorch's
  // quantize_dynamic copies the model by default; tinyqat's works in place).
  auto quantized = models::mobilenet_v2();
  io::load_state_dict(*quantized, io::state_dict(*model));
  quant::quantize_dynamic(*quantized, {typeid(nn::Linear)}, DType::i8);
  quant::set_int8_threads(*quantized, 1);
  std::cout << *quantized << "\n\n";

  Generator g(1);
  const Tensor x = randn({1, 3, 224, 224}, g);
  Tensor y_float, y_int8;
  {
    NoGradGuard no_grad;
    y_float = (*model)(x);
    y_int8 = (*quantized)(x);
  }
  const float diff = kernels::max_all(kernels::abs(kernels::sub(y_float, y_int8)));
  const float scale = kernels::max_all(kernels::abs(y_float));
  std::printf("largest output difference: %.6g (largest |output| %.6g)\n", diff, scale);
  std::printf("state size: float %lld bytes, dynamic int8 %lld bytes (PyTorch 1.13's saved files: 14,258,573 and "
              "10,419,401)\n",
              static_cast<long long>(state_bytes(*model)), static_cast<long long>(state_bytes(*quantized)));
  std::printf("latency, 1x3x224x224: float %.2f ms, dynamic int8 %.2f ms (median of 7)\n", latency_ms(*model, x, 7),
              latency_ms(*quantized, x, 7));
  return 0;
}
