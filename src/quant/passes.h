// The eager-mode passes (docs/quantization.md §6): they walk the module tree
// and swap modules in their slots, driven by mapping tables from a module's
// type to the function that builds its replacement. Users may add entries.
// Beyond the tables, a pass knows layers only through quant/layer.h.
//
//   prepare_qat(model)   Linear / LinearReLU / LinearReLU6 -> QATLinear (fake
//                        quant on weights, outputs and float inputs)
//   prepare(model)       the same -> ObservedLinear (observers only)
//   convert(model)       any PreparedLayer -> the int8 layer it builds
//                        (QATLinear / ObservedLinear -> QuantizedLinear)
//   quantize_dynamic     Linear / LinearReLU / LinearReLU6 ->
//                        DynamicQuantizedLinear (no qconfig needed)
#pragma once

#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <typeindex>

#include "nn/module.h"
#include "quant/qconfig.h"

namespace tq::quant {

// Builds the replacement for `module` at `path` ("fc1") under `qconfig`.
using SwapFunction =
    std::function<std::shared_ptr<nn::Module>(nn::Module& module, const QConfig* qconfig, const std::string& path)>;
using ModuleMapping = std::map<std::type_index, SwapFunction>;

// The default tables (mutable: register your own module types here).
ModuleMapping& default_qat_module_mappings();
ModuleMapping& default_static_quant_module_mappings();
ModuleMapping& default_observed_module_mappings();  // for prepare (PTQ)
ModuleMapping& default_dynamic_quant_module_mappings();  // for quantize_dynamic

// The qconfig quantize_dynamic hands to its mapping's functions: only a
// weight observer, symmetric i8, per channel (axis 0) or per tensor.
QConfigPtr get_default_dynamic_qconfig(bool per_channel = true);

// Resolves each module's effective qconfig: its own if set, else its
// parent's (nullptr = stay float). Keys are dotted paths ("" = root).
std::map<std::string, QConfigPtr> propagate_qconfig(const nn::Module& model);

// In place. The model must have a qconfig on some module (usually the root).
void prepare_qat(nn::Module& model, const ModuleMapping& mapping = default_qat_module_mappings());
// In place, for post-training quantization: attaches observers; then run
// calibration batches through the model (in train or eval mode) and convert.
void prepare(nn::Module& model, const ModuleMapping& mapping = default_observed_module_mappings());
// In place. Every swapped layer must have seen data (else an error naming it).
void convert(nn::Module& model, const ModuleMapping& mapping = default_static_quant_module_mappings());

// In place: swaps every module whose type is in `types` (default: every type
// of default_dynamic_quant_module_mappings()) for its dynamic int8 version, as PyTorch's
// quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8). Only qint8 (i8
// weights) is supported. Returns how many modules were swapped; when nothing
// matches, the model is left as it was and a warning says so on stderr.
int quantize_dynamic(nn::Module& model, const std::set<std::type_index>& types = {},
                     DType dtype = DType::i8, bool per_channel = true);

// Sets the thread count of every int8 layer (every QuantizedLayer) in `model`: 0 = all cores, 1 = the calling thread
// only. Results do not depend on it. Returns how many layers were set.
int set_int8_threads(nn::Module& model, int threads);

}  // namespace tq::quant
