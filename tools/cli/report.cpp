// The HTML report (report.h, docs/report.md). Three parts:
//   1. gathering: plain numbers read from the models' weights, observers and
//      qparams, and the SQNR comparisons of compare.h;
//   2. a small SVG plotting kit: a Chart is a frame with linear or log axes,
//      "nice" ticks, a title, axis labels and a legend; data is drawn into it
//      in data coordinates;
//   3. the page: the five pictures and the table, each with a few sentences
//      for a learner.
// Every coordinate written goes through num(), which never prints a non-finite
// number: the page stays well-formed XHTML whatever the models hold.
#include "report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/data_loader.h"
#include "io/model_file.h"
#include "nn/linear.h"
#include "quant/dynamic_linear.h"
#include "quant/fake_quantize.h"
#include "quant/fused.h"
#include "quant/histogram_observer.h"
#include "quant/observer.h"
#include "quant/qat_linear.h"
#include "quant/quantized_linear.h"
#include "tensor/ops.h"

namespace tq::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

// Okabe-Ito colours: told apart with every common colour-vision deficiency.
constexpr const char* kBlue = "#0072B2";
constexpr const char* kVermillion = "#D55E00";
constexpr const char* kGreen = "#009E73";
constexpr const char* kPurple = "#CC79A7";
constexpr const char* kSky = "#56B4E9";
constexpr const char* kOrange = "#E69F00";
constexpr const char* kInk = "#222222";
constexpr const char* kHistogramGrey = "#A8A8A8";

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

std::string escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// A coordinate: one decimal, and never "nan" or "inf" (a non-finite value
// would make the SVG invalid; such values are filtered earlier, this is the
// last guard).
std::string num(double v) {
  if (!std::isfinite(v)) v = 0;
  if (std::fabs(v) < 0.05) v = 0;  // no "-0.0"
  return fmt::format("{:.1f}", v);
}

bool finite(double v) { return std::isfinite(v); }

// A number for people: a real minus sign, `decimals` digits.
std::string fixed(double v, int decimals) {
  if (!finite(v)) return v > 0 ? "∞" : v < 0 ? "−∞" : "n/a";
  std::string s = fmt::format("{:.{}f}", v, decimals);
  if (s.find_first_not_of("-0.") == std::string::npos) s = fmt::format("{:.{}f}", 0.0, decimals);
  if (!s.empty() && s[0] == '-') s = "−" + s.substr(1);
  return s;
}

// A scale or other small positive number with 3 significant digits.
std::string significant(double v) {
  if (!finite(v)) return fixed(v, 0);
  if (v == 0) return "0";
  std::string s = fmt::format("{:.3g}", v);
  if (!s.empty() && s[0] == '-') s = "−" + s.substr(1);
  return s;
}

nn::Module* find_module(nn::Module* model, const std::string& path) {
  if (!model) return nullptr;
  for (auto& [p, m] : model->named_modules())
    if (p == path) return m;
  return nullptr;
}

// ---------------------------------------------------------------------------
// Ticks
// ---------------------------------------------------------------------------

struct Tick {
  double value;
  std::string label;
};

// A step of 1, 2 or 5 times a power of ten giving about `target` intervals.
double nice_step(double range, int target) {
  if (!(range > 0) || !finite(range)) return 1;
  const double raw = range / std::max(1, target);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / magnitude;
  const double nice = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  return nice * magnitude;
}

int decimals_for(double step) {
  if (!(step > 0) || !finite(step)) return 0;
  return std::clamp(static_cast<int>(std::ceil(-std::log10(step) - 1e-9)), 0, 8);
}

std::vector<Tick> linear_ticks(double lo, double hi, int target, double min_step = 0) {
  std::vector<Tick> ticks;
  if (!finite(lo) || !finite(hi) || !(hi > lo)) return ticks;
  const double step = std::max(nice_step(hi - lo, target), min_step);
  const int dec = decimals_for(step);
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k += 1) ticks.push_back({k * step, fixed(k * step, dec)});
  return ticks;
}

// Powers of ten in [lo, hi], labelled 1, 10, 100, 1k, 10k, ...
std::vector<Tick> log_ticks(double lo, double hi) {
  std::vector<Tick> ticks;
  if (!(lo > 0) || !(hi > lo) || !finite(hi)) return ticks;
  for (int e = static_cast<int>(std::ceil(std::log10(lo) - 1e-9)); std::pow(10.0, e) <= hi * (1 + 1e-9); ++e) {
    static const char* const kNames[] = {"1", "10", "100", "1k", "10k", "100k", "1M", "10M", "100M", "1G"};
    std::string label = e >= 0 && e < 10 ? kNames[e] : fmt::format("1e{}", e);
    if (e < 0) label = fixed(std::pow(10.0, e), -e);
    ticks.push_back({std::pow(10.0, e), label});
  }
  return ticks;
}

// Rough width of a label in pixels (DejaVu Sans averages ~0.6 em per character).
double text_width(const std::string& s, double font_size) {
  size_t chars = 0;
  for (unsigned char c : s) chars += (c & 0xC0) != 0x80;  // count UTF-8 code points
  return static_cast<double>(chars) * font_size * 0.6;
}

// ---------------------------------------------------------------------------
// The chart kit
// ---------------------------------------------------------------------------

struct LegendEntry {
  enum Kind { line, box, marker_line } kind;
  std::string label;
  std::string colour;
  std::string dash = "";
  double width = 2;
  double opacity = 1;
  char marker = 'o';  // 'o' circle, 's' square (marker_line only)
};

enum class LegendPlace { top_left, top_right, bottom_left, bottom_right, below };

// SVG drawing in data coordinates inside a frame.
class Chart {
 public:
  Chart(double width, double height, std::string title, std::string x_label, std::string y_label)
      : width_(width), height_(height), title_(std::move(title)), x_label_(std::move(x_label)), y_label_(std::move(y_label)) {}

  void subtitle(std::string s) { subtitle_ = std::move(s); }
  void x_range(double lo, double hi) { fix_range(lo, hi), x0_ = lo, x1_ = hi; }
  void y_range(double lo, double hi, bool log = false) {
    y_log_ = log;
    if (log) {
      lo = lo > 0 && finite(lo) ? lo : 1;
      hi = hi > lo && finite(hi) ? hi : lo * 10;
    }
    fix_range(lo, hi);
    y0_ = lo, y1_ = hi;
  }
  void x_ticks(std::vector<Tick> t, bool grid = false) { x_ticks_ = std::move(t), x_grid_ = grid; }
  void y_ticks(std::vector<Tick> t) { y_ticks_ = std::move(t); }
  void legend(std::vector<LegendEntry> entries, LegendPlace place) { legend_ = std::move(entries), legend_place_ = place; }

  double left() const { return 70; }
  double right() const { return width_ - 18; }
  double top() const { return subtitle_.empty() ? 40 : 58; }
  double bottom() const { return height_ - 52; }
  double px(double x) const { return left() + (x - x0_) / (x1_ - x0_) * (right() - left()); }
  double py(double y) const {
    if (y_log_) {
      y = std::max(y, y0_);
      return bottom() - (std::log10(y) - std::log10(y0_)) / (std::log10(y1_) - std::log10(y0_)) * (bottom() - top());
    }
    return bottom() - (y - y0_) / (y1_ - y0_) * (bottom() - top());
  }
  double y_min() const { return y0_; }
  double y_max() const { return y1_; }

  // ---- Data, in data coordinates (clipped to the plot area) ----
  void bar(double x_lo, double x_hi, double y_lo, double y_hi, const std::string& fill, double opacity = 1,
           const std::string& stroke = "") {
    if (!finite(x_lo) || !finite(x_hi) || !finite(y_lo) || !finite(y_hi)) return;
    const double a = px(x_lo), b = px(x_hi), top = py(y_hi), base = py(y_lo);
    body_ += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="{}")", num(std::min(a, b)),
                         num(std::min(top, base)), num(std::fabs(b - a)), num(std::fabs(base - top)), fill);
    if (opacity < 1) body_ += fmt::format(R"( fill-opacity="{}")", opacity);
    if (!stroke.empty()) body_ += fmt::format(R"( stroke="{}" stroke-width="0.5")", stroke);
    body_ += "/>\n";
  }
  // A vertical line across the whole plot at data x.
  void vline(double x, const std::string& colour, double width, const std::string& dash = "", double opacity = 1) {
    if (!finite(x)) return;
    body_ += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="{3}" stroke-width="{4}")", num(px(x)),
                         num(top()), num(bottom()), colour, width);
    if (!dash.empty()) body_ += fmt::format(R"( stroke-dasharray="{}")", dash);
    if (opacity < 1) body_ += fmt::format(R"( stroke-opacity="{}")", opacity);
    body_ += "/>\n";
  }
  void polyline(const std::vector<std::pair<double, double>>& points, const std::string& colour, double width,
                const std::string& dash = "") {
    std::string pts;
    for (auto& [x, y] : points)
      if (finite(x) && finite(y)) pts += num(px(x)) + "," + num(py(y)) + " ";
    if (pts.empty()) return;
    pts.pop_back();
    body_ += fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round")", pts,
                         colour, width);
    if (!dash.empty()) body_ += fmt::format(R"( stroke-dasharray="{}")", dash);
    body_ += "/>\n";
  }
  void marker(double x, double y, char shape, const std::string& colour) {
    if (!finite(x) || !finite(y)) return;
    body_ += marker_svg(px(x), py(y), shape, colour);
  }
  // Text in data coordinates (x) and pixels (y), drawn above the data.
  void label(double x, double y_px, const std::string& text, const std::string& anchor = "middle", double size = 12,
             const std::string& colour = kInk, double rotate = 0, const std::string& weight = "normal", double dx = 0) {
    if (!finite(x)) return;
    const double X = px(x) + dx;
    overlay_ += fmt::format(R"(<text x="{}" y="{}" font-size="{}" text-anchor="{}" fill="{}")", num(X), num(y_px), size,
                            anchor, colour);
    if (weight != "normal") overlay_ += fmt::format(R"( font-weight="{}")", weight);
    if (rotate != 0) overlay_ += fmt::format(R"~( transform="rotate({} {} {})")~", rotate, num(X), num(y_px));
    overlay_ += ">" + escape(text) + "</text>\n";
  }

  static std::string marker_svg(double X, double Y, char shape, const std::string& colour) {
    if (shape == 's')
      return fmt::format(R"(<rect x="{}" y="{}" width="8" height="8" fill="{}" stroke="white" stroke-width="1"/>)" "\n",
                         num(X - 4), num(Y - 4), colour);
    return fmt::format(R"(<circle cx="{}" cy="{}" r="4.5" fill="{}" stroke="white" stroke-width="1"/>)" "\n", num(X),
                       num(Y), colour);
  }

  // The finished <svg>. `id` makes the clip-path name unique in the page.
  std::string svg(int id) const {
    const double legend_h = legend_height();
    const double H = height_ + legend_h;
    std::string s = fmt::format(
        R"(<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{0}" height="{1}" viewBox="0 0 {0} {1}" )"
        R"(font-family="DejaVu Sans, Verdana, sans-serif" role="img">)" "\n",
        num(width_), num(H));
    s += "<title>" + escape(title_) + "</title>\n";
    s += fmt::format(R"(<rect x="0" y="0" width="{}" height="{}" fill="white"/>)" "\n", num(width_), num(H));
    s += fmt::format(R"(<text class="chart-title" x="{}" y="22" font-size="15" font-weight="bold" fill="{}">{}</text>)" "\n",
                     num(left() - 50), kInk, escape(title_));
    if (!subtitle_.empty())
      s += fmt::format(R"(<text class="chart-subtitle" x="{}" y="41" font-size="12.5" fill="#444444">{}</text>)" "\n",
                       num(left() - 50), escape(subtitle_));
    // Grid lines behind the data.
    for (auto& t : y_ticks_)
      s += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#E4E4E4" stroke-width="1"/>)" "\n", num(left()),
                       num(py(t.value)), num(right()));
    if (x_grid_)
      for (auto& t : x_ticks_)
        s += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#E4E4E4" stroke-width="1"/>)" "\n",
                         num(px(t.value)), num(top()), num(bottom()));
    s += fmt::format(R"(<defs><clipPath id="plot{}"><rect x="{}" y="{}" width="{}" height="{}"/></clipPath></defs>)" "\n",
                     id, num(left()), num(top() - 1), num(right() - left()), num(bottom() - top() + 1));
    s += fmt::format(R"~(<g clip-path="url(#plot{})">)~" "\n", id) + body_ + "</g>\n";
    // Axes, ticks and tick labels.
    s += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#333333" stroke-width="1.2"/>)" "\n", num(left()),
                     num(bottom()), num(right()));
    s += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#333333" stroke-width="1.2"/>)" "\n", num(left()),
                     num(top()), num(bottom()));
    for (auto& t : x_ticks_) {
      const double X = px(t.value);
      s += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#333333" stroke-width="1"/>)" "\n", num(X),
                       num(bottom()), num(bottom() + 5));
      s += fmt::format(R"(<text class="tick" x="{}" y="{}" font-size="12" text-anchor="middle" fill="#333333">{}</text>)" "\n",
                       num(X), num(bottom() + 18), escape(t.label));
    }
    for (auto& t : y_ticks_) {
      const double Y = py(t.value);
      s += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#333333" stroke-width="1"/>)" "\n", num(left() - 5),
                       num(Y), num(left()));
      s += fmt::format(R"(<text class="tick" x="{}" y="{}" font-size="12" text-anchor="end" fill="#333333">{}</text>)" "\n",
                       num(left() - 8), num(Y + 4), escape(t.label));
    }
    s += fmt::format(R"(<text class="axis-label" x="{}" y="{}" font-size="13" text-anchor="middle" fill="{}">{}</text>)" "\n",
                     num((left() + right()) / 2), num(bottom() + 38), kInk, escape(x_label_));
    const double yl_x = 18, yl_y = (top() + bottom()) / 2;
    s += fmt::format(R"(<text class="axis-label" x="{0}" y="{1}" font-size="13" text-anchor="middle" fill="{2}" )"
                     R"~(transform="rotate(-90 {0} {1})">{3}</text>)~" "\n",
                     num(yl_x), num(yl_y), kInk, escape(y_label_));
    s += overlay_;
    s += legend_svg();
    s += "</svg>";
    return s;
  }

 private:
  static void fix_range(double& lo, double& hi) {
    if (!finite(lo)) lo = 0;
    if (!finite(hi)) hi = lo + 1;
    if (!(hi > lo)) {
      const double pad = std::max(1e-6, std::fabs(lo) * 0.1);
      lo -= pad, hi += pad;
    }
  }

  // Legend geometry: entries in rows below the plot, or stacked in a corner.
  static constexpr double kRow = 19, kSwatch = 26, kFont = 12.5;
  double entry_width(const LegendEntry& e) const { return kSwatch + 8 + text_width(e.label, kFont) + 18; }
  std::vector<std::vector<const LegendEntry*>> legend_rows() const {
    std::vector<std::vector<const LegendEntry*>> rows;
    const double avail = width_ - 24;
    double used = avail + 1;
    for (auto& e : legend_) {
      const double w = entry_width(e);
      if (legend_place_ != LegendPlace::below || used + w > avail) {
        rows.emplace_back();
        used = 0;
      }
      rows.back().push_back(&e);
      used += w;
    }
    return rows;
  }
  double legend_height() const {
    if (legend_.empty() || legend_place_ != LegendPlace::below) return 0;
    return static_cast<double>(legend_rows().size()) * kRow + 6;
  }
  std::string swatch(const LegendEntry& e, double x, double y_mid) const {
    std::string s;
    if (e.kind == LegendEntry::box) {
      s += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="11" fill="{}")", num(x), num(y_mid - 5.5), num(kSwatch),
                       e.colour);
      if (e.opacity < 1) s += fmt::format(R"( fill-opacity="{}")", e.opacity);
      s += fmt::format(R"( stroke="{}" stroke-width="1"/>)" "\n", e.colour);
      return s;
    }
    s += fmt::format(R"(<line x1="{0}" y1="{2}" x2="{1}" y2="{2}" stroke="{3}" stroke-width="{4}")", num(x), num(x + kSwatch),
                     num(y_mid), e.colour, e.width);
    if (!e.dash.empty()) s += fmt::format(R"( stroke-dasharray="{}")", e.dash);
    if (e.opacity < 1) s += fmt::format(R"( stroke-opacity="{}")", e.opacity);
    s += "/>\n";
    if (e.kind == LegendEntry::marker_line) s += marker_svg(x + kSwatch / 2, y_mid, e.marker, e.colour);
    return s;
  }
  std::string legend_svg() const {
    if (legend_.empty()) return "";
    std::string s = "<g class=\"legend\">\n";
    auto rows = legend_rows();
    if (legend_place_ == LegendPlace::below) {
      double y = height_ + 2;
      for (auto& row : rows) {
        double x = 14;
        for (const LegendEntry* e : row) {
          s += swatch(*e, x, y);
          s += fmt::format(R"(<text x="{}" y="{}" font-size="{}" fill="{}">{}</text>)" "\n", num(x + kSwatch + 7), num(y + 4.5),
                           kFont, kInk, escape(e->label));
          x += entry_width(*e);
        }
        y += kRow;
      }
    } else {
      double w = 0;
      for (auto& e : legend_) w = std::max(w, entry_width(e));
      w -= 8;
      const double h = static_cast<double>(legend_.size()) * kRow + 8;
      const bool at_left = legend_place_ == LegendPlace::top_left || legend_place_ == LegendPlace::bottom_left;
      const bool at_top = legend_place_ == LegendPlace::top_left || legend_place_ == LegendPlace::top_right;
      const double x0 = at_left ? left() + 10 : right() - 10 - w;
      const double y0 = at_top ? top() + 8 : bottom() - 8 - h;
      s += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="white" fill-opacity="0.9" stroke="#BBBBBB" rx="3"/>)" "\n",
                       num(x0), num(y0), num(w), num(h));
      double y = y0 + 4 + kRow / 2;
      for (auto& e : legend_) {
        s += swatch(e, x0 + 8, y);
        s += fmt::format(R"(<text x="{}" y="{}" font-size="{}" fill="{}">{}</text>)" "\n", num(x0 + 8 + kSwatch + 7), num(y + 4.5),
                         kFont, kInk, escape(e.label));
        y += kRow;
      }
    }
    return s + "</g>\n";
  }

  double width_, height_;
  std::string title_, subtitle_, x_label_, y_label_;
  double x0_ = 0, x1_ = 1, y0_ = 0, y1_ = 1;
  bool y_log_ = false, x_grid_ = false;
  std::vector<Tick> x_ticks_, y_ticks_;
  std::vector<LegendEntry> legend_;
  LegendPlace legend_place_ = LegendPlace::top_right;
  std::string body_, overlay_;
};

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
  c.subtitle(fmt::format("{}scale s = {}, levels q = {}..{}", w.channel >= 0 ? "largest-scale channel; " : "", significant(w.scale),
                         fixed(w.quant_min, 0), fixed(w.quant_max, 0)));
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

// 4. Per-layer SQNR bars of every method.
std::string sqnr_chart(const std::vector<SqnrSet>& sets, bool outputs, int64_t samples, int id) {
  Chart c(kWide, kWideHeight, outputs ? "SQNR of each layer's output" : "SQNR of each layer's weights", "layer",
          "SQNR (dB), higher is better");
  c.subtitle(outputs ? fmt::format("against the float computation each one rounds, on {} test images", samples)
                     : "each int8 weight against the float weight it was rounded from");
  std::vector<std::string> layers;
  double top = 10, bottom = 0;
  for (auto& s : sets)
    for (auto& r : outputs ? s.outputs : s.weights) {
      if (std::find(layers.begin(), layers.end(), r.name) == layers.end()) layers.push_back(r.name);
      if (finite(r.sqnr_db)) top = std::max(top, r.sqnr_db), bottom = std::min(bottom, r.sqnr_db);
    }
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

// ---------------------------------------------------------------------------
// Gathering
// ---------------------------------------------------------------------------

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
  if (auto* q = dynamic_cast<quant::QuantizedLinear*>(m)) return q->weight().qparams();
  if (auto* d = dynamic_cast<quant::DynamicQuantizedLinear*>(m)) return d->weight().qparams();
  if (auto* p = dynamic_cast<quant::QATLinear*>(m))
    if (p->weight_quant->has_data()) return p->weight_quant->calculate_qparams();
  return std::nullopt;
}

// The module observing a layer's output, and its qparams.
std::optional<QParams> output_qparams(nn::Module* m) {
  if (auto* q = dynamic_cast<quant::QuantizedLinear*>(m)) return q->output_qparams();
  if (auto* p = dynamic_cast<quant::QATLinear*>(m))
    if (p->output_quant->has_data()) return p->output_quant->calculate_qparams();
  return std::nullopt;
}

WeightPanel weight_panel(const std::string& layer, const nn::Linear& fl, const QParams& qp, const std::string& grid_from) {
  WeightPanel w;
  w.layer = layer;
  w.grid_from = grid_from;
  w.channels = fl.weight.size(0);
  const std::vector<float> all = to_vector(fl.weight);  // (out, in)
  const int64_t in = fl.weight.size(1);
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
  bool relu = false;
  for (nn::Module* m : {calibrated, ptq_int8, qat_prepared, qat_int8}) {
    if (auto* p = dynamic_cast<quant::QATLinear*>(m)) relu |= p->fused_relu;
    if (auto* q = dynamic_cast<quant::QuantizedLinear*>(m)) relu |= q->fused_relu;
  }
  a.what = relu ? "output (after the fused ReLU)" : "output";
  // What the PTQ observer saw.
  const quant::HistogramObserver* hist = nullptr;
  const quant::MinMaxObserver* minmax = nullptr;
  if (auto* p = dynamic_cast<quant::QATLinear*>(calibrated)) {
    const quant::QParamsSource* src = &p->output_quant.get();
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

// The float model with the parameters of `trained` (same dotted names): the
// float computation a QAT model fine-tuned into, before any rounding.
std::shared_ptr<nn::Module> with_parameters_of(const nn::Module& float_model, const nn::Module& trained) {
  auto copy = copy_model(float_model);
  const auto source = trained.named_parameters();
  for (auto& [name, p] : copy->named_parameters())
    for (auto& [other, q] : source)
      if (other == name && p.shape() == q.shape()) kernels::copy_(p, q.detach());
  return copy;
}

bool has_fused_layers(nn::Module& m) {
  for (auto& [path, mod] : m.named_modules())
    if (mod->type_name().ends_with("LinearReLU")) return true;
  return false;
}

void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error(fmt::format("cannot write {}", tmp));
    f << text;
    f.flush();
    if (!f) throw std::runtime_error(fmt::format("writing {} failed", tmp));
  }
  fs::rename(tmp, path);
}

}  // namespace

// ---------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------

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
  write_atomically(path, j.dump(1) + "\n");
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

ReportData gather_report(const ReportRun& run, const ReportModels& models, const Tensor& inputs) {
  ReportData d;
  d.run = run;
  if (!models.float_model) throw std::invalid_argument("gather_report: the float model is required");
  nn::Module& fl = *models.float_model;
  std::vector<std::pair<std::string, nn::Linear*>> layers;
  for (auto& [path, m] : fl.named_modules())
    if (auto* lin = dynamic_cast<nn::Linear*>(m); lin && !path.empty()) layers.push_back({path, lin});

  for (auto& [path, lin] : layers) {
    // 2. Weights on the grid they are rounded to: PTQ's (the same float
    // weights), else dynamic's, else the calibrated model's observer.
    std::optional<WeightPanel> w;
    for (auto [model, name] : {std::pair{models.ptq_int8.get(), "PTQ int8"}, std::pair{models.dynamic_int8.get(), "dynamic int8"},
                               std::pair{models.ptq_calibrated.get(), "PTQ"}})
      if (!w)
        if (auto qp = weight_qparams(find_module(model, path))) w = weight_panel(path, *lin, *qp, name);
    if (w) d.weights.push_back(*w);
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
    SqnrSet s{method, quant::compare_weights(reference, *q), {}};
    if (inputs.defined()) {
      std::shared_ptr<nn::Module> fused;
      if (has_fused_layers(*q)) {
        // A model of the user's own module type cannot be copied through a
        // model file: its output bars are then left out.
        try {
          fused = copy_model(reference);
        } catch (const std::exception&) {
        }
        if (fused) quant::fuse_linear_relu(*fused);
      }
      if (fused || !has_fused_layers(*q)) s.outputs = quant::compare_model_outputs(fused ? *fused : reference, *q, inputs);
    }
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
        "s/2; a few outliers make s large and leave most levels unused.</p>\n",
        fixed(w0.quant_min, 0), fixed(w0.quant_max, 0), escape(w0.grid_from));
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
    h += "<div class=\"row\">\n" + sqnr_chart(d.sqnr, false, d.sqnr_samples, id++) + "\n";
    bool any_outputs = false;
    for (auto& s : d.sqnr) any_outputs |= !s.outputs.empty();
    if (any_outputs) h += sqnr_chart(d.sqnr, true, d.sqnr_samples, id++) + "\n";
    h += "</div>\n";
  }
  h += "<p class=\"note\">Drawn by tinyqat (tools/cli/report.cpp); how to read each picture: docs/report.md.</p>\n";
  h += "</body>\n</html>\n";
  return h;
}

std::string write_report(const std::string& dir, const ReportRun& run, const ReportModels& models, const Tensor& inputs) {
  fs::create_directories(dir);
  const std::string path = (fs::path(dir) / kReportFile).string();
  write_atomically(path, render_report(gather_report(run, models, inputs)));
  return path;
}

Tensor report_inputs(const io::Dataset& test, int64_t samples) {
  const int64_t n = std::clamp<int64_t>(samples, 1, std::max<int64_t>(1, test.size()));
  io::DataLoader loader(test.slice(0, n), {.batch_size = n, .shuffle = false});
  io::Batch b;
  if (!loader.next(b)) throw std::invalid_argument("report: the test set is empty");
  return b.images;
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
