// state_dict: PyTorch-named parameters and buffers in and out of safetensors.
#include "io/state_dict.h"

#include "nn/model_snapshot.h"

#include <set>
#include <stdexcept>

#include <fmt/format.h>

#include "io/safetensors.h"
#include "tensor/ops.h"

namespace tq::io {

StateDict state_dict(const nn::Module& model) {
  StateDict out;
  for (auto& [name, t] : model.named_parameters()) out[name] = t;
  for (auto& [name, t] : model.named_buffers()) out[name] = t;
  return out;
}

static std::string join_keys(const std::vector<std::string>& keys) {
  std::string s;
  for (size_t i = 0; i < keys.size() && i < 8; ++i) s += (i ? ", " : "") + keys[i];
  if (keys.size() > 8) s += fmt::format(", ... ({} in all)", keys.size());
  return s;
}

static LoadStateDictResult load_named(nn::Module& model, const StateDict& state, bool strict,
                                      const std::string& source) {
  const StateDict own = state_dict(model);
  LoadStateDictResult r;
  for (auto& [name, t] : own)
    if (!state.count(name)) r.missing_keys.push_back(name);
  for (auto& [name, t] : state)
    if (!own.count(name)) r.unexpected_keys.push_back(name);
  if (strict && (!r.missing_keys.empty() || !r.unexpected_keys.empty()))
    throw std::invalid_argument(fmt::format("load_state_dict{}: the keys do not match the {}. Missing: [{}]. Unexpected: [{}]",
                                            source, model.type_name(), join_keys(r.missing_keys),
                                            join_keys(r.unexpected_keys)));
  // Check every shape before copying anything, so a failed load leaves the model as it was.
  for (auto& [name, t] : own) {
    auto it = state.find(name);
    if (it == state.end()) continue;
    if (!(it->second.shape() == t.shape()))
      throw std::invalid_argument(fmt::format("load_state_dict{}: '{}' has shape {} in the state, but {} in the model",
                                              source, name, it->second.shape().str(), t.shape().str()));
  }
  // Values are checked by each module after the copy (a fake quant's scale,
  // BatchNorm's running variance): every module, children first, as the
  // model-file reader does; one that refuses puts the old values back.
  const nn::ModelSnapshot before = nn::ModelSnapshot::take(model);
  for (auto& [name, t] : own) {
    auto it = state.find(name);
    if (it != state.end()) kernels::copy_(t, it->second);
  }
  auto modules = model.named_modules();
  for (auto it = modules.rbegin(); it != modules.rend(); ++it) {
    try {
      it->second->on_state_loaded();
    } catch (const std::invalid_argument& e) {
      before.restore(model);
      throw std::invalid_argument(fmt::format("load_state_dict{}: module '{}': {}", source, it->first, e.what()));
    }
  }
  return r;
}

LoadStateDictResult load_state_dict(nn::Module& model, const StateDict& state, bool strict) {
  return load_named(model, state, strict, "");
}

LoadStateDictResult load_state_dict_file(nn::Module& model, const std::string& path, bool strict) {
  const SafetensorsFile file = load_safetensors(path);
  return load_named(model, file.tensors, strict, " (" + path + ")");
}

void save_state_dict_file(const nn::Module& model, const std::string& path) {
  SafetensorsFile file;
  for (auto& [name, t] : state_dict(model)) file.tensors[name] = kernels::contiguous(t);
  save_safetensors(path, file);
}

}  // namespace tq::io
