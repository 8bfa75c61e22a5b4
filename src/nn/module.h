// Module: the unit a model is built from (docs/nn.md). It owns named
// parameters and buffers and named child *slots*. A member handle such as
//
//     Slot<Linear> fc1 = register_module("fc1", Linear(10, 5));
//
// refers to the slot, not to the module in it: when a pass swaps the module in
// slot "fc1" (Linear -> QATLinear -> QuantizedLinear), the user's forward()
// that calls fc1(x) runs the new module with no change to user code.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "autograd/functions.h"

namespace tq::quant {
struct QConfig;  // src/quant/qconfig.h; a module only stores it
}

namespace tq::nn {

class Module;

// A named place for a child module.
struct ModuleSlot {
  std::string name;
  std::shared_ptr<Module> module;
};

std::string demangled_type_name(const Module& m);

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(Module&&) = default;
  Module& operator=(Module&&) = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The computation. Modules taking one tensor override this.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }
  // Modules combining two tensors (nn::Add, a residual sum) override this one.
  virtual Tensor forward(const Tensor& a, const Tensor& b);
  Tensor operator()(const Tensor& a, const Tensor& b) { return forward(a, b); }

  // Name shown when printing ("Linear"); defaults to the C++ class name.
  virtual std::string type_name() const { return demangled_type_name(*this); }
  // The text inside the parentheses when printed ("in_features=10, ...").
  virtual std::string extra_repr() const { return ""; }

  // ---- Registration (call in the constructor) ----
  Tensor register_parameter(const std::string& name, Tensor t, bool requires_grad = true);
  Tensor register_buffer(const std::string& name, Tensor t);
  std::shared_ptr<ModuleSlot> register_slot(const std::string& name, std::shared_ptr<Module> m);

  template <class M>
  class Slot;
  template <class M>
  Slot<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    return Slot<M>(register_slot(name, std::move(m)));
  }
  template <class M, class = std::enable_if_t<std::is_base_of_v<Module, std::decay_t<M>>>>
  Slot<std::decay_t<M>> register_module(const std::string& name, M&& m) {
    return register_module(name, std::make_shared<std::decay_t<M>>(std::forward<M>(m)));
  }

  // ---- Introspection (dotted names, as in PyTorch) ----
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  // Every module below and including this one; the root has the name "".
  std::vector<std::pair<std::string, Module*>> named_modules() const;
  const std::vector<std::shared_ptr<ModuleSlot>>& children() const { return slots_; }
  // The slot of a direct child, or nullptr. O(1).
  std::shared_ptr<ModuleSlot> find_slot(const std::string& name) const;
  // The module at a dotted path ("features.0"); throws naming the path if absent.
  Module& get_submodule(const std::string& path);
  // Puts `m` into the slot at a dotted path: the handle that refers to it now runs `m`.
  void replace_module(const std::string& path, std::shared_ptr<Module> m);

  // ---- Modes and gradients ----
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();

  // PyTorch-style tree printout.
  std::string repr() const;

  // ---- State restore (used by model-file loaders) ----
  // This module's own buffer `name` (undefined if none).
  Tensor buffer(const std::string& name) const;
  // Replaces the tensor of an own buffer (its shape may change).
  void set_buffer(const std::string& name, const Tensor& value);
  // Called after a loader has restored parameters and buffers: modules that
  // keep their own handles to buffers, or state derived from them, resync here.
  virtual void on_state_loaded() {}

  // Quantization configuration: unset = inherit from the parent; set to
  // nullptr = keep this module float. Read by src/quant's passes.
  std::optional<std::shared_ptr<const quant::QConfig>> qconfig;

 protected:
  // Parameters and buffers by name, in registration order.
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::shared_ptr<ModuleSlot>> slots_;
  bool training_ = true;

 private:
  // Position in slots_ of each child registered through register_slot, so
  // find_slot (and every dotted-path lookup, and every load of a model file)
  // costs O(1) per child instead of a search through all children.
  std::unordered_map<std::string, size_t> slot_index_;
};

// A handle to a child slot, typed for convenience: `fc1->weight` reaches the
// Linear in the slot, `fc1(x)` runs whatever module the slot now holds.
template <class M>
class Module::Slot {
 public:
  Slot() = default;
  explicit Slot(std::shared_ptr<ModuleSlot> s) : slot_(std::move(s)) {}

  Tensor operator()(const Tensor& x) const { return slot_->module->forward(x); }
  Tensor operator()(const Tensor& a, const Tensor& b) const { return slot_->module->forward(a, b); }
  M* operator->() const { return &get(); }
  M& operator*() const { return get(); }
  M& get() const {
    auto* m = dynamic_cast<M*>(slot_->module.get());
    if (!m)
      throw std::logic_error("slot '" + slot_->name + "' now holds a " + slot_->module->type_name() +
                             ", not the module type this handle was declared with");
    return *m;
  }
  // The module in the slot, whatever its type.
  Module& module() const { return *slot_->module; }
  const std::string& name() const { return slot_->name; }

 private:
  std::shared_ptr<ModuleSlot> slot_;
};

template <class M>
using Slot = Module::Slot<M>;

inline std::ostream& operator<<(std::ostream& os, const Module& m) { return os << m.repr(); }

}  // namespace tq::nn
