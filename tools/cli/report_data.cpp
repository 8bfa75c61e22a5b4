// Gathering the report's numbers (report_data.h): plain numbers read from the
// models' weights, observers and qparams, and the SQNR comparisons of
// quant/compare.h.
#include "report_data.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "autograd/functions.h"
#include "io/data_loader.h"
#include "io/model_file.h"
#include "io/safetensors.h"
#include "nn/add.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "quant/dynamic_linear.h"
#include "quant/fake_quantize.h"
#include "quant/fused.h"
#include "quant/histogram_observer.h"
#include "quant/layer.h"
#include "quant/observer.h"
#include "quant/qat_linear.h"
#include "quant/quantized_linear.h"
#include "tensor/ops.h"

namespace tq::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

nn::Module* find_module(nn::Module* model, const std::string& path) {
  if (!model) return nullptr;
  for (auto& [p, m] : model->named_modules())
    if (p == path) return m;
  return nullptr;
}
Histogram make_histogram(const std::vector<float>& values, double lo, double hi, int bins) {
  Histogram h{lo, hi, std::vector<double>(static_cast<size_t>(bins), 0.0)};
  if (!(hi > lo)) return h;
  for (float v : values) {
    if (!std::isfinite(v)) continue;
    const int b = std::clamp(static_cast<int>((v - lo) / (hi - lo) * bins), 0, bins - 1);
    h.counts[static_cast<size_t>(b)] += 1;
  }
  return h;
}

// Sums groups of neighbouring bins so that at most `max_bins` remain.
Histogram rebin(const std::vector<float>& counts, double lo, double hi, size_t max_bins) {
  const size_t group = std::max<size_t>(1, (counts.size() + max_bins - 1) / max_bins);
  Histogram h{lo, hi, {}};
  for (size_t i = 0; i < counts.size(); i += group) {
    double sum = 0;
    for (size_t j = i; j < std::min(counts.size(), i + group); ++j) sum += counts[j];
    h.counts.push_back(sum);
  }
  // The last group may be short: stretch hi so bins stay equal.
  h.hi = lo + (hi - lo) * static_cast<double>(h.counts.size() * group) / static_cast<double>(std::max<size_t>(1, counts.size()));
  return h;
}

ChosenRange chosen_range(const QParams& qp) {
  ChosenRange r;
  r.scale = qp.scale.empty() ? 0 : qp.scale[0];
  r.zero_point = qp.zero_point.empty() ? 0 : qp.zero_point[0];
  r.quant_min = qp.quant_min, r.quant_max = qp.quant_max;
  r.lo = r.scale * (r.quant_min - r.zero_point);
  r.hi = r.scale * (r.quant_max - r.zero_point);
  return r;
}

// The qparams of a layer's weight in a quantized (or prepared) model.
std::optional<QParams> weight_qparams(nn::Module* m) {
  const quant::QuantLayer* layer = quant::as_quant_layer(m);
  return layer ? layer->qparams(quant::QuantRole::weight) : std::nullopt;
}

// The module observing a layer's output, and its qparams.
std::optional<QParams> output_qparams(nn::Module* m) {
  const quant::QuantLayer* layer = quant::as_quant_layer(m);
  return layer ? layer->qparams(quant::QuantRole::output) : std::nullopt;
}

// `weight`: the float weight the layer rounds, output channels first: a
// Linear's (out, in), a convolution's (out, in / groups, kH, kW) with its
// BatchNorm folded in.
WeightPanel weight_panel(const std::string& layer, const Tensor& weight, const QParams& qp, const std::string& grid_from) {
  WeightPanel w;
  w.layer = layer;
  w.grid_from = grid_from;
  w.channels = weight.size(0);
  const std::vector<float> all = to_vector(weight);
  const int64_t in = w.channels > 0 ? weight.numel() / w.channels : 0;  // weights per output channel
  std::vector<float> shown = all;
  size_t pick = 0;
  if (is_per_channel(qp.scheme) && qp.axis == 0 && static_cast<int64_t>(qp.scale.size()) == w.channels) {
    pick = static_cast<size_t>(std::max_element(qp.scale.begin(), qp.scale.end()) - qp.scale.begin());
    w.channel = static_cast<int64_t>(pick);
    shown.assign(all.begin() + static_cast<int64_t>(pick) * in, all.begin() + static_cast<int64_t>(pick + 1) * in);
  }
  w.scale = qp.scale.empty() ? 0 : qp.scale[pick];
  w.zero_point = qp.zero_point.empty() ? 0 : qp.zero_point[std::min(pick, qp.zero_point.size() - 1)];
  w.quant_min = qp.quant_min, w.quant_max = qp.quant_max;
  w.weight_min = std::numeric_limits<double>::infinity(), w.weight_max = -w.weight_min;
  for (float v : shown)
    if (std::isfinite(v)) w.weight_min = std::min<double>(w.weight_min, v), w.weight_max = std::max<double>(w.weight_max, v);
  if (!(w.weight_max >= w.weight_min)) w.weight_min = w.weight_max = 0;
  const double lo = std::min(w.weight_min, w.scale * (w.quant_min - w.zero_point));
  const double hi = std::max(w.weight_max, w.scale * (w.quant_max - w.zero_point));
  const int bins = std::clamp(static_cast<int>(std::sqrt(static_cast<double>(shown.size())) * 2), 16, 64);
  w.histogram = make_histogram(shown, lo, hi, bins);
  return w;
}

ActivationPanel activation_panel(const std::string& layer, nn::Module* calibrated, nn::Module* ptq_int8, nn::Module* qat_prepared,
                                 nn::Module* qat_int8) {
  ActivationPanel a;
  a.layer = layer;
  quant::FusedActivation fused = quant::FusedActivation::none;
  for (nn::Module* m : {calibrated, ptq_int8, qat_prepared, qat_int8})
    if (const quant::QuantLayer* layer = quant::as_quant_layer(m); layer && layer->activation() != quant::FusedActivation::none)
      fused = layer->activation();
  a.what = fused != quant::FusedActivation::none
               ? fmt::format("output (after the fused {})", quant::fused_activation_suffix(fused))
               : "output";
  // What the PTQ observer saw.
  const quant::HistogramObserver* hist = nullptr;
  const quant::MinMaxObserver* minmax = nullptr;
  if (const quant::PreparedLayer* p = quant::as_prepared_layer(calibrated); p && p->quantizer(quant::QuantRole::output)) {
    const quant::QParamsSource* src = p->quantizer(quant::QuantRole::output);
    if (auto* fq = dynamic_cast<const quant::FakeQuantize*>(src)) src = &fq->observer();
    hist = dynamic_cast<const quant::HistogramObserver*>(src);
    minmax = dynamic_cast<const quant::MinMaxObserver*>(src);
  }
  if (hist && hist->has_data()) {
    a.seen_min = hist->min_val(), a.seen_max = hist->max_val();
    const std::vector<float> counts = hist->histogram();
    a.histogram = rebin(counts, a.seen_min, a.seen_max, 128);
  } else if (minmax && minmax->has_data()) {
    a.seen_min = minmax->min_val(), a.seen_max = minmax->max_val();
  }
  if (auto qp = output_qparams(calibrated)) a.ptq = chosen_range(*qp);
  else if (auto qp2 = output_qparams(ptq_int8)) a.ptq = chosen_range(*qp2);
  if (auto qp = output_qparams(qat_prepared)) a.qat = chosen_range(*qp);
  else if (auto qp2 = output_qparams(qat_int8)) a.qat = chosen_range(*qp2);
  // Share of the observed values outside the PTQ range (each fine bin taken as uniform).
  if (hist && hist->has_data() && a.ptq) {
    const std::vector<float> counts = hist->histogram();
    const double lo = hist->min_val(), hi = hist->max_val(), bw = (hi - lo) / static_cast<double>(counts.size());
    double total = 0, out = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      const double b0 = lo + bw * i, b1 = b0 + bw;
      total += counts[i];
      if (bw > 0) {
        const double outside = std::max(0.0, std::min(b1, a.ptq->lo) - b0) + std::max(0.0, b1 - std::max(b0, a.ptq->hi));
        out += counts[i] * std::min(1.0, outside / bw);
      }
    }
    a.ptq_clipped_fraction = total > 0 ? out / total : 0;
  }
  return a;
}

std::shared_ptr<nn::Module> copy_model(const nn::Module& m) {
  return io::build_model(io::model_to_safetensors(m), "report copy of the float model");
}

// The float model's name of a QAT model's tensor: the same, except that a
// QAT convolution holds its BatchNorm as the child `bn`, which in the float
// model is the convolution's next sibling (fusion takes Conv2d, BatchNorm2d
// in that order): "features.0.0.bn.running_var" -> "features.0.1.running_var".
std::string float_name_of(nn::Module& float_model, const std::string& name) {
  const size_t bn = name.rfind(".bn.");
  if (bn == std::string::npos) return name;
  const std::string conv = name.substr(0, bn), rest = name.substr(bn + 4);
  const size_t dot = conv.rfind('.');
  const std::string prefix = dot == std::string::npos ? "" : conv.substr(0, dot);
  const std::string leaf = dot == std::string::npos ? conv : conv.substr(dot + 1);
  nn::Module* parent = prefix.empty() ? &float_model : find_module(&float_model, prefix);
  if (!parent) return name;
  const auto& slots = parent->children();
  for (size_t i = 0; i + 1 < slots.size(); ++i)
    if (slots[i]->name == leaf) return (prefix.empty() ? "" : prefix + ".") + slots[i + 1]->name + "." + rest;
  return name;
}

// The float model with the parameters (and BatchNorm statistics) of
// `trained`: the float computation a QAT model fine-tuned into, before any
// rounding.
std::shared_ptr<nn::Module> with_parameters_of(const nn::Module& float_model, const nn::Module& trained) {
  auto copy = copy_model(float_model);
  std::map<std::string, Tensor> targets;
  for (auto& [name, p] : copy->named_parameters()) targets[name] = p;
  for (auto& [name, b] : copy->named_buffers()) targets[name] = b;
  auto take = [&](const std::string& name, const Tensor& t) {
    for (const std::string& target : {name, float_name_of(*copy, name)}) {  // the same name first
      auto it = targets.find(target);
      if (it != targets.end() && it->second.shape() == t.shape() && it->second.dtype() == t.dtype()) {
        kernels::copy_(it->second, t.detach());
        return;
      }
    }
  };
  for (auto& [name, p] : trained.named_parameters()) take(name, p);
  for (auto& [name, b] : trained.named_buffers()) take(name, b);
  return copy;
}

// A copy of `m` in eval mode with every known run fused: BatchNorm folded
// into its convolution, as in the int8 layers; null when the model cannot be
// copied through a model file (a user's own module type).
std::shared_ptr<nn::Module> fused_copy(const nn::Module& m) {
  std::shared_ptr<nn::Module> fused;
  try {
    fused = copy_model(m);
  } catch (const std::exception&) {
    return nullptr;
  }
  fused->eval();
  quant::fuse_known_modules(*fused);
  return fused;
}

bool has_fused_layers(nn::Module& m) {
  for (auto& [path, mod] : m.named_modules())
    if (const std::string t = mod->type_name();
        t.starts_with("QuantizedConv2d") || (t.starts_with("Quantized") && (t.ends_with("ReLU") || t.ends_with("ReLU6"))))
      return true;
  return false;
}

}  // namespace

void save_report_run(const ReportRun& run, const std::string& path) {
  auto epochs = [](const std::vector<EpochStats>& h) {
    json a = json::array();
    for (auto& e : h) a.push_back({{"loss", e.loss}, {"test_accuracy", e.test_accuracy}, {"seconds", e.seconds}});
    return a;
  };
  json rows = json::array();
  for (auto& r : run.table)
    rows.push_back({{"method", r.method}, {"accuracy", r.accuracy}, {"agreement", r.agreement}, {"agreement_with", r.agreement_with},
                    {"model_bytes", r.model_bytes}, {"latency_us_batch_1", r.latency_us_batch_1},
                    {"latency_us_batch_64", r.latency_us_batch_64}});
  json j = {{"format", "tinyqat report run"}, {"version", 1}, {"title", run.title}, {"subtitle", run.subtitle},
            {"float_history", epochs(run.float_history)}, {"qat_history", epochs(run.qat_history)}, {"table", rows}};
  if (run.fake_quant_accuracy) j["fake_quant_accuracy"] = *run.fake_quant_accuracy;
  io::write_file_atomically(path, j.dump(1) + "\n");
}

ReportRun load_report_run(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(fmt::format("{}: cannot open (written by tinyqat pipeline --report)", path));
  try {
    const json j = json::parse(f);
    if (j.value("format", "") != "tinyqat report run")
      throw std::runtime_error(fmt::format("{}: not a tinyqat report run file", path));
    ReportRun run;
    run.title = j.value("title", run.title);
    run.subtitle = j.value("subtitle", "");
    for (const char* key : {"float_history", "qat_history"})
      for (auto& e : j.at(key))
        (std::string(key) == "float_history" ? run.float_history : run.qat_history)
            .push_back({e.at("loss").get<double>(), e.at("test_accuracy").get<double>(), e.value("seconds", 0.0)});
    for (auto& r : j.at("table"))
      run.table.push_back({r.at("method").get<std::string>(), r.at("accuracy").get<double>(), r.at("agreement").get<double>(),
                           r.at("agreement_with").get<std::string>(), r.at("model_bytes").get<int64_t>(),
                           r.at("latency_us_batch_1").get<double>(), r.at("latency_us_batch_64").get<double>()});
    if (j.contains("fake_quant_accuracy")) run.fake_quant_accuracy = j["fake_quant_accuracy"].get<double>();
    return run;
  } catch (const json::exception& e) {
    throw std::runtime_error(fmt::format("{}: bad report run file ({})", path, e.what()));
  }
}

ReportModels load_report_models(const std::string& workdir) {
  auto maybe = [&](const char* name) -> std::shared_ptr<nn::Module> {
    const std::string path = workdir + "/" + name;
    return fs::exists(path) ? io::load_model(path) : nullptr;
  };
  ReportModels m;
  m.float_model = maybe(kFloatFile);
  if (!m.float_model)
    throw std::runtime_error(fmt::format("{}/{}: missing (run tinyqat pipeline --workdir {} --report DIR first)", workdir, kFloatFile,
                                         workdir));
  m.qat_prepared = maybe(kQatPreparedFile);
  m.qat_int8 = maybe(kQatInt8File);
  m.ptq_calibrated = maybe(kPtqCalibratedFile);
  m.ptq_int8 = maybe(kPtqInt8File);
  m.dynamic_int8 = maybe(kDynamicInt8File);
  return m;
}

ReportData gather_report(const ReportRun& run, const ReportModels& models, const Tensor& flat_inputs) {
  // A network of images gets the rows as (N, 1, H, W) square images.
  Tensor inputs = flat_inputs;
  bool images = false;  // a convolution's weight is 4-D
  if (models.float_model)
    for (auto& [name, p] : models.float_model->named_parameters()) images |= name.ends_with("weight") && p.dim() == 4;
  if (images && inputs.defined() && inputs.dim() == 2) {
    const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(inputs.size(1)))));
    if (side * side == inputs.size(1)) inputs = tq::reshape(inputs, {inputs.size(0), 1, side, side});
  }
  ReportData d;
  d.run = run;
  if (!models.float_model) throw std::invalid_argument("gather_report: the float model is required");
  nn::Module& fl = *models.float_model;
  // A convolution's weight as its int8 layer rounds it: with the BatchNorm
  // after it folded in (the float model fused in eval mode).
  bool convolutions = false;
  for (auto& [path, m] : fl.named_modules()) convolutions |= dynamic_cast<nn::Conv2d*>(m) != nullptr;
  const std::shared_ptr<nn::Module> folded = convolutions ? fused_copy(fl) : nullptr;
  // The quantizable layers in network order, each with the float weight it
  // rounds (none for an Add; none for a convolution whose folded form is
  // unknown).
  std::vector<std::pair<std::string, Tensor>> layers;
  for (auto& [path, m] : fl.named_modules()) {
    if (path.empty()) continue;
    if (auto* lin = dynamic_cast<nn::Linear*>(m)) layers.push_back({path, lin->weight});
    else if (dynamic_cast<nn::Conv2d*>(m)) {
      auto* conv = dynamic_cast<nn::Conv2d*>(find_module(folded.get(), path));
      layers.push_back({path, conv ? conv->weight : Tensor()});
    } else if (dynamic_cast<nn::Add*>(m)) layers.push_back({path, Tensor()});
  }

  for (auto& [path, weight] : layers) {
    // 2. Weights on the grid they are rounded to: PTQ's (the same float
    // weights), else dynamic's, else the calibrated model's observer.
    std::optional<WeightPanel> w;
    if (weight.defined())
      for (auto [model, name] : {std::pair{models.ptq_int8.get(), "PTQ int8"}, std::pair{models.dynamic_int8.get(), "dynamic int8"},
                                 std::pair{models.ptq_calibrated.get(), "PTQ"}})
        if (!w)
          if (auto qp = weight_qparams(find_module(model, path))) w = weight_panel(path, weight, *qp, name);
    if (w) {
      w->convolution = weight.dim() == 4;
      d.weights.push_back(*w);
    }
    // 3. Activation ranges.
    nn::Module *cal = find_module(models.ptq_calibrated.get(), path), *p8 = find_module(models.ptq_int8.get(), path),
               *qp = find_module(models.qat_prepared.get(), path), *q8 = find_module(models.qat_int8.get(), path);
    if (cal || p8 || qp || q8) d.activations.push_back(activation_panel(path, cal, p8, qp, q8));
  }

  // 4. SQNR: weights against the float weights each method rounded; outputs
  // against the float model computing the same thing (fused where the int8
  // model is fused: the output of a fused layer is taken after its ReLU).
  d.sqnr_samples = inputs.defined() ? inputs.size(0) : 0;
  // `reference`: the float model whose computation `q` rounds (unfused).
  auto add = [&](const std::string& method, nn::Module& reference, nn::Module* q) {
    if (!q) return;
    // Fused like the int8 model (eval mode: BatchNorm folded, as in the int8
    // convolutions). A model of the user's own module type cannot be copied
    // through a model file: its output bars are then left out.
    const std::shared_ptr<nn::Module> fused = has_fused_layers(*q) ? fused_copy(reference) : nullptr;
    SqnrSet s{method, quant::compare_weights(fused ? *fused : reference, *q), {}};
    if (inputs.defined() && (fused || !has_fused_layers(*q)))
      s.outputs = quant::compare_model_outputs(fused ? *fused : reference, *q, inputs);
    d.sqnr.push_back(std::move(s));
  };
  // QAT changed its weights while training: it is compared with the float
  // model carrying its fine-tuned weights, so that its bars, like the
  // others, measure rounding alone and not how far training moved it.
  nn::Module* qat = models.qat_int8 ? models.qat_int8.get() : models.qat_prepared.get();
  if (qat) {
    std::shared_ptr<nn::Module> reference;
    try {
      if (models.qat_prepared) reference = with_parameters_of(fl, *models.qat_prepared);
    } catch (const std::exception&) {
    }
    add(models.qat_int8 ? "QAT int8" : "QAT fake quant", reference ? *reference : fl, qat);
  }
  add("PTQ int8", fl, models.ptq_int8.get());
  add("dynamic int8", fl, models.dynamic_int8.get());
  return d;
}
Tensor report_inputs(const io::Dataset& test, int64_t samples) {
  const int64_t n = std::clamp<int64_t>(samples, 1, std::max<int64_t>(1, test.size()));
  io::DataLoader loader(test.slice(0, n), {.batch_size = n, .shuffle = false});
  io::Batch b;
  if (!loader.next(b)) throw std::invalid_argument("report: the test set is empty");
  return b.images;
}

}  // namespace tq::cli
