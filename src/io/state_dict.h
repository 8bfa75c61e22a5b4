// A model's state by name, as PyTorch's state_dict(): every parameter and
// buffer under its dotted path ("features.0.0.weight", "...running_mean").
// With safetensors files, this is the bridge to PyTorch: a state_dict saved
// by PyTorch (its key names, no tinyqat metadata) loads into the tinyqat
// model of the same architecture, and back.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "nn/module.h"

namespace tq::io {

using StateDict = std::map<std::string, Tensor>;

// Parameters and buffers by dotted name (the tensors themselves, not copies).
StateDict state_dict(const nn::Module& model);

struct LoadStateDictResult {
  std::vector<std::string> missing_keys;     // in the model, not in the file
  std::vector<std::string> unexpected_keys;  // in the file, not in the model
};

// Copies each entry into the model's tensor of the same name, in place
// (values converted to the tensor's dtype). A shape mismatch always throws,
// naming the key and both shapes. strict: missing or unexpected keys throw
// too, listing them; otherwise they are returned.
LoadStateDictResult load_state_dict(nn::Module& model, const StateDict& state, bool strict = true);

// The same from a safetensors file (`path` is named in every error).
LoadStateDictResult load_state_dict_file(nn::Module& model, const std::string& path, bool strict = true);
// Writes state_dict(model) as a plain safetensors file (no metadata).
void save_state_dict_file(const nn::Module& model, const std::string& path);

}  // namespace tq::io
