// Model files: the module tree written into a safetensors file's metadata,
// and read back by load_model / load_into (docs/model_files.md). How each
// module type is written and rebuilt is its codec (module_codecs.cpp).
#include "io/model_file.h"

#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/model_limits.h"
#include "quant/observer.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace tq::io {

using json = nlohmann::json;
using TensorMap = std::map<std::string, Tensor>;
namespace q = tq::quant;

namespace {

// Are a module's tensors simply its parameters and buffers, stored and
// restored as they are? Not for a codec with its own save_tensors.
bool stores_own_tensors_generically(const nn::Module& m) {
  auto it = module_codecs().find(m.type_name());
  return it == module_codecs().end() || !it->second.save_tensors;
}

// ---- Tree encoding ----

json encode_tree(const nn::Module& m) {
  json node = {{"type", m.type_name()}};
  json config = json::object();
  auto& codecs = module_codecs();
  if (auto it = codecs.find(m.type_name()); it != codecs.end()) it->second.encode(m, config);
  node["config"] = config;
  json children = json::array();
  for (auto& s : m.children()) children.push_back({{"name", s->name}, {"module", encode_tree(*s->module)}});
  node["children"] = children;
  return node;
}

// The file's tensors grouped by the module they belong to: "a.b.weight" is
// tensor "weight" of module "a.b". Built once, in O(n log n), so that each
// module finds its own tensors without a pass over the whole file (which made
// loading quadratic in the number of modules).
struct TensorIndex {
  explicit TensorIndex(const TensorMap& all) {
    for (auto& [name, t] : all) {
      const size_t dot = name.rfind('.');
      if (dot == std::string::npos) by_module[""][name] = t;
      else by_module[name.substr(0, dot)][name.substr(dot + 1)] = t;
    }
  }
  // The tensors of module `path` (local names).
  const TensorMap& local(const std::string& path) const {
    static const TensorMap none;
    auto it = by_module.find(path);
    return it == by_module.end() ? none : it->second;
  }
  std::map<std::string, TensorMap> by_module;
};

std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

// node["children"]: an array (an empty one when the key is absent), by reference.
const json& children_of(const json& node, const std::string& path, const std::string& file) {
  static const json none = json::array();
  auto it = node.find("children");
  if (it == node.end()) return none;
  if (!it->is_array()) throw FormatError(fmt::format("{}: the children of '{}' are not a list", file, path));
  return *it;
}

// Counts the modules of the description before any is built: a tree deeper
// than kMaxModuleDepth or larger than kMaxModules is refused by name.
void count_modules(const json& node, const std::string& path, const std::string& file, int depth, size_t& count) {
  if (depth > kMaxModuleDepth)
    throw FormatError(fmt::format("{}: module tree is nested too deeply (more than {} levels, the limit kMaxModuleDepth)",
                                  file, kMaxModuleDepth));
  if (++count > kMaxModules)
    throw FormatError(fmt::format("{}: the model has more than {} modules (the limit kMaxModules)", file, kMaxModules));
  if (!node.is_object()) return;  // reported by the decoder, with the module's path
  for (const json& child : children_of(node, path, file))
    if (child.is_object() && child.contains("module"))
      count_modules(child["module"], child.contains("name") && child["name"].is_string() ? join(path, child["name"].get<std::string>()) : path,
                    file, depth + 1, count);
}

std::shared_ptr<nn::Module> decode_tree(const json& node, const TensorIndex& all, const std::string& path,
                                        const std::string& file, int depth) {
  if (depth > kMaxModuleDepth) throw FormatError(fmt::format("{}: module tree is nested too deeply", file));
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string())
    throw FormatError(fmt::format("{}: module '{}' has no type", file, path));
  const std::string type = node["type"].get<std::string>();
  auto& codecs = module_codecs();
  auto it = codecs.find(type);
  if (it == codecs.end())
    throw FormatError(fmt::format("{}: module '{}' has type {}, which load_model cannot build; construct the model in "
                                  "code and use load_into",
                                  file, path.empty() ? "(root)" : path, type));
  std::shared_ptr<nn::Module> m;
  try {
    static const json no_config = json::object();
    auto config = node.find("config");
    m = it->second.decode(config == node.end() ? no_config : *config, all.local(path));
  } catch (const FormatError& e) {
    throw FormatError(fmt::format("{}: module '{}': {}", file, path, e.what()));
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: module '{}' ({}) has a bad config: {}", file, path, type, e.what()));
  } catch (const std::invalid_argument& e) {
    throw FormatError(fmt::format("{}: module '{}' ({}): {}", file, path, type, e.what()));
  }
  std::set<std::string> seen;
  for (const json& child : children_of(node, path, file)) {
    if (!child.is_object() || !child.contains("name") || !child["name"].is_string() || !child.contains("module"))
      throw FormatError(fmt::format("{}: a child of '{}' has no name or module", file, path));
    const std::string name = child["name"].get<std::string>();
    if (!seen.insert(name).second)
      throw FormatError(fmt::format("{}: module '{}' has two children named '{}'", file, path, name));
    auto c = decode_tree(child["module"], all, join(path, name), file, depth + 1);
    if (auto slot = m->find_slot(name)) slot->module = c;
    else m->register_slot(name, c);
  }
  return m;
}

// A module of the model that load_into replaces by the file's, and the module it held.
struct Swap {
  std::shared_ptr<nn::ModuleSlot> slot;
  std::shared_ptr<nn::Module> replacement;
};

// Does the model's module `m` in a slot give way to the file's `node`? Where
// the types differ; always for quantized layers, whose state lives in their
// config and packed tensors rather than in parameters; and for observers and
// fake quants whose settings (spec, enabled flags) differ from the file's.
bool rebuild_from_file(const nn::Module& m, const json& node) {
  const std::string type = node.at("type").get<std::string>();
  if (m.type_name() != type || !stores_own_tensors_generically(m)) return true;
  if (!dynamic_cast<const q::QParamsSource*>(&m)) return false;
  auto& codecs = module_codecs();
  auto it = codecs.find(type);
  if (it == codecs.end()) return false;
  json config = json::object();
  it->second.encode(m, config);
  return config != node.value("config", json::object());
}

// The shape of a module's own tensor "weight" (a parameter, or the i8
// buffer of an int8 layer), or an empty shape: what says a layer's size.
Shape weight_shape(const nn::Module& m) {
  for (auto& [name, p] : m.named_parameters(false))
    if (name == "weight") return p.shape();
  const Tensor b = m.buffer("weight");
  return b.defined() ? b.shape() : Shape{};
}

// A layer's size in words: in/out features for a 2-D weight (out, in).
std::string describe_size(const Shape& w) {
  return w.size() == 2 ? fmt::format("in_features={}, out_features={}", w[1], w[0]) : "weight of shape " + w.str();
}

// Plans which slots of `m` get the file's modules (built here, not yet put
// in), so that a file that does not fit changes nothing.
void plan_adoption(nn::Module& m, const json& node, const TensorIndex& all, const std::string& path,
                   const std::string& file, int depth, std::vector<Swap>& swaps) {
  if (depth > kMaxModuleDepth) throw FormatError(fmt::format("{}: module tree is nested too deeply", file));
  const json& children = children_of(node, path, file);
  std::set<std::string> seen;
  for (const json& child : children) {
    if (!child.is_object() || !child.contains("name") || !child["name"].is_string() || !child.contains("module") ||
        !child["module"].is_object() || !child["module"].contains("type") || !child["module"]["type"].is_string())
      throw FormatError(fmt::format("{}: a child of '{}' has no name, module or type", file, path));
    const std::string name = child["name"].get<std::string>();
    if (!seen.insert(name).second)
      throw FormatError(fmt::format("{}: module '{}' has two children named '{}'", file, path, name));
    auto slot = m.find_slot(name);
    if (!slot)
      throw std::invalid_argument(fmt::format("{}: the file has a module '{}' that the model does not have", file, join(path, name)));
    if (rebuild_from_file(*slot->module, child["module"])) {
      auto replacement = decode_tree(child["module"], all, join(path, name), file, depth + 1);
      // A layer of another kind may replace the model's, not one of another size.
      const Shape have = weight_shape(*slot->module), got = weight_shape(*replacement);
      if (!have.empty() && !got.empty() && !(have == got))
        throw std::invalid_argument(fmt::format("{}: module '{}' is {} with {} in the file but {} with {} in the model",
                                                file, join(path, name), replacement->type_name(), describe_size(got),
                                                slot->module->type_name(), describe_size(have)));
      swaps.push_back({slot, replacement});
    }
    else
      plan_adoption(*slot->module, child["module"], all, join(path, name), file, depth + 1, swaps);
  }
  // Every child of the file was found in the model, names distinct: the
  // model has more when the counts differ.
  if (seen.size() != m.children().size())
    for (auto& s : m.children())
      if (!seen.count(s->name))
        throw std::invalid_argument(fmt::format("{}: the model has a module '{}' that the file does not have", file, join(path, s->name)));
}

// Checks that the file holds every parameter of `model` with its shape and
// dtype, and every buffer; changes nothing. Throws naming the first mismatch.
void check_state(const nn::Module& model, const TensorMap& all, const std::string& file) {
  for (auto& [path, m] : model.named_modules()) {
    if (!stores_own_tensors_generically(*m)) continue;
    for (auto& [name, p] : m->named_parameters(false)) {
      const std::string full = join(path, name);
      auto it = all.find(full);
      if (it == all.end()) throw std::invalid_argument(fmt::format("{}: parameter '{}' is missing from the file", file, full));
      if (!(it->second.shape() == p.shape()) || it->second.dtype() != p.dtype())
        throw std::invalid_argument(fmt::format("{}: parameter '{}' is {} {} in the file but {} {} in the model", file, full,
                                                dtype_name(it->second.dtype()), it->second.shape().str(),
                                                dtype_name(p.dtype()), p.shape().str()));
    }
    for (auto& [name, b] : m->named_buffers(false)) {
      const std::string full = join(path, name);
      if (!all.count(full)) throw std::invalid_argument(fmt::format("{}: buffer '{}' is missing from the file", file, full));
    }
  }
}

// Restores every parameter and buffer of `model` from the file's tensors.
void restore_state(nn::Module& model, const TensorMap& all, const std::string& file) {
  check_state(model, all, file);
  for (auto& [path, m] : model.named_modules()) {
    if (!stores_own_tensors_generically(*m)) continue;
    for (auto& [name, p] : m->named_parameters(false)) kernels::copy_(p, all.at(join(path, name)));
    for (auto& [name, b] : m->named_buffers(false)) {
      const Tensor& t = all.at(join(path, name));
      if (t.shape() == b.shape() && t.dtype() == b.dtype()) kernels::copy_(b, t);
      else m->set_buffer(name, kernels::clone(t));
    }
  }
  // Children first, so a parent sees its children's restored state.
  auto modules = model.named_modules();
  for (auto it = modules.rbegin(); it != modules.rend(); ++it) {
    try {
      it->second->on_state_loaded();
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("{}: module '{}': {}", file, it->first, e.what()));
    }
  }
}

const json& model_tree(const SafetensorsFile& file, const std::string& name) {
  static thread_local json parsed;
  auto it = file.metadata.find("tinyqat");
  if (it == file.metadata.end()) throw FormatError(fmt::format("{}: not a tinyqat model file (no 'tinyqat' metadata)", name));
  // The description is a JSON text inside the header's metadata: the
  // header's own limits do not see into it, and the parser recurses.
  check_json_limits(it->second, name, "the model description", kMaxDescriptionDepth);
  try {
    parsed = json::parse(it->second);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: the model description is not valid JSON ({})", name, e.what()));
  }
  if (!parsed.is_object() || parsed.value("format", "") != "tinyqat-model")
    throw FormatError(fmt::format("{}: the metadata does not describe a tinyqat model", name));
  const json version = parsed.value("version", json(0));
  if (!version.is_number_integer() || version.get<int64_t>() < 1 || version.get<int64_t>() > kModelFormatVersion)
    throw FormatError(fmt::format("{}: model format version {} is not supported (expected 1 to {})", name,
                                  version.dump().substr(0, 20), kModelFormatVersion));
  if (!parsed.contains("model")) throw FormatError(fmt::format("{}: the metadata has no module tree", name));
  size_t modules = 0;
  count_modules(parsed["model"], "", name, 0, modules);
  return parsed;
}

}  // namespace


SafetensorsFile model_to_safetensors(const nn::Module& model, const std::map<std::string, std::string>& extra) {
  SafetensorsFile file;
  for (auto& [path, m] : model.named_modules()) {
    auto codec = module_codecs().find(m->type_name());
    if (codec != module_codecs().end() && codec->second.save_tensors) {
      TensorMap own;
      codec->second.save_tensors(*m, own);
      for (auto& [name, t] : own) file.tensors[join(path, name)] = t;
      continue;
    }
    for (auto& [name, p] : m->named_parameters(false)) file.tensors[join(path, name)] = p.detach();
    for (auto& [name, b] : m->named_buffers(false)) file.tensors[join(path, name)] = b.detach();
  }
  json meta = {{"format", "tinyqat-model"}, {"version", kModelFormatVersion}, {"model", encode_tree(model)}};
  file.metadata = extra;
  file.metadata["tinyqat"] = meta.dump();
  return file;
}

void save_model(const nn::Module& model, const std::string& path, const std::map<std::string, std::string>& extra) {
  save_safetensors(path, model_to_safetensors(model, extra));
}

std::shared_ptr<nn::Module> build_model(const SafetensorsFile& file, const std::string& name) {
  const json meta = model_tree(file, name);
  // Constructing the modules draws initial weights from the default
  // generator; they are overwritten by the file's. Loading a model must not
  // shift the caller's random sequence, so the generator is put back.
  Generator& rng = default_generator();
  const Generator::State saved = rng.state();
  std::shared_ptr<nn::Module> model;
  try {
    model = decode_tree(meta["model"], TensorIndex(file.tensors), "", name, 0);
  } catch (const FormatError&) {
    rng.set_state(saved);
    throw;
  } catch (const std::exception& e) {
    // A constructor refused what the file describes (a bad module name, a
    // size it cannot take): a defect of the file, so say which file.
    rng.set_state(saved);
    throw FormatError(fmt::format("{}: {}", name, e.what()));
  }
  rng.set_state(saved);
  // The model was built from the file itself: a mismatch is a defect of the file.
  try {
    restore_state(*model, file.tensors, name);
  } catch (const std::invalid_argument& e) {
    throw FormatError(e.what());
  }
  return model;
}

void load_into(nn::Module& model, const SafetensorsFile& file, const std::string& name) {
  const json meta = model_tree(file, name);
  // Everything that can fail is checked before the model changes, so a file
  // that does not fit leaves the model as it was.
  std::vector<Swap> swaps;
  try {
    plan_adoption(model, meta["model"], TensorIndex(file.tensors), "", name, 0, swaps);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: bad module tree ({})", name, e.what()));
  }
  std::vector<std::shared_ptr<nn::Module>> previous;
  for (Swap& s : swaps) {
    previous.push_back(s.slot->module);
    s.slot->module = s.replacement;
  }
  try {
    check_state(model, file.tensors, name);
  } catch (...) {
    for (size_t i = 0; i < swaps.size(); ++i) swaps[i].slot->module = previous[i];
    throw;
  }
  restore_state(model, file.tensors, name);
}

std::shared_ptr<nn::Module> load_model(const std::string& path) { return build_model(load_safetensors(path), path); }

void load_into(nn::Module& model, const std::string& path) { load_into(model, load_safetensors(path), path); }

}  // namespace tq::io
