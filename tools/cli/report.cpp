// The HTML report's page (report.h, docs/report.md): the five pictures and
// the table, each with a few sentences for a learner, drawn with the chart
// kit of report_svg.h from the numbers report_data.h gathers.
#include "report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>

#include "io/safetensors.h"
#include "report_svg.h"

namespace tq::cli {

namespace fs = std::filesystem;

namespace {

using namespace svg;

// One colour (and dash) per method, the same in every picture.
struct MethodStyle {
  const char* colour;
  const char* dash;
};
MethodStyle method_style(const std::string& method) {
  if (method.find("QAT") != std::string::npos) return {kVermillion, ""};
  if (method.find("PTQ") != std::string::npos) return {kGreen, ""};
  if (method.find("dynamic") != std::string::npos) return {kPurple, ""};
  if (method.find("float") != std::string::npos) return {kBlue, ""};
  return {kOrange, ""};
}
// Chart sizes: two or three per row of the 1340-pixel-wide page.
constexpr double kWide = 650, kWideHeight = 360;
constexpr double kNarrow = 432, kNarrowHeight = 330;

// ---------------------------------------------------------------------------
// The pictures
// ---------------------------------------------------------------------------

// 1. Training loss or test accuracy per epoch; QAT epochs follow the float ones.
std::string training_chart(const ReportRun& run, bool accuracy, int id) {
  const auto& fl = run.float_history;
  const auto& qat = run.qat_history;
  auto value = [&](const EpochStats& e) { return accuracy ? e.test_accuracy : e.loss; };
  Chart c(kWide, kWideHeight, accuracy ? "Test accuracy after each epoch" : "Training loss per epoch", "epoch",
          accuracy ? "test accuracy (%)" : "mean training loss (cross-entropy)");
  const int n_float = static_cast<int>(fl.size()), n_all = n_float + static_cast<int>(qat.size());
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (auto* h : {&fl, &qat})
    for (auto& e : *h)
      if (finite(value(e))) lo = std::min(lo, value(e)), hi = std::max(hi, value(e));
  if (!(hi >= lo)) lo = 0, hi = 1;
  const double pad = std::max((hi - lo) * 0.12, accuracy ? 0.5 : 0.01);
  c.x_range(0.5, std::max(1, n_all) + 0.5);
  c.y_range(accuracy ? lo - pad : std::max(0.0, lo - pad), accuracy ? std::min(100.0, hi + pad) : hi + pad);
  c.x_ticks(linear_ticks(1, std::max(1, n_all), 10, 1));
  c.y_ticks(linear_ticks(c.y_min(), c.y_max(), 6));
  if (!qat.empty()) {
    c.bar(n_float + 0.5, n_all + 0.5, c.y_min(), c.y_max(), kVermillion, 0.08);
    c.label((n_float + 0.5 + n_all + 0.5) / 2, c.top() + 16, "QAT epochs", "middle", 12, kVermillion);
  }
  std::vector<std::pair<double, double>> pf, pq;
  for (int i = 0; i < n_float; ++i) pf.push_back({i + 1.0, value(fl[i])});
  for (size_t i = 0; i < qat.size(); ++i) pq.push_back({n_float + 1.0 + i, value(qat[i])});
  c.polyline(pf, kBlue, 2.2);
  if (!pf.empty() && !pq.empty()) c.polyline({pf.back(), pq.front()}, kVermillion, 1.6, "5 4");
  c.polyline(pq, kVermillion, 2.2);
  for (auto& [x, y] : pf) c.marker(x, y, 'o', kBlue);
  for (auto& [x, y] : pq) c.marker(x, y, 's', kVermillion);
  c.legend({{LegendEntry::marker_line, "float training", kBlue, "", 2.2, 1, 'o'},
            {LegendEntry::marker_line, "QAT fine-tuning (fake quant)", kVermillion, "", 2.2, 1, 's'}},
           LegendPlace::below);
  return c.svg(id);
}

// 2. One layer's float weights with the int8 grid drawn over them.
std::string weight_chart(const WeightPanel& w, int id) {
  const std::string which = w.channel >= 0 ? fmt::format("channel {} of {}", w.channel, w.channels) : "all channels";
  Chart c(kNarrow, kNarrowHeight, fmt::format("{} weights, {}", w.layer, which), "weight value", "weights per bin");
  if (w.convolution)  // shorter: the subtitle must fit the narrow chart
    c.subtitle(fmt::format("BN folded; {}s = {}, q = {}..{}", w.channel >= 0 ? "largest-scale channel; " : "",
                           significant(w.scale), fixed(w.quant_min, 0), fixed(w.quant_max, 0)));
  else
    c.subtitle(fmt::format("{}scale s = {}, levels q = {}..{}", w.channel >= 0 ? "largest-scale channel; " : "",
                           significant(w.scale), fixed(w.quant_min, 0), fixed(w.quant_max, 0)));
  const double g_lo = w.scale * (w.quant_min - w.zero_point), g_hi = w.scale * (w.quant_max - w.zero_point);
  double lo = std::min({w.histogram.lo, finite(g_lo) ? g_lo : w.histogram.lo, w.weight_min});
  double hi = std::max({w.histogram.hi, finite(g_hi) ? g_hi : w.histogram.hi, w.weight_max});
  if (!finite(lo) || !finite(hi) || !(hi > lo)) lo = -1, hi = 1;
  const double pad = (hi - lo) * 0.07;
  c.x_range(lo - pad, hi + pad);
  double top = 1;
  for (double n : w.histogram.counts)
    if (finite(n)) top = std::max(top, n);
  c.y_range(0, top * 1.1);
  c.x_ticks(linear_ticks(lo - pad, hi + pad, 5));
  c.y_ticks(linear_ticks(0, top * 1.1, 5));
  const size_t bins = w.histogram.counts.size();
  const double bw = bins ? (w.histogram.hi - w.histogram.lo) / static_cast<double>(bins) : 0;
  for (size_t i = 0; i < bins; ++i)
    if (w.histogram.counts[i] > 0)
      c.bar(w.histogram.lo + bw * i, w.histogram.lo + bw * (i + 1), 0, w.histogram.counts[i], kSky, 1, "white");
  // The grid: every k-th level, k a power of two keeping lines >= 5 px apart.
  int k = 1;
  const double spacing = std::fabs(c.px(w.scale) - c.px(0));
  if (w.scale > 0 && finite(w.scale)) {
    while (spacing * k < 5 && k < 1 << 20) k *= 2;
    for (int q = w.quant_min; q <= w.quant_max; ++q)
      if ((q - w.zero_point) % k == 0) c.vline(w.scale * (q - w.zero_point), kInk, 0.7, "", 0.55);
    c.vline(g_lo, kVermillion, 2.2);
    c.vline(g_hi, kVermillion, 2.2);
    // Rotated along each clipping line, on its outer side.
    c.label(g_lo, (c.top() + c.bottom()) / 2, fmt::format("q = {} (clip)", fixed(w.quant_min, 0)), "middle", 11.5, kVermillion,
            -90, "normal", -5);
    c.label(g_hi, (c.top() + c.bottom()) / 2, fmt::format("q = {} (clip)", fixed(w.quant_max, 0)), "middle", 11.5, kVermillion,
            90, "normal", 5);
  }
  c.legend({{LegendEntry::box, "float weights", kSky},
            {LegendEntry::line, k == 1 ? "grid level s·q" : fmt::format("grid level s·q (every {}th)", k), kInk, "", 1, 0.7},
            {LegendEntry::line, "clipping ends s·qmin, s·qmax", kVermillion, "", 2.2}},
           LegendPlace::below);
  return c.svg(id);
}

// 3. One layer's output: what the PTQ observer saw, the PTQ and QAT ranges.
std::string activation_chart(const ActivationPanel& a, int id) {
  Chart c(kNarrow, kNarrowHeight, fmt::format("{} {}", a.layer, a.what), "activation value", "values per bin (log scale)");
  if (a.ptq)
    c.subtitle(fmt::format("PTQ range {}..{}, clips {}% of the values seen", fixed(a.ptq->lo, 2), fixed(a.ptq->hi, 2),
                           fixed(100 * a.ptq_clipped_fraction, a.ptq_clipped_fraction < 0.001 ? 3 : 2)));
  double lo = std::min({0.0, a.seen_min, a.histogram.lo}), hi = std::max({a.seen_max, a.histogram.hi});
  for (auto& r : {a.ptq, a.qat})
    if (r && finite(r->lo) && finite(r->hi)) lo = std::min(lo, r->lo), hi = std::max(hi, r->hi);
  if (!finite(lo) || !finite(hi) || !(hi > lo)) lo = 0, hi = 1;
  const double pad = (hi - lo) * 0.04;
  c.x_range(lo - pad, hi + pad);
  double top = 1;
  for (double n : a.histogram.counts)
    if (finite(n)) top = std::max(top, n);
  // Head room above the tallest bar for the legend-free top of the plot.
  c.y_range(0.5, top * 4, true);
  c.x_ticks(linear_ticks(lo - pad, hi + pad, 5));
  c.y_ticks(log_ticks(0.5, top * 4));
  if (a.ptq) c.bar(a.ptq->lo, a.ptq->hi, c.y_min(), c.y_max(), kGreen, 0.12);
  const size_t bins = a.histogram.counts.size();
  const double bw = bins ? (a.histogram.hi - a.histogram.lo) / static_cast<double>(bins) : 0;
  for (size_t i = 0; i < bins; ++i)
    if (a.histogram.counts[i] > 0)
      c.bar(a.histogram.lo + bw * i, a.histogram.lo + bw * (i + 1), c.y_min(), a.histogram.counts[i], kHistogramGrey);
  c.vline(a.seen_max, kInk, 1.5, "2 3");
  if (a.seen_min < 0) c.vline(a.seen_min, kInk, 1.5, "2 3");
  if (a.ptq) {
    c.vline(a.ptq->lo, kGreen, 2.4);
    c.vline(a.ptq->hi, kGreen, 2.4);
  }
  if (a.qat) {
    c.vline(a.qat->lo, kVermillion, 2.4, "7 4");
    c.vline(a.qat->hi, kVermillion, 2.4, "7 4");
  }
  std::vector<LegendEntry> legend = {{LegendEntry::box, "values seen in calibration", kHistogramGrey}};
  if (a.ptq) legend.push_back({LegendEntry::box, "PTQ range (histogram observer)", kGreen, "", 2, 0.25});
  if (a.qat) legend.push_back({LegendEntry::line, "QAT range (moving-average min/max)", kVermillion, "7 4", 2.4});
  legend.push_back({LegendEntry::line, "extremes seen", kInk, "2 3", 1.5});
  c.legend(legend, LegendPlace::below);
  return c.svg(id);
}

// The layers of an SQNR chart, in the order they first appear.
std::vector<std::string> sqnr_layers(const std::vector<SqnrSet>& sets, bool outputs) {
  std::vector<std::string> layers;
  for (auto& s : sets)
    for (auto& r : outputs ? s.outputs : s.weights)
      if (std::find(layers.begin(), layers.end(), r.name) == layers.end()) layers.push_back(r.name);
  return layers;
}

// Up to this many layers an SQNR chart keeps the page's width; a CNN's
// dozens of convolutions get a wider chart (scrolled sideways) with the
// layer names written upwards.
constexpr size_t kLayersAcross = 8;

// 4. Per-layer SQNR bars of every method.
std::string sqnr_chart(const std::vector<SqnrSet>& sets, bool outputs, int64_t samples, int id) {
  const std::vector<std::string> layers = sqnr_layers(sets, outputs);
  const bool many = layers.size() > kLayersAcross;
  double width = kWide, label_room = 0;
  if (many) {
    width = std::max(kWide, 100 + static_cast<double>(layers.size()) * (12.0 * static_cast<double>(sets.size()) + 12));
    for (auto& l : layers) label_room = std::max(label_room, text_width(l, 12));
  }
  Chart c(width, kWideHeight + label_room, outputs ? "SQNR of each layer's output" : "SQNR of each layer's weights", "layer",
          "SQNR (dB), higher is better");
  if (many) c.vertical_x_labels(label_room);
  c.subtitle(outputs ? fmt::format("against the float computation each one rounds, on {} test images", samples)
                     : "each int8 weight against the float weight it was rounded from");
  double top = 10, bottom = 0;
  for (auto& s : sets)
    for (auto& r : outputs ? s.outputs : s.weights)
      if (finite(r.sqnr_db)) top = std::max(top, r.sqnr_db), bottom = std::min(bottom, r.sqnr_db);
  const double y_hi = top * 1.18;
  c.x_range(0, std::max<double>(1, static_cast<double>(layers.size())));
  c.y_range(bottom, y_hi);
  c.y_ticks(linear_ticks(bottom, y_hi, 6));
  std::vector<Tick> xt;
  for (size_t i = 0; i < layers.size(); ++i) xt.push_back({i + 0.5, layers[i]});
  c.x_ticks(xt);
  const double n = static_cast<double>(std::max<size_t>(1, sets.size()));
  const double bar_w = 0.74 / n;
  std::vector<LegendEntry> legend;
  for (size_t m = 0; m < sets.size(); ++m) {
    const std::string colour = method_style(sets[m].method).colour;
    legend.push_back({LegendEntry::box, sets[m].method, colour});
    for (auto& r : outputs ? sets[m].outputs : sets[m].weights) {
      const size_t i = std::find(layers.begin(), layers.end(), r.name) - layers.begin();
      const double x0 = i + 0.13 + bar_w * m, x1 = x0 + bar_w * 0.92;
      const double v = finite(r.sqnr_db) ? r.sqnr_db : r.sqnr_db > 0 ? y_hi : bottom;
      c.bar(x0, x1, 0, v, colour);
      const std::string text = finite(r.sqnr_db) ? fixed(r.sqnr_db, 1) : r.sqnr_db > 0 ? "∞" : "−∞";
      if (many)  // narrow bars: the value reads upwards from the bar's top
        c.label((x0 + x1) / 2, std::max(c.top() + 30, c.py(std::max(0.0, v)) - 4), text, "start", 10.5, kInk, -90, "normal", 3.5);
      else
        c.label((x0 + x1) / 2, std::max(c.top() + 12, c.py(std::max(0.0, v)) - 5), text, "middle", 11.5);
    }
  }
  c.legend(legend, LegendPlace::below);
  return c.svg(id);
}

// ---------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------

constexpr const char* kStyle = R"(
body { font-family: "DejaVu Sans", Verdana, sans-serif; color: #222; background: #fff;
       max-width: 1340px; margin: 20px auto; padding: 0 16px; }
h1 { font-size: 26px; margin: 0 0 4px 0; }
h2 { font-size: 20px; margin: 30px 0 6px 0; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
p { font-size: 15px; line-height: 1.45; max-width: 1080px; margin: 6px 0 10px 0; }
p.subtitle { color: #555; margin-top: 0; }
p.note { font-size: 13px; color: #555; }
div.row { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
div.wide { overflow-x: auto; margin-bottom: 14px; }
svg.chart { border: 1px solid #e2e2e2; }
table { border-collapse: collapse; font-size: 15px; margin: 8px 0; }
th, td { padding: 6px 14px; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3f3f3; }
th:first-child, td:first-child { text-align: left; }
span.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: -1px; }
)";

std::string summary_table(const ReportRun& run) {
  const SummaryRow* fl = nullptr;
  for (auto& r : run.table)
    if (r.method == "float") fl = &r;
  std::string s = "<table>\n<tr><th>method</th><th>test accuracy</th><th>agreement</th><th>model size</th>";
  if (fl) s += "<th>size vs float</th>";
  s += "<th>latency, batch 1</th><th>latency, batch 64</th>";
  if (fl) s += "<th>speed-up vs float, batch 64</th>";
  s += "</tr>\n";
  for (auto& r : run.table) {
    s += fmt::format(R"(<tr><td><span class="swatch" style="background: {}"></span>{}</td>)", method_style(r.method).colour,
                     escape(r.method));
    s += fmt::format("<td>{}%</td><td>{}% vs {}</td><td>{} KB</td>", fixed(r.accuracy, 2), fixed(r.agreement, 2),
                     escape(r.agreement_with), fixed(r.model_bytes / 1024.0, 1));
    if (fl) s += fmt::format("<td>{}</td>", fl->model_bytes > 0 ? fixed(double(r.model_bytes) / fl->model_bytes, 2) + "×" : "n/a");
    s += fmt::format("<td>{} µs</td><td>{} µs</td>", fixed(r.latency_us_batch_1, 1), fixed(r.latency_us_batch_64, 1));
    if (fl)
      s += fmt::format("<td>{}</td>",
                       r.latency_us_batch_64 > 0 ? fixed(fl->latency_us_batch_64 / r.latency_us_batch_64, 2) + "×" : "n/a");
    s += "</tr>\n";
  }
  return s + "</table>\n";
}
}  // namespace

std::string render_report(const ReportData& d) {
  int id = 0;
  const ReportRun& run = d.run;
  std::string h;
  h += "<!DOCTYPE html>\n";
  h += "<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n";
  h += "<title>" + escape(run.title) + "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n";
  h += "<h1>" + escape(run.title) + "</h1>\n";
  if (!run.subtitle.empty()) h += "<p class=\"subtitle\">" + escape(run.subtitle) + "</p>\n";
  h += "<p>One float model, three ways to make it int8: quantization-aware training (QAT) fine-tunes the model while "
       "rounding its weights and activations as int8 will; post-training quantization (PTQ) only watches data flow "
       "through the trained model to choose ranges; dynamic quantization rounds the weights ahead of time and chooses "
       "each batch's activation range as it runs. The pictures show where each one loses precision.</p>\n";

  // 5 (first, as the result). The table.
  h += "<h2>Accuracy, size and speed</h2>\n";
  if (run.table.empty()) h += "<p class=\"note\">No summary table was recorded for this run.</p>\n";
  else {
    h += "<p>Test accuracy of each model; <em>agreement</em> is the share of test images on which it predicts the same "
         "class as the model named. int8 weights take a quarter of the bytes of float ones. Latency is the median time "
         "of one forward pass on one thread, for one image and for a batch of 64.</p>\n";
    h += summary_table(run);
    if (run.fake_quant_accuracy)
      h += fmt::format("<p class=\"note\">The QAT model before convert (fake quant, float arithmetic) scored {}%.</p>\n",
                       fixed(*run.fake_quant_accuracy, 2));
  }

  // 1. Training.
  h += "<h2>1. Training</h2>\n";
  if (run.float_history.empty() && run.qat_history.empty()) h += "<p class=\"note\">No training history was recorded.</p>\n";
  else {
    h += "<p>The float model trains first (blue); QAT then continues from it with fake quantization in every layer "
         "(vermillion, shaded epochs). The loss is the mean over each epoch's batches; accuracy is measured on the test set "
         "after each epoch. A QAT curve that stays close to the float one means the model has adapted to int8 rounding.</p>\n";
    h += "<div class=\"row\">\n" + training_chart(run, false, id++) + "\n";
    h += training_chart(run, true, id++) + "\n</div>\n";
  }

  // 2. Weights.
  h += "<h2>2. Weights on the int8 grid</h2>\n";
  if (d.weights.empty()) h += "<p class=\"note\">No quantized weights to show.</p>\n";
  else {
    const WeightPanel& w0 = d.weights.front();
    h += fmt::format(
        "<p>Each weight is rounded to the nearest grid level s·q (thin dark lines, q an integer from {} to {}); values "
        "beyond the thick vermillion lines would be clipped. With per-channel weights every output channel has its own "
        "scale s; shown is the channel with the largest s, the coarsest grid of the layer ({} grid). Symmetric min/max "
        "scaling stretches the grid until the largest |weight| just fits, so every weight's rounding error is at most "
        "s/2; a few outliers make s large and leave most levels unused.{}</p>\n",
        fixed(w0.quant_min, 0), fixed(w0.quant_max, 0), escape(w0.grid_from),
        std::any_of(d.weights.begin(), d.weights.end(), [](const WeightPanel& w) { return w.convolution; })
            ? " A convolution is shown as its int8 layer rounds it: with the BatchNorm after it folded in; its output "
              "channel is one filter (in / groups × kH × kW weights, 9 for a depthwise filter)."
            : "");
    h += "<div class=\"row\">\n";
    for (auto& w : d.weights) h += weight_chart(w, id++) + "\n";
    h += "</div>\n";
  }

  // 3. Activations.
  h += "<h2>3. Activation ranges chosen by the observers</h2>\n";
  if (d.activations.empty()) h += "<p class=\"note\">No observed activations to show.</p>\n";
  else {
    h += "<p>Grey: the histogram of a layer's outputs that the PTQ histogram observer collected during calibration "
         "(log scale: each grid line is ten times more values). Only the range between a method's two lines is "
         "representable in int8: PTQ's histogram observer (green band) may cut off a thin tail of rare large values "
         "to get a finer step for all others; QAT's moving-average min/max (dashed vermillion) follows the typical "
         "batch extremes. Values outside a range are clipped to its end.</p>\n";
    h += "<div class=\"row\">\n";
    for (auto& a : d.activations) h += activation_chart(a, id++) + "\n";
    h += "</div>\n";
  }

  // 4. SQNR.
  h += "<h2>4. Where the error is: SQNR per layer</h2>\n";
  if (d.sqnr.empty()) h += "<p class=\"note\">No quantized model to compare.</p>\n";
  else {
    h += "<p>The signal-to-quantization-noise ratio 10·log10(Σr² / Σ(r−q)²) of each int8 tensor q against its float "
         "reference r; every 6 dB is about one bit of precision. Each int8 model is compared with the float computation it "
         "rounds: PTQ and dynamic with the float model, QAT with the float model carrying its fine-tuned weights. Output "
         "errors add up from layer to layer; dynamic quantization usually loses least there, as it fits each batch's "
         "own activation range and returns float outputs instead of rounding them to u8. A layer far below the "
         "others is the one to keep in float.</p>\n";
    bool any_outputs = false;
    for (auto& s : d.sqnr) any_outputs |= !s.outputs.empty();
    // A network with many layers gets one wide chart per row, scrolled sideways.
    if (sqnr_layers(d.sqnr, false).size() > kLayersAcross || sqnr_layers(d.sqnr, true).size() > kLayersAcross) {
      h += "<div class=\"wide\">\n" + sqnr_chart(d.sqnr, false, d.sqnr_samples, id++) + "\n</div>\n";
      if (any_outputs) h += "<div class=\"wide\">\n" + sqnr_chart(d.sqnr, true, d.sqnr_samples, id++) + "\n</div>\n";
    } else {
      h += "<div class=\"row\">\n" + sqnr_chart(d.sqnr, false, d.sqnr_samples, id++) + "\n";
      if (any_outputs) h += sqnr_chart(d.sqnr, true, d.sqnr_samples, id++) + "\n";
      h += "</div>\n";
    }
  }
  h += "<p class=\"note\">Drawn by tinyqat (tools/cli/report.cpp); how to read each picture: docs/report.md.</p>\n";
  h += "</body>\n</html>\n";
  return h;
}

std::string write_report(const std::string& dir, const ReportRun& run, const ReportModels& models, const Tensor& inputs) {
  fs::create_directories(dir);
  const std::string path = (fs::path(dir) / kReportFile).string();
  io::write_file_atomically(path, render_report(gather_report(run, models, inputs)));
  return path;
}
std::string write_report_from_workdir(const std::string& workdir, const std::string& out_dir, const io::Dataset& test,
                                      int64_t samples) {
  const std::string run_path = (fs::path(workdir) / kReportRunFile).string();
  ReportRun run;
  if (fs::exists(run_path)) run = load_report_run(run_path);
  else run.subtitle = fmt::format("models from {} (no {}: training curves and table left out)", workdir, kReportRunFile);
  return write_report(out_dir, run, load_report_models(workdir), report_inputs(test, samples));
}

}  // namespace tq::cli
