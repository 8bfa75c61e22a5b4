// A small SVG plotting kit for the HTML report (report.h, docs/report.md):
// a Chart is a frame with linear or log axes, "nice" ticks, a title, axis
// labels and a legend; data is drawn into it in data coordinates. Every
// coordinate written goes through num(), which never prints a non-finite
// number, so a chart stays well-formed XML whatever it is given.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace tq::cli::svg {

// Okabe-Ito colours: told apart with every common colour-vision deficiency.
constexpr const char* kBlue = "#0072B2";
constexpr const char* kVermillion = "#D55E00";
constexpr const char* kGreen = "#009E73";
constexpr const char* kPurple = "#CC79A7";
constexpr const char* kSky = "#56B4E9";
constexpr const char* kOrange = "#E69F00";
constexpr const char* kInk = "#222222";
constexpr const char* kHistogramGrey = "#A8A8A8";

// Text for XML: & < > " ' escaped.
std::string escape(const std::string& s);
// A coordinate: one decimal, and never "nan" or "inf" (a non-finite value
// would make the SVG invalid; such values are filtered earlier, this is the
// last guard).
std::string num(double v);
bool finite(double v);
// A number for people: a real minus sign, `decimals` digits.
std::string fixed(double v, int decimals);
// A scale or other small positive number with 3 significant digits.
std::string significant(double v);

struct Tick {
  double value;
  std::string label;
};

// Ticks at a step of 1, 2 or 5 times a power of ten, about `target` of them
// over [lo, hi], at least `min_step` apart.
std::vector<Tick> linear_ticks(double lo, double hi, int target, double min_step = 0);
// Powers of ten in [lo, hi], labelled 1, 10, 100, 1k, 10k, ...
std::vector<Tick> log_ticks(double lo, double hi);
// Rough width of a label in pixels (DejaVu Sans averages ~0.6 em per character).
double text_width(const std::string& s, double font_size);

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
  void y_range(double lo, double hi, bool log = false);
  void x_ticks(std::vector<Tick> t, bool grid = false) { x_ticks_ = std::move(t), x_grid_ = grid; }
  void y_ticks(std::vector<Tick> t) { y_ticks_ = std::move(t); }
  void legend(std::vector<LegendEntry> entries, LegendPlace place) { legend_ = std::move(entries), legend_place_ = place; }
  // x tick labels turned by -90 degrees (reading upwards), for many long
  // labels; the space below the plot grows by `label_room` pixels for them.
  void vertical_x_labels(double label_room) { vertical_x_labels_ = true, extra_bottom_ = std::max(0.0, label_room); }

  // The plot area in pixels, and data coordinates mapped into it.
  double left() const { return 70; }
  double right() const { return width_ - 18; }
  double top() const { return subtitle_.empty() ? 40 : 58; }
  double bottom() const { return height_ - 52 - extra_bottom_; }
  double px(double x) const { return left() + (x - x0_) / (x1_ - x0_) * (right() - left()); }
  double py(double y) const;
  double y_min() const { return y0_; }
  double y_max() const { return y1_; }

  // ---- Data, in data coordinates (clipped to the plot area) ----
  void bar(double x_lo, double x_hi, double y_lo, double y_hi, const std::string& fill, double opacity = 1,
           const std::string& stroke = "");
  // A vertical line across the whole plot at data x.
  void vline(double x, const std::string& colour, double width, const std::string& dash = "", double opacity = 1);
  void polyline(const std::vector<std::pair<double, double>>& points, const std::string& colour, double width,
                const std::string& dash = "");
  // 'o' circle, 's' square.
  void marker(double x, double y, char shape, const std::string& colour);
  // Text in data coordinates (x) and pixels (y), drawn above the data.
  void label(double x, double y_px, const std::string& text, const std::string& anchor = "middle", double size = 12,
             const std::string& colour = kInk, double rotate = 0, const std::string& weight = "normal", double dx = 0);

  // The finished <svg>. `id` makes the clip-path name unique in the page.
  std::string svg(int id) const;

 private:
  static std::string marker_svg(double X, double Y, char shape, const std::string& colour);
  static void fix_range(double& lo, double& hi);

  // Legend geometry: entries in rows below the plot, or stacked in a corner.
  static constexpr double kRow = 19, kSwatch = 26, kFont = 12.5;
  double entry_width(const LegendEntry& e) const { return kSwatch + 8 + text_width(e.label, kFont) + 18; }
  std::vector<std::vector<const LegendEntry*>> legend_rows() const;
  double legend_height() const;
  std::string swatch(const LegendEntry& e, double x, double y_mid) const;
  std::string legend_svg() const;

  double width_, height_;
  std::string title_, subtitle_, x_label_, y_label_;
  double x0_ = 0, x1_ = 1, y0_ = 0, y1_ = 1;
  bool y_log_ = false, x_grid_ = false, vertical_x_labels_ = false;
  double extra_bottom_ = 0;
  std::vector<Tick> x_ticks_, y_ticks_;
  std::vector<LegendEntry> legend_;
  LegendPlace legend_place_ = LegendPlace::top_right;
  std::string body_, overlay_;
};

}  // namespace tq::cli::svg
