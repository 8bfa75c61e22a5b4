// The state of an optimizer or a learning-rate schedule (nn::StateDict) in a
// safetensors file, beside a model, for checkpoints (docs/optim.md §7):
// tensors under "<prefix>.<key>", the kind and the scalars as JSON in the
// metadata entry "<prefix>". Doubles are written in their shortest exact
// form, so a state read back is bit for bit the state saved.
//
//   io::SafetensorsFile file = io::model_to_safetensors(model);
//   io::put_state(file, "__optimizer__", optimizer.state_dict());
//   io::put_state(file, "__lr_scheduler__", schedule.state_dict());
//   io::save_safetensors(path, file);
//   ...
//   optimizer.load_state_dict(io::get_state(file, "__optimizer__", path));
#pragma once

#include <string>

#include "io/safetensors.h"
#include "nn/optimizer.h"

namespace tq::io {

// Adds the state's tensors and metadata to `file`; throws if `prefix` is
// empty or already used there.
void put_state(SafetensorsFile& file, const std::string& prefix, const nn::StateDict& state);
// Reads the state stored under `prefix`; throws FormatError naming `name`
// (the file) and what is missing or malformed.
nn::StateDict get_state(const SafetensorsFile& file, const std::string& prefix, const std::string& name);
// Does `file` hold a state under `prefix`?
bool has_state(const SafetensorsFile& file, const std::string& prefix);

}  // namespace tq::io
