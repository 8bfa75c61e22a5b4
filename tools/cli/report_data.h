// The numbers the HTML report (report.h, docs/report.md) is drawn from, and
// where they come from: what a run records besides its models (ReportRun,
// kept as JSON in the workdir), the models themselves (ReportModels), and
// gather_report(), which reads their weights, observers and qparams and runs
// the SQNR comparisons of quant/compare.h. Plain numbers only: drawing them
// is report.cpp's business.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/dataset.h"
#include "nn/module.h"
#include "quant/compare.h"
#include "workflow.h"

namespace tq::cli {

// ---- What the caller knows about the run ----

// One row of the summary table (the pipeline's table).
struct SummaryRow {
  std::string method;          // "float", "QAT int8", ...
  double accuracy = 0;         // percent
  double agreement = 0;        // percent of identical predictions
  std::string agreement_with;  // "fake quant", "float", "itself"
  int64_t model_bytes = 0;
  double latency_us_batch_1 = 0;
  double latency_us_batch_64 = 0;
};

// What a run records besides its models. `tinyqat pipeline --report` keeps it
// as JSON in the workdir (kReportRunFile), so `tinyqat report` can redraw the
// page later from the saved model files.
struct ReportRun {
  std::string title = "tinyqat report";
  std::string subtitle;                 // e.g. "Fashion-MNIST, MLP 784-256-128-10, 10000 test images"
  std::vector<EpochStats> float_history;  // one per float training epoch
  std::vector<EpochStats> qat_history;    // one per QAT epoch (fake-quant accuracy)
  std::vector<SummaryRow> table;
  std::optional<double> fake_quant_accuracy;  // of the QAT model before convert
};
void save_report_run(const ReportRun& run, const std::string& path);  // atomic
ReportRun load_report_run(const std::string& path);                   // throws naming the file

// The models the pictures are drawn from; any may be null (its pictures or
// bars are then left out). None is changed.
struct ReportModels {
  std::shared_ptr<nn::Module> float_model;     // trained float model, unfused (fc1, relu1, ...)
  std::shared_ptr<nn::Module> qat_prepared;    // after QAT training, BEFORE convert (QATLinear + FakeQuantize)
  std::shared_ptr<nn::Module> qat_int8;        // after convert
  std::shared_ptr<nn::Module> ptq_calibrated;  // after calibration, BEFORE convert (ObservedLinear + observers)
  std::shared_ptr<nn::Module> ptq_int8;        // after convert
  std::shared_ptr<nn::Module> dynamic_int8;    // quantize_dynamic
};

// File names in a workdir (what pipeline --report saves, what `tinyqat report` reads).
inline constexpr const char* kFloatFile = "float.safetensors";
inline constexpr const char* kQatPreparedFile = "qat_prepared.safetensors";
inline constexpr const char* kQatInt8File = "qat_int8.safetensors";
inline constexpr const char* kPtqCalibratedFile = "ptq_calibrated.safetensors";
inline constexpr const char* kPtqInt8File = "ptq_int8.safetensors";
inline constexpr const char* kDynamicInt8File = "dynamic_int8.safetensors";
inline constexpr const char* kReportRunFile = "report_run.json";
inline constexpr const char* kReportFile = "report.html";

// Loads whichever of the six model files exist in `workdir` (float is required).
ReportModels load_report_models(const std::string& workdir);

// ---- The numbers the pictures are drawn from ----

// Counts of equal bins over [lo, hi].
struct Histogram {
  double lo = 0, hi = 0;
  std::vector<double> counts;
};

// One layer's float weights with the int8 grid they are rounded to.
struct WeightPanel {
  std::string layer;         // "fc1"
  std::string grid_from;     // whose grid: "PTQ int8"
  int64_t channel = -1;      // the output channel shown; -1: all (per-tensor grid)
  int64_t channels = 0;      // output channels of the layer
  Histogram histogram;       // of the shown weights
  double weight_min = 0, weight_max = 0;
  double scale = 0;          // of the shown channel
  int32_t zero_point = 0, quant_min = -128, quant_max = 127;
  bool convolution = false;  // a convolution's filter, its BatchNorm folded in
};

// The representable range [lo, hi] = s (qmin - z) .. s (qmax - z) a method chose.
struct ChosenRange {
  double lo = 0, hi = 0, scale = 0;
  int32_t zero_point = 0, quant_min = 0, quant_max = 127;
};

// One layer's output: what the PTQ observer saw, and the ranges PTQ and QAT chose.
struct ActivationPanel {
  std::string layer;
  std::string what;                // "output after the fused ReLU" / "output"
  Histogram histogram;             // the PTQ HistogramObserver's own histogram
  double seen_min = 0, seen_max = 0;
  std::optional<ChosenRange> ptq, qat;
  double ptq_clipped_fraction = 0;  // of the values seen, outside the PTQ range
};

// Per-layer SQNR (dB, compare.h eq. 10) of one method.
struct SqnrSet {
  std::string method;  // "QAT int8", "PTQ int8", "dynamic int8"
  std::vector<quant::LayerComparison> weights, outputs;
};

struct ReportData {
  ReportRun run;
  std::vector<WeightPanel> weights;
  std::vector<ActivationPanel> activations;
  std::vector<SqnrSet> sqnr;
  int64_t sqnr_samples = 0;  // test images the output SQNR was measured on
};

// Reads weights, observers and qparams from the models and measures the SQNR
// of every quantized model against the float one on `inputs` ((N, features)
// f32, normalised test images). The models are left as they were.
ReportData gather_report(const ReportRun& run, const ReportModels& models, const Tensor& inputs);

// The first `samples` images of `test`, normalised as the loader gives them:
// (samples, H*W) f32, the `inputs` of gather_report / write_report.
Tensor report_inputs(const io::Dataset& test, int64_t samples = 1000);

}  // namespace tq::cli
