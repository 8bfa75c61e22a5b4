#include "quant/qconfig.h"

#include "quant/histogram_observer.h"

#include <stdexcept>

#include <fmt/format.h>

namespace tq::quant {

namespace {

FakeQuantFactory moving_average_fake_quant(QuantSpec spec) {
  return [spec]() -> std::shared_ptr<QParamsSource> {
    if (spec.per_channel())
      return std::make_shared<FakeQuantize>(std::make_shared<MovingAveragePerChannelMinMaxObserver>(spec));
    return std::make_shared<FakeQuantize>(std::make_shared<MovingAverageMinMaxObserver>(spec));
  };
}

FakeQuantFactory observer_factory(const std::string& kind, QuantSpec spec) {
  if (spec.per_channel()) {
    if (kind == "minmax" || kind == "histogram")
      return [spec]() -> std::shared_ptr<QParamsSource> { return std::make_shared<PerChannelMinMaxObserver>(spec); };
    if (kind == "moving_average")
      return [spec]() -> std::shared_ptr<QParamsSource> {
        return std::make_shared<MovingAveragePerChannelMinMaxObserver>(spec);
      };
  } else {
    if (kind == "minmax") return [spec]() -> std::shared_ptr<QParamsSource> { return std::make_shared<MinMaxObserver>(spec); };
    if (kind == "moving_average")
      return [spec]() -> std::shared_ptr<QParamsSource> { return std::make_shared<MovingAverageMinMaxObserver>(spec); };
    if (kind == "histogram")
      return [spec]() -> std::shared_ptr<QParamsSource> { return std::make_shared<HistogramObserver>(spec); };
  }
  throw std::invalid_argument(fmt::format("unknown observer '{}' (use minmax, moving_average or histogram)", kind));
}

}  // namespace

QConfigPtr get_default_qconfig(const std::string& backend) {
  if (backend == "x86" || backend == "fbgemm")
    return std::make_shared<QConfig>(QConfig{observer_factory("histogram", activation_spec(7)),
                                             observer_factory("minmax", weight_spec(8, QScheme::per_channel_symmetric)),
                                             backend + " PTQ"});
  if (backend == "qnnpack")
    return std::make_shared<QConfig>(QConfig{observer_factory("histogram", activation_spec(8)),
                                             observer_factory("minmax", weight_spec(8, QScheme::per_tensor_symmetric)),
                                             "qnnpack PTQ"});
  throw std::invalid_argument(fmt::format("get_default_qconfig: unknown backend '{}' (use x86, fbgemm or qnnpack)", backend));
}

QConfigPtr make_ptq_qconfig(const std::string& observer, int weight_bits, int activation_bits, bool per_channel_weights) {
  const QuantSpec w = weight_spec(weight_bits, per_channel_weights ? QScheme::per_channel_symmetric
                                                                   : QScheme::per_tensor_symmetric);
  return std::make_shared<QConfig>(QConfig{observer_factory(observer, activation_spec(activation_bits)),
                                           observer_factory("minmax", w),
                                           fmt::format("W{}A{} PTQ ({})", weight_bits, activation_bits, observer)});
}

QConfigPtr get_default_qat_qconfig(const std::string& backend) {
  if (backend == "x86" || backend == "fbgemm") {
    // fbgemm keeps activations to 7 bits ("reduce_range"): the int8 kernel's
    // vpmaddubsw then cannot saturate (docs/int8_kernel.md eq. 9).
    return std::make_shared<QConfig>(QConfig{moving_average_fake_quant(activation_spec(7)),
                                             moving_average_fake_quant(weight_spec(8, QScheme::per_channel_symmetric)),
                                             backend + " QAT"});
  }
  if (backend == "qnnpack") {
    return std::make_shared<QConfig>(QConfig{moving_average_fake_quant(activation_spec(8)),
                                             moving_average_fake_quant(weight_spec(8, QScheme::per_tensor_symmetric)),
                                             "qnnpack QAT"});
  }
  throw std::invalid_argument(fmt::format("get_default_qat_qconfig: unknown backend '{}' (use x86, fbgemm or qnnpack)", backend));
}

QConfigPtr make_qat_qconfig(int weight_bits, int activation_bits, bool per_channel_weights) {
  const QuantSpec act = activation_spec(activation_bits);
  const QuantSpec w = weight_spec(weight_bits, per_channel_weights ? QScheme::per_channel_symmetric
                                                                   : QScheme::per_tensor_symmetric);
  return std::make_shared<QConfig>(QConfig{moving_average_fake_quant(act), moving_average_fake_quant(w),
                                           fmt::format("W{}A{} QAT", weight_bits, activation_bits)});
}

QConfigPtr make_lsq_qat_qconfig(int weight_bits, int activation_bits, bool per_channel_weights, LsqInit weight_init,
                                LsqInit activation_init) {
  const QuantSpec act = activation_spec(activation_bits);
  const QuantSpec w = weight_spec(weight_bits, per_channel_weights ? QScheme::per_channel_symmetric
                                                                   : QScheme::per_tensor_symmetric);
  auto learnable = [](QuantSpec spec, LsqInit init) -> FakeQuantFactory {
    return [spec, init]() -> std::shared_ptr<QParamsSource> {
      return std::make_shared<LearnableFakeQuantize>(spec, LearnableFakeQuantizeOptions{.init = init});
    };
  };
  return std::make_shared<QConfig>(QConfig{learnable(act, activation_init), learnable(w, weight_init),
                                           fmt::format("W{}A{} LSQ QAT", weight_bits, activation_bits)});
}

}  // namespace tq::quant
