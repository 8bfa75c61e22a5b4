// Optimizer and schedule states in safetensors files (docs/optim.md §7).
#include "io/training_state.h"

#include <cmath>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace tq::io {

void put_state(SafetensorsFile& file, const std::string& prefix, const nn::StateDict& state) {
  if (prefix.empty()) throw std::invalid_argument("put_state: empty prefix");
  if (file.metadata.count(prefix))
    throw std::invalid_argument(fmt::format("put_state: the file already has a state '{}'", prefix));
  nlohmann::json scalars = nlohmann::json::object();
  for (const auto& [key, value] : state.scalars) {
    if (!std::isfinite(value))
      throw std::invalid_argument(fmt::format("put_state: {} value '{}' is {}, which a file cannot hold exactly",
                                              state.kind, key, value));
    scalars[key] = value;
  }
  nlohmann::json tensor_names = nlohmann::json::array();
  for (const auto& [key, t] : state.tensors) {
    const std::string name = prefix + "." + key;
    if (file.tensors.count(name)) throw std::invalid_argument(fmt::format("put_state: tensor '{}' exists already", name));
    file.tensors[name] = t;
    tensor_names.push_back(key);
  }
  file.metadata[prefix] = nlohmann::json{{"kind", state.kind}, {"scalars", scalars}, {"tensors", tensor_names}}.dump();
}

bool has_state(const SafetensorsFile& file, const std::string& prefix) { return file.metadata.count(prefix) != 0; }

nn::StateDict get_state(const SafetensorsFile& file, const std::string& prefix, const std::string& name) {
  auto it = file.metadata.find(prefix);
  if (it == file.metadata.end()) throw FormatError(fmt::format("{}: no '{}' state in the file", name, prefix));
  nn::StateDict s;
  try {
    const auto j = nlohmann::json::parse(it->second);
    s.kind = j.at("kind").get<std::string>();
    for (const auto& [key, value] : j.at("scalars").items()) {
      if (!value.is_number())
        throw FormatError(fmt::format("{}: '{}' value '{}' is not a number", name, prefix, key));
      s.scalars[key] = value.get<double>();
    }
    for (const auto& key_json : j.at("tensors")) {
      const std::string key = key_json.get<std::string>();
      auto t = file.tensors.find(prefix + "." + key);
      if (t == file.tensors.end())
        throw FormatError(fmt::format("{}: the '{}' state names tensor '{}', which the file lacks", name, prefix, key));
      s.tensors[key] = t->second;
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: bad '{}' state ({})", name, prefix, e.what()));
  }
  return s;
}

}  // namespace tq::io
