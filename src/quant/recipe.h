// The two eager-mode recipes, each one call (docs/quantization.md §6,
// docs/ptq.md §1), with PyTorch's names:
//
//   quantize_qat(model, train, options)        quantize_static(model, calibrate, options)
//     fuse_known_modules     (options.fuse)      fuse_known_modules     (options.fuse)
//     qconfig on the root    (options.qconfig)   qconfig on the root    (options.qconfig)
//     options.configure(model): per-layer qconfigs, e.g. one layer kept in float
//     prepare_qat                                prepare
//     train(model) -> bool                       calibrate(model)
//     options.before_convert(model): the prepared model, trained or calibrated
//     convert                                    convert
//
// The training loop and the calibration data are the caller's: the library
// has no opinion on data sets or optimizers (quant::calibrate is one way to
// write `calibrate`). Everything happens in place.
#pragma once

#include <functional>

#include "nn/module.h"
#include "quant/qconfig.h"

namespace tq::quant {

struct QuantizeOptions {
  bool fuse = true;    // fuse each Linear + ReLU, Conv2d + BatchNorm2d + ReLU, ... first (fused.h)
  QConfigPtr qconfig = nullptr;  // set on the root module; null: the qconfigs the model already has
  // After the root qconfig, before prepare: e.g. per-layer bit widths.
  std::function<void(nn::Module&)> configure = {};
  // After training or calibration, before convert: e.g. evaluate the
  // fake-quant model, or save the observers.
  std::function<void(nn::Module&)> before_convert = {};
  // The model is already prepared (a QAT run resumed from a checkpoint):
  // fuse, qconfig, configure and prepare are skipped.
  bool prepared = false;
};

// Quantization-aware training, as PyTorch's quantize_qat: `train` fine-tunes
// the model with fake quantization in every layer and returns true; then the
// model is converted to int8. When `train` returns false (training stopped
// early, to be resumed from a checkpoint), the model is left prepared, not
// converted, and quantize_qat returns false.
bool quantize_qat(nn::Module& model, const std::function<bool(nn::Module&)>& train, const QuantizeOptions& options = {});

// Post-training static quantization, as PyTorch's quantize: `calibrate` runs
// representative inputs through the observers; then the model is converted.
void quantize_static(nn::Module& model, const std::function<void(nn::Module&)>& calibrate,
                     const QuantizeOptions& options = {});

}  // namespace tq::quant
