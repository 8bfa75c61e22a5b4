// Module: registration, dotted names, slot replacement, modes and the
// PyTorch-style tree printout (docs/nn.md).
#include "nn/module.h"

#include <cxxabi.h>

#include <cstdlib>
#include <ostream>
#include <sstream>
#include <typeinfo>

#include <fmt/format.h>

namespace tq::nn {

std::string demangled_type_name(const Module& m) {
  int status = 0;
  char* raw = abi::__cxa_demangle(typeid(m).name(), nullptr, nullptr, &status);
  std::string name = status == 0 && raw ? raw : typeid(m).name();
  std::free(raw);
  // Drop namespaces and template arguments: "tq::nn::Linear" -> "Linear".
  const auto lt = name.find('<');
  if (lt != std::string::npos) name = name.substr(0, lt);
  const auto colon = name.rfind("::");
  return colon == std::string::npos ? name : name.substr(colon + 2);
}

Tensor Module::forward(const Tensor&) {
  throw std::logic_error(type_name() + " has no forward(Tensor); call the module the way its class defines");
}

Tensor Module::forward(const Tensor&, const Tensor&) {
  throw std::logic_error(type_name() + " has no forward(Tensor, Tensor); it takes one input");
}

static void check_new_name(const std::string& name, const std::string& owner) {
  if (name.empty() || name.find('.') != std::string::npos)
    throw std::invalid_argument(fmt::format("{}: invalid name '{}' (must be non-empty, without '.')", owner, name));
}

Tensor Module::register_parameter(const std::string& name, Tensor t, bool requires_grad) {
  check_new_name(name, type_name());
  for (auto& [n, p] : params_)
    if (n == name) throw std::invalid_argument(fmt::format("{}: parameter '{}' registered twice", type_name(), name));
  if (t.defined() && requires_grad) t.requires_grad_(true);
  params_.emplace_back(name, std::move(t));
  return params_.back().second;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name(name, type_name());
  buffers_.emplace_back(name, std::move(t));
  return buffers_.back().second;
}

std::shared_ptr<ModuleSlot> Module::register_slot(const std::string& name, std::shared_ptr<Module> m) {
  check_new_name(name, type_name());
  if (find_slot(name)) throw std::invalid_argument(fmt::format("{}: child '{}' registered twice", type_name(), name));
  auto slot = std::make_shared<ModuleSlot>(ModuleSlot{name, std::move(m)});
  slot_index_.emplace(name, slots_.size());
  slots_.push_back(slot);
  return slot;
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [n, p] : params_)
    if (p.defined()) out.emplace_back(n, p);
  if (recurse)
    for (auto& s : slots_)
      for (auto& [n, p] : s->module->named_parameters(true)) out.emplace_back(s->name + "." + n, p);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  // The same order as named_parameters(), without building the names.
  std::vector<Tensor> out;
  for (auto& [n, p] : params_)
    if (p.defined()) out.push_back(p);
  if (recurse)
    for (auto& s : slots_)
      for (Tensor& p : s->module->parameters(true)) out.push_back(std::move(p));
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [n, b] : buffers_)
    if (b.defined()) out.emplace_back(n, b);
  if (recurse)
    for (auto& s : slots_)
      for (auto& [n, b] : s->module->named_buffers(true)) out.emplace_back(s->name + "." + n, b);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, Module*>> out;
  out.emplace_back("", const_cast<Module*>(this));
  for (auto& s : slots_)
    for (auto& [n, m] : s->module->named_modules()) out.emplace_back(n.empty() ? s->name : s->name + "." + n, m);
  return out;
}

std::shared_ptr<ModuleSlot> Module::find_slot(const std::string& name) const {
  if (auto it = slot_index_.find(name); it != slot_index_.end() && it->second < slots_.size() &&
                                          slots_[it->second]->name == name)
    return slots_[it->second];
  // A subclass that filled slots_ itself, bypassing register_slot: search.
  if (slot_index_.size() != slots_.size())
    for (auto& s : slots_)
      if (s->name == name) return s;
  return nullptr;
}

Module& Module::get_submodule(const std::string& path) {
  Module* m = this;
  size_t start = 0;
  while (start <= path.size() && !path.empty()) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    auto s = m->find_slot(part);
    if (!s) throw std::invalid_argument(fmt::format("{} has no submodule '{}' (no child '{}')", type_name(), path, part));
    m = s->module.get();
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return *m;
}

void Module::replace_module(const std::string& path, std::shared_ptr<Module> m) {
  const size_t dot = path.rfind('.');
  Module& parent = dot == std::string::npos ? *this : get_submodule(path.substr(0, dot));
  const std::string leaf = dot == std::string::npos ? path : path.substr(dot + 1);
  auto s = parent.find_slot(leaf);
  if (!s) throw std::invalid_argument(fmt::format("{} has no submodule '{}'", type_name(), path));
  s->module = std::move(m);
}

Tensor Module::buffer(const std::string& name) const {
  for (auto& [n, b] : buffers_)
    if (n == name) return b;
  return Tensor();
}

void Module::set_buffer(const std::string& name, const Tensor& value) {
  for (auto& [n, b] : buffers_)
    if (n == name) {
      b = value;
      return;
    }
  throw std::invalid_argument(fmt::format("{} has no buffer '{}'", type_name(), name));
}

void Module::train(bool on) {
  training_ = on;
  for (auto& s : slots_) s->module->train(on);
}

void Module::zero_grad() {
  // Zero in place (PyTorch 1.13's default): the gradient buffers are reused
  // by the next backward instead of being allocated again.
  for (const Tensor& p : parameters()) {
    const Tensor g = p.grad();
    if (g.defined()) kernels::fill_(g, 0.0);
  }
}

static void repr_into(const Module& m, std::ostringstream& os, int indent) {
  const std::string extra = m.extra_repr();
  os << m.type_name() << "(";
  if (m.children().empty()) {
    os << extra << ")";
    return;
  }
  const std::string pad(indent + 2, ' ');
  if (!extra.empty()) os << "\n" << pad << extra;
  for (auto& s : m.children()) {
    os << "\n" << pad << "(" << s->name << "): ";
    repr_into(*s->module, os, indent + 2);
  }
  os << "\n" << std::string(indent, ' ') << ")";
}

std::string Module::repr() const {
  std::ostringstream os;
  repr_into(*this, os, 0);
  return os.str();
}

}  // namespace tq::nn
