#include "report_svg.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace tq::cli::svg {

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

namespace {

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

}  // namespace

std::vector<Tick> linear_ticks(double lo, double hi, int target, double min_step) {
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

// ---- Chart ----

void Chart::y_range(double lo, double hi, bool log) {
  y_log_ = log;
  if (log) {
    lo = lo > 0 && finite(lo) ? lo : 1;
    hi = hi > lo && finite(hi) ? hi : lo * 10;
  }
  fix_range(lo, hi);
  y0_ = lo, y1_ = hi;
}

double Chart::py(double y) const {
  if (y_log_) {
    y = std::max(y, y0_);
    return bottom() - (std::log10(y) - std::log10(y0_)) / (std::log10(y1_) - std::log10(y0_)) * (bottom() - top());
  }
  return bottom() - (y - y0_) / (y1_ - y0_) * (bottom() - top());
}

void Chart::bar(double x_lo, double x_hi, double y_lo, double y_hi, const std::string& fill, double opacity,
         const std::string& stroke) {
  if (!finite(x_lo) || !finite(x_hi) || !finite(y_lo) || !finite(y_hi)) return;
  const double a = px(x_lo), b = px(x_hi), top = py(y_hi), base = py(y_lo);
  body_ += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="{}")", num(std::min(a, b)),
                       num(std::min(top, base)), num(std::fabs(b - a)), num(std::fabs(base - top)), fill);
  if (opacity < 1) body_ += fmt::format(R"( fill-opacity="{}")", opacity);
  if (!stroke.empty()) body_ += fmt::format(R"( stroke="{}" stroke-width="0.5")", stroke);
  body_ += "/>\n";
}

void Chart::vline(double x, const std::string& colour, double width, const std::string& dash, double opacity) {
  if (!finite(x)) return;
  body_ += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="{3}" stroke-width="{4}")", num(px(x)),
                       num(top()), num(bottom()), colour, width);
  if (!dash.empty()) body_ += fmt::format(R"( stroke-dasharray="{}")", dash);
  if (opacity < 1) body_ += fmt::format(R"( stroke-opacity="{}")", opacity);
  body_ += "/>\n";
}

void Chart::polyline(const std::vector<std::pair<double, double>>& points, const std::string& colour, double width,
              const std::string& dash) {
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

void Chart::marker(double x, double y, char shape, const std::string& colour) {
  if (!finite(x) || !finite(y)) return;
  body_ += marker_svg(px(x), py(y), shape, colour);
}

void Chart::label(double x, double y_px, const std::string& text, const std::string& anchor, double size,
           const std::string& colour, double rotate, const std::string& weight, double dx) {
  if (!finite(x)) return;
  const double X = px(x) + dx;
  overlay_ += fmt::format(R"(<text x="{}" y="{}" font-size="{}" text-anchor="{}" fill="{}")", num(X), num(y_px), size,
                          anchor, colour);
  if (weight != "normal") overlay_ += fmt::format(R"( font-weight="{}")", weight);
  if (rotate != 0) overlay_ += fmt::format(R"~( transform="rotate({} {} {})")~", rotate, num(X), num(y_px));
  overlay_.append(">").append(escape(text)).append("</text>\n");
}

std::string Chart::marker_svg(double X, double Y, char shape, const std::string& colour) {
  if (shape == 's')
    return fmt::format(R"(<rect x="{}" y="{}" width="8" height="8" fill="{}" stroke="white" stroke-width="1"/>)" "\n",
                       num(X - 4), num(Y - 4), colour);
  return fmt::format(R"(<circle cx="{}" cy="{}" r="4.5" fill="{}" stroke="white" stroke-width="1"/>)" "\n", num(X),
                     num(Y), colour);
}

std::string Chart::svg(int id) const {
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
    if (vertical_x_labels_)
      s += fmt::format(R"~(<text class="tick" x="{0}" y="{1}" font-size="12" text-anchor="end" fill="#333333" )~"
                       R"~(transform="rotate(-90 {0} {1})">{2}</text>)~" "\n",
                       num(X + 4), num(bottom() + 9), escape(t.label));
    else
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
                   num((left() + right()) / 2), num(height_ - 14), kInk, escape(x_label_));
  const double yl_x = 18, yl_y = (top() + bottom()) / 2;
  s += fmt::format(R"(<text class="axis-label" x="{0}" y="{1}" font-size="13" text-anchor="middle" fill="{2}" )"
                   R"~(transform="rotate(-90 {0} {1})">{3}</text>)~" "\n",
                   num(yl_x), num(yl_y), kInk, escape(y_label_));
  s += overlay_;
  s += legend_svg();
  s += "</svg>";
  return s;
}

void Chart::fix_range(double& lo, double& hi) {
  if (!finite(lo)) lo = 0;
  if (!finite(hi)) hi = lo + 1;
  if (!(hi > lo)) {
    const double pad = std::max(1e-6, std::fabs(lo) * 0.1);
    lo -= pad, hi += pad;
  }
}

std::vector<std::vector<const LegendEntry*>> Chart::legend_rows() const {
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

double Chart::legend_height() const {
  if (legend_.empty() || legend_place_ != LegendPlace::below) return 0;
  return static_cast<double>(legend_rows().size()) * kRow + 6;
}

std::string Chart::swatch(const LegendEntry& e, double x, double y_mid) const {
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

std::string Chart::legend_svg() const {
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

}  // namespace tq::cli::svg
