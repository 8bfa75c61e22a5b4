#include "quant/compare.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "autograd/node.h"
#include "quant/layer.h"
#include "tensor/ops.h"

namespace tq::quant {

namespace {

// The layers compared: int8 layers and prepared layers (whose rounding, for
// QAT, is what their int8 layers will do).
QuantLayer* compared_layer(nn::Module* m) { return as_quant_layer(m); }

// The float model's own parameter `weight` of the module at `path`, or undefined.
Tensor float_weight_at(nn::Module* f) {
  if (!f) return Tensor();
  for (auto& [name, p] : f->named_parameters(false))
    if (name == "weight") return p;
  return Tensor();
}

// The float model's module at `path`, or nullptr.
nn::Module* find_module(nn::Module& model, const std::string& path) {
  for (auto& [p, m] : model.named_modules())
    if (p == path) return m;
  return nullptr;
}

// Sits in a slot in front of the real module and keeps a float copy of its output.
class OutputLogger : public nn::Module {
 public:
  explicit OutputLogger(std::shared_ptr<nn::Module> inner) : inner_(std::move(inner)) {}
  Tensor forward(const Tensor& x) override { return keep(inner_->forward(x)); }
  // A two-input layer, such as a residual Add.
  Tensor forward(const Tensor& a, const Tensor& b) override { return keep(inner_->forward(a, b)); }
  Tensor keep(Tensor y) {
    output = kernels::clone(kernels::to_float(y.detach()));
    return y;
  }
  std::shared_ptr<nn::Module> inner_;
  Tensor output;
};

}  // namespace

double sqnr_db(const Tensor& reference, const Tensor& approx) {
  const Tensor r = kernels::contiguous(kernels::to_float(reference.detach()));
  const Tensor a = kernels::contiguous(kernels::to_float(approx.detach()));
  if (!(r.shape() == a.shape()))
    throw std::invalid_argument(fmt::format("sqnr_db: shapes {} and {} differ", r.shape().str(), a.shape().str()));
  double signal = 0, noise = 0;
  for (int64_t i = 0, i_end = r.numel(); i < i_end; ++i) {
    const double rv = r.data<float>()[i], d = rv - a.data<float>()[i];
    signal += rv * rv;
    noise += d * d;
  }
  if (noise == 0) return std::numeric_limits<double>::infinity();
  if (signal == 0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);  // eq. 10
}

static double max_abs_diff(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = kernels::contiguous(kernels::to_float(a_in.detach()));
  const Tensor b = kernels::contiguous(kernels::to_float(b_in.detach()));
  double m = 0;
  for (int64_t i = 0, i_end = a.numel(); i < i_end; ++i) m = std::max(m, std::fabs(double(a.data<float>()[i]) - b.data<float>()[i]));
  return m;
}

std::vector<LayerComparison> compare_weights(nn::Module& float_model, nn::Module& quantized_model) {
  std::vector<LayerComparison> rows;
  for (auto& [path, m] : quantized_model.named_modules()) {
    QuantLayer* layer = compared_layer(m);
    if (!layer) continue;
    nn::Module* f = find_module(float_model, path);
    const Tensor float_weight = float_weight_at(f);
    const Tensor w = float_weight.defined() ? layer->effective_weight() : Tensor();
    if (!w.defined()) continue;
    rows.push_back({path, f->type_name(), m->type_name(), sqnr_db(float_weight, w), max_abs_diff(float_weight, w),
                    float_weight.numel()});
  }
  return rows;
}

std::vector<LayerComparison> compare_model_outputs(nn::Module& float_model, nn::Module& quantized_model,
                                                   const Tensor& inputs) {
  struct Pair {
    std::string path;
    std::shared_ptr<nn::ModuleSlot> float_slot, quant_slot;
    std::shared_ptr<OutputLogger> float_log, quant_log;
  };
  // Slots are found through their parents; loggers go in, then come out again.
  auto slot_at = [](nn::Module& model, const std::string& path) -> std::shared_ptr<nn::ModuleSlot> {
    const size_t dot = path.rfind('.');
    nn::Module& parent = dot == std::string::npos ? model : model.get_submodule(path.substr(0, dot));
    return parent.find_slot(dot == std::string::npos ? path : path.substr(dot + 1));
  };
  std::vector<Pair> pairs;
  for (auto& [path, m] : quantized_model.named_modules()) {
    if (path.empty() || !compared_layer(m) || !find_module(float_model, path)) continue;
    pairs.push_back({path, slot_at(float_model, path), slot_at(quantized_model, path), nullptr, nullptr});
  }
  // Eval mode first (so QAT fake quants update no observer): once a logger
  // sits in a slot, train() / eval() no longer reach the layer behind it.
  const bool ft = float_model.is_training(), qt = quantized_model.is_training();
  float_model.eval();
  quantized_model.eval();
  for (auto& p : pairs) {
    p.float_log = std::make_shared<OutputLogger>(p.float_slot->module);
    p.quant_log = std::make_shared<OutputLogger>(p.quant_slot->module);
    p.float_slot->module = p.float_log;
    p.quant_slot->module = p.quant_log;
  }
  auto restore = [&] {
    for (auto& p : pairs) {
      p.float_slot->module = p.float_log->inner_;
      p.quant_slot->module = p.quant_log->inner_;
    }
    float_model.train(ft);
    quantized_model.train(qt);
  };
  try {
    NoGradGuard no_grad;
    float_model(inputs);
    quantized_model(inputs);
  } catch (...) {
    restore();
    throw;
  }
  restore();
  std::vector<LayerComparison> rows;
  for (auto& p : pairs) {
    if (!p.float_log->output.defined() || !p.quant_log->output.defined()) continue;
    rows.push_back({p.path, p.float_log->inner_->type_name(), p.quant_log->inner_->type_name(),
                    sqnr_db(p.float_log->output, p.quant_log->output),
                    max_abs_diff(p.float_log->output, p.quant_log->output), p.float_log->output.numel()});
  }
  return rows;
}

std::string format_comparison(const std::vector<LayerComparison>& rows, const std::string& title) {
  std::string s = title + "\n";
  s += fmt::format("  {:<16} {:<12} {:<22} {:>10} {:>14} {:>10}\n", "layer", "float", "quantized", "SQNR (dB)",
                   "max |error|", "elements");
  for (auto& r : rows)
    s += fmt::format("  {:<16} {:<12} {:<22} {:>10.2f} {:>14.6f} {:>10}\n", r.name, r.float_type, r.quant_type,
                     r.sqnr_db, r.max_abs_error, r.numel);
  return s;
}

}  // namespace tq::quant
