#include "quant/compare.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "autograd/node.h"
#include "quant/dynamic_linear.h"
#include "quant/qat_linear.h"
#include "quant/quantized_linear.h"
#include "tensor/ops.h"

namespace tq::quant {

namespace {

bool is_quantized_layer(const nn::Module& m) {
  return dynamic_cast<const QuantizedLinear*>(&m) || dynamic_cast<const DynamicQuantizedLinear*>(&m) ||
         dynamic_cast<const QATLinear*>(&m);
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
  Tensor forward(const Tensor& x) override {
    Tensor y = inner_->forward(x);
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
  for (int64_t i = 0; i < r.numel(); ++i) {
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
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(double(a.data<float>()[i]) - b.data<float>()[i]));
  return m;
}

std::vector<LayerComparison> compare_weights(nn::Module& float_model, nn::Module& quantized_model) {
  std::vector<LayerComparison> rows;
  for (auto& [path, m] : quantized_model.named_modules()) {
    if (!is_quantized_layer(*m)) continue;
    nn::Module* f = find_module(float_model, path);
    auto* fl = f ? dynamic_cast<nn::Linear*>(f) : nullptr;
    if (!fl) continue;
    Tensor w;
    if (auto* q = dynamic_cast<QuantizedLinear*>(m)) w = q->weight();
    else if (auto* d = dynamic_cast<DynamicQuantizedLinear*>(m)) w = d->weight();
    else if (auto* qat = dynamic_cast<QATLinear*>(m)) {
      NoGradGuard no_grad;
      const bool was_training = qat->weight_quant->is_training();
      qat->weight_quant->eval();  // fake-quantize without updating the observer
      w = qat->weight_quant(qat->weight);
      qat->weight_quant->train(was_training);
    }
    rows.push_back({path, f->type_name(), m->type_name(), sqnr_db(fl->weight, w), max_abs_diff(fl->weight, w),
                    fl->weight.numel()});
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
    if (path.empty() || !is_quantized_layer(*m) || !find_module(float_model, path)) continue;
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
