// The QAT schedule (docs/optim.md §8): switches that walk a prepared model
// and turn its quantizers' observers, fake quant and learned step sizes on
// or off, as PyTorch's model.apply(torch.ao.quantization.disable_observer);
// a table of BatchNorm-freezing functions for the layers that have batch
// statistics; the LSQ parameter groups; and the fine-tuning rate.
//
//   auto groups = quant::lsq_param_groups(model, /*quantizer_lr=*/1e-4);
//   nn::AdamW opt(groups, {.lr = quant::qat_fine_tune_lr(1e-3)});
//   for (int epoch = 0; epoch < epochs; ++epoch) {
//     quant::apply_qat_schedule(model, {.freeze_observers_epoch = 3}, epoch);
//     ... train one epoch ...
//   }
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <typeindex>
#include <vector>

#include "nn/module.h"
#include "nn/optimizer.h"

namespace tq::quant {

// ---- Switches over a whole model; each returns how many modules it changed ----
//
// Observers feed the quantizers' qparams during training: FakeQuantize's
// (recomputed from the observer each batch) and LearnableFakeQuantize's
// static estimate. Off, a FakeQuantize keeps the qparams it last used.
int disable_observer(nn::Module& model);
int enable_observer(nn::Module& model);
// Fake quant off: the quantizers pass their input through unchanged.
int disable_fake_quant(nn::Module& model);
int enable_fake_quant(nn::Module& model);
// Freezes every quantizer's qparams: observers off, and LSQ's scales (and
// zero points) no longer learn: their gradients are dropped, so an
// optimizer skips them (momentum or Adam's moments cannot move them either).
int freeze_qparams(nn::Module& model);

// ---- BatchNorm statistics ----
//
// Once batch statistics have settled, QAT stops updating the running mean
// and variance (PyTorch's freeze_bn_stats), so the folded weights stop
// moving. freeze_bn_stats(model) visits every module and freezes those that
// know how: a module that derives from FreezesBnStats (a fused Conv+BN QAT
// layer, say) has its freeze_bn_stats() method called; a module of a type
// registered in the table below has its function called. Either way the
// schedule needs to know nothing of the layer types.
class FreezesBnStats {
 public:
  virtual ~FreezesBnStats() = default;
  // From now on the running mean and variance stay as they are.
  virtual void freeze_bn_stats() = 0;
};
using FreezeBnStatsFunction = std::function<void(nn::Module&)>;
std::map<std::type_index, FreezeBnStatsFunction>& freeze_bn_stats_functions();
// Returns how many modules it froze (the method or the table, never both).
int freeze_bn_stats(nn::Module& model);

// ---- The schedule, applied at the start of each epoch (0-based) ----
struct QatSchedule {
  int freeze_observers_epoch = -1;  // from this epoch on: disable_observer (-1: never)
  int freeze_qparams_epoch = -1;    // from this epoch on: freeze_qparams, LSQ scales included
  int freeze_bn_epoch = -1;         // from this epoch on: freeze_bn_stats
};
struct QatScheduleChanges {
  int observers_disabled = 0, qparams_frozen = 0, bn_frozen = 0;  // modules switched at this call
};
// Idempotent: calling it again for the same or a later epoch changes nothing more.
QatScheduleChanges apply_qat_schedule(nn::Module& model, const QatSchedule& schedule, int epoch);

// ---- Learning rates for QAT ----

// The dotted names of the quantizers' own parameters (LSQ's "scale" and
// "zero_point"), found by walking the model for quantizer modules.
std::vector<std::string> quantizer_parameter_names(const nn::Module& model);

// Two optimizer groups: "weights" (every other parameter, the optimizer's
// rate and weight decay) and "quantizers" (LSQ's step sizes and zero
// points, with quantizer_lr, or the optimizer's rate when unset, and
// quantizer_weight_decay, 0 by default: decay would pull the step sizes to
// zero). A model without learnable quantizers gets the "weights" group only.
std::vector<nn::ParamGroup> lsq_param_groups(const nn::Module& model, std::optional<double> quantizer_lr = std::nullopt,
                                             double quantizer_weight_decay = 0.0);

// Fine-tuning a trained float model with fake quant starts near a good
// solution: a fraction of the float rate and of its schedule suffices
// (docs/optim.md §8; PyTorch's guidance is about 1% and about 10%).
inline constexpr double kQatLrFraction = 0.01;
inline constexpr double kQatScheduleFraction = 0.1;
inline double qat_fine_tune_lr(double float_lr) { return float_lr * kQatLrFraction; }

}  // namespace tq::quant
