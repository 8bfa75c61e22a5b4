// Model files (docs/model_files.md): a safetensors file whose tensors are the
// model's parameters and buffers under their dotted names, in their own dtype
// (i8 weights stay i8), and whose __metadata__ ("tinyqat") describes the
// module tree: each module's type, its constructor arguments and qparams.
// A float, QAT, static-int8 or dynamic-int8 model loads back as it was,
// without running prepare / convert again.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "io/safetensors.h"
#include "nn/module.h"

namespace tq::io {

// The version written. Version 2 names a layer's fused activation
// ("activation": "none" | "relu" | "relu6") where version 1 had the bool
// "fused_relu"; files of every version up to this one load.
inline constexpr int kModelFormatVersion = 2;

// Saves atomically (temp file + rename). Extra key/values go to __metadata__.
void save_model(const nn::Module& model, const std::string& path,
                const std::map<std::string, std::string>& extra_metadata = {});

// Rebuilds a model made of library modules (Sequential, Linear, ReLU, QATLinear,
// QuantizedLinear, ...). A file of a user-defined module type cannot be
// rebuilt this way: construct the model in code and use load_into.
std::shared_ptr<nn::Module> load_model(const std::string& path);

// Loads into an existing model of the same structure: where the file has a
// different module type in a slot (e.g. QuantizedLinear where the model has
// a Linear), the file's module is built and put into the slot, then every
// parameter and buffer is restored. Throws naming the first mismatch.
void load_into(nn::Module& model, const std::string& path);

// The same from an already parsed file (`name` is used in messages).
std::shared_ptr<nn::Module> build_model(const SafetensorsFile& file, const std::string& name);
void load_into(nn::Module& model, const SafetensorsFile& file, const std::string& name);
SafetensorsFile model_to_safetensors(const nn::Module& model, const std::map<std::string, std::string>& extra = {});

// How a module type is written and rebuilt. `encode` fills the module's
// config (constructor arguments, qparams); `decode` builds a module from it,
// with `tensors` holding this module's own tensors (local names).
// `save_tensors`, when set, says which tensors are stored for the module
// (local names; an int8 layer stores its i8 weight, packed for 4 bits, and
// its float bias): such a module is always rebuilt from its config and those
// tensors at load. When unset, its parameters and buffers are stored and
// restored as they are.
struct ModuleCodec {
  std::function<void(const nn::Module&, nlohmann::json& config)> encode;
  std::function<std::shared_ptr<nn::Module>(const nlohmann::json& config, const std::map<std::string, Tensor>& tensors)>
      decode;
  std::function<void(const nn::Module&, std::map<std::string, Tensor>& tensors)> save_tensors = nullptr;
};
// The registry, keyed by Module::type_name(): every module kind that files
// hold has its entry. Users may register their own module types.
std::map<std::string, ModuleCodec>& module_codecs();

}  // namespace tq::io
