// The whole MobileNetV2 in int8: static quantization of the 224x224,
// 1000-class model, calibrated on random images.
//
//     model = torchvision.models.mobilenet_v2(pretrained=True).eval()
//     model.fuse_model()                       # torchvision's quantizable version
//     model.qconfig = torch.quantization.get_default_qconfig("x86")
//     torch.quantization.prepare(model, inplace=True)
//     for x in calibration_images: model(x)
//     torch.quantization.convert(model, inplace=True)
//     print(model)
//
// The seed's first lesson quantizes only the classifier (mobilenet_v2_dynamic).
// Here every layer becomes integer-only: each Conv2d + BatchNorm2d (+ ReLU6)
// is folded into one int8 convolution (depthwise ones too), each residual Add
// into a QuantizedAdd with two fixed-point multipliers, the pool and the
// classifier run on u8. No QuantStub, DeQuantStub or FloatFunctional is
// needed: the model takes float input and gives float output.
//
// Random images make the scales meaningless for accuracy (calibrate on real
// ones for that, docs/ptq.md); what this shows is that the whole graph
// quantizes and how close the int8 graph stays to the float one on the
// inputs it was calibrated for.
//
// Run: ./build/examples/mobilenet_v2_static [state_dict.safetensors]
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include "measure.h"
#include "tinyqat.h"

using namespace tq;

int main(int argc, char** argv) {
  manual_seed(0);
  auto model = models::mobilenet_v2();
  if (argc > 1) {
    io::load_state_dict_file(*model, argv[1]);
    std::printf("loaded pretrained weights from %s\n", argv[1]);
  }
  // Eight random images in batches of two: the observers see each layer's range.
  Generator g(1);
  std::vector<Tensor> calibration;
  for (int i = 0; i < 4; ++i) calibration.push_back(randn({2, 3, 224, 224}, g));
  if (argc <= 1) {
    // An untrained model's BatchNorms hold mean 0 and variance 1, which its
    // activations are far from: deep layers would output almost nothing and
    // every scale would sit at its floor. Training-mode passes (no gradient)
    // move the running statistics to what these images give.
    std::printf("no weights file given: torchvision's initialisation, seed 0, BatchNorm statistics from the images\n");
    NoGradGuard no_grad;
    model->train();
    for (int i = 0; i < 24; ++i) (*model)(calibration[static_cast<size_t>(i) % calibration.size()]);
  }
  model->eval();

  // The copy to quantize (convert works in place).
  auto quantized = models::mobilenet_v2();
  io::load_state_dict(*quantized, io::state_dict(*model));
  quantized->eval();
  quant::QuantizeOptions options;
  options.qconfig = quant::get_default_qconfig("x86");
  quant::quantize_static(
      *quantized, [&](nn::Module& m) { quant::calibrate(m, calibration); }, options);
  quant::set_int8_threads(*quantized, 1);
  std::cout << *quantized << "\n\n";

  // What each kind of module became.
  std::map<std::string, int> kinds;
  for (auto& [path, m] : quantized->named_modules())
    if (!path.empty()) ++kinds[m->type_name()];
  std::printf("modules after convert:");
  for (auto& [kind, n] : kinds) std::printf(" %s x%d,", kind.c_str(), n);
  std::printf("\n");

  Tensor y_float, y_int8;
  {
    NoGradGuard no_grad;
    y_float = (*model)(calibration[0]);
    y_int8 = kernels::to_float((*quantized)(calibration[0]));  // u8 logits with their scale -> float
  }
  const float diff = kernels::max_all(kernels::abs(kernels::sub(y_float, y_int8)));
  const float scale = kernels::max_all(kernels::abs(y_float));
  const Tensor a_float = kernels::argmax(y_float, 1), a_int8 = kernels::argmax(y_int8, 1);
  int same = 0;
  for (int64_t i = 0, i_end = a_float.numel(); i < i_end; ++i) same += a_float.data<int64_t>()[i] == a_int8.data<int64_t>()[i];
  std::printf("largest output difference on a calibration batch: %.4g (largest |output| %.4g); top-1 equal on %d of %lld\n",
              diff, scale, same, static_cast<long long>(a_float.numel()));
  std::printf("state size: float %lld bytes, int8 %lld bytes\n", static_cast<long long>(state_bytes(*model)),
              static_cast<long long>(state_bytes(*quantized)));
  const Tensor x = randn({1, 3, 224, 224}, g);
  std::printf("latency, 1x3x224x224, one thread: float %.2f ms, int8 %.2f ms (median of 5)\n", latency_ms(*model, x, 5),
              latency_ms(*quantized, x, 5));
  return 0;
}
