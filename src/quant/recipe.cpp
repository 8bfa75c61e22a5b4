#include "quant/recipe.h"

#include <stdexcept>

#include "quant/fused.h"
#include "quant/passes.h"

namespace tq::quant {

namespace {

// The steps both recipes share: with `qat` prepare_qat, else prepare. `run`
// returning false stops before convert.
bool run_recipe(nn::Module& model, bool qat, const std::function<bool(nn::Module&)>& run, const QuantizeOptions& o) {
  if (!o.prepared) {
    if (o.fuse) {
      // QAT keeps BatchNorm beside its convolution (ConvBn2d: its statistics
      // keep learning); for post-training quantization prepare folds it.
      if (qat) model.train();
      fuse_known_modules(model);
    }
    if (o.qconfig) model.qconfig = o.qconfig;
    if (o.configure) o.configure(model);
    if (qat) prepare_qat(model);
    else prepare(model);
  }
  if (!run(model)) return false;
  if (o.before_convert) o.before_convert(model);
  convert(model);
  return true;
}

}  // namespace

bool quantize_qat(nn::Module& model, const std::function<bool(nn::Module&)>& train, const QuantizeOptions& options) {
  if (!train) throw std::invalid_argument("quantize_qat: no training function given");
  return run_recipe(model, true, train, options);
}

void quantize_static(nn::Module& model, const std::function<void(nn::Module&)>& calibrate,
                     const QuantizeOptions& options) {
  if (!calibrate) throw std::invalid_argument("quantize_static: no calibration function given");
  run_recipe(
      model, false,
      [&](nn::Module& m) {
        calibrate(m);
        return true;
      },
      options);
}

}  // namespace tq::quant
