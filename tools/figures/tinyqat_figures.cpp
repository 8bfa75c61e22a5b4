// tinyqat-figures: the numbers behind the docs' pictures and "run it and
// check" boxes, computed by the library itself. Each section prints what a
// page shows (docs/tensor.md, autograd.md, sgd.md, optim.md, quantization.md,
// lsq.md, convolution.md, batchnorm.md, quantized_cnn.md, int8_kernel.md).
//
//   build/tinyqat-figures SECTION      print one section
//   build/tinyqat-figures --svg DIR    draw the pictures of docs/figures/ into DIR
//
// Every number is computed on tiny shapes by plain loops (no BLAS call), so it
// is the same on every x86-64 machine, and so is every picture, byte for byte
// (tests/test_doc_figures.cpp redraws them and compares).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/conv_kernels.h"
#include "tensor/int8_gemm.h"
#include "nn/data_parallel.h"
#include "quant/conv_bn_fold.h"
#include "tensor/communicator.h"
#include "report_svg.h"
#include "tinyqat.h"

using namespace tq;

namespace {

std::string view_of(const Tensor& t) {
  return "shape " + t.shape().str() + " strides " + t.strides().str() + " offset " + std::to_string(t.offset()) +
         (t.is_contiguous() ? " contiguous" : " not contiguous");
}


// ---- Pictures: a few SVG primitives, every number through svg::num ----
namespace svg = tq::cli::svg;
std::string g_svg_dir;  // set by --svg: sections also draw their picture there

class Picture {
 public:
  Picture(double width, double height, std::string title) : w_(width), h_(height), title_(std::move(title)) {}
  void rect(double x, double y, double w, double h, const std::string& fill, const std::string& stroke = "#333333",
            double rx = 0) {
    body_ += "<rect x=\"" + svg::num(x) + "\" y=\"" + svg::num(y) + "\" width=\"" + svg::num(w) + "\" height=\"" +
             svg::num(h) + "\" rx=\"" + svg::num(rx) + "\" fill=\"" + fill + "\" stroke=\"" + stroke + "\"/>\n";
  }
  void text(double x, double y, const std::string& t, double size = 13, const std::string& anchor = "middle",
            const std::string& colour = svg::kInk, const std::string& weight = "normal") {
    body_ += "<text x=\"" + svg::num(x) + "\" y=\"" + svg::num(y) + "\" font-size=\"" + svg::num(size) +
             "\" text-anchor=\"" + anchor + "\" fill=\"" + colour + "\" font-weight=\"" + weight + "\">" +
             svg::escape(t) + "</text>\n";
  }
  void line(double x1, double y1, double x2, double y2, const std::string& colour = "#333333", double width = 1.5,
            bool arrow = false, const std::string& dash = "") {
    body_ += "<line x1=\"" + svg::num(x1) + "\" y1=\"" + svg::num(y1) + "\" x2=\"" + svg::num(x2) + "\" y2=\"" +
             svg::num(y2) + "\" stroke=\"" + colour + "\" stroke-width=\"" + svg::num(width) + "\"" +
             (dash.empty() ? "" : " stroke-dasharray=\"" + dash + "\"") + (arrow ? " marker-end=\"url(#arrow)\"" : "") +
             "/>\n";
  }
  // Another picture (a chart) placed at (x, y).
  void embed(double x, double y, const std::string& inner) {
    body_ += "<g transform=\"translate(" + svg::num(x) + "," + svg::num(y) + ")\">\n" + inner + "</g>\n";
  }
  std::string str() const {
    return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + svg::num(w_) + "\" height=\"" + svg::num(h_) +
           "\" viewBox=\"0 0 " + svg::num(w_) + " " + svg::num(h_) +
           "\" font-family=\"DejaVu Sans, Verdana, sans-serif\" role=\"img\">\n<title>" + svg::escape(title_) +
           "</title>\n<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" "
           "markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#333333\"/>"
           "</marker></defs>\n<rect x=\"0\" y=\"0\" width=\"" + svg::num(w_) + "\" height=\"" + svg::num(h_) +
           "\" fill=\"white\"/>\n" + body_ + "</svg>\n";
  }

 private:
  double w_, h_;
  std::string title_, body_;
};

void save(const std::string& name, const std::string& text) {
  if (g_svg_dir.empty()) return;
  const std::string path = g_svg_dir + "/" + name;
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error(path + ": cannot write");
}

// A chart of the report's kit, as a group to place inside a Picture.
std::string chart_group(const svg::Chart& chart, int id) {
  std::string s = chart.svg(id);
  // Drop the outer <svg ...> and </svg>: the chart becomes a group.
  const auto open_end = s.find(">\n");
  s = s.substr(open_end + 2);
  s = s.substr(0, s.rfind("</svg>"));
  return s;
}

// ---- docs/tensor.md: strides and views ----
// For every storage element, the positions at which a row-major walk of the
// view reaches it (eq. 1 of docs/tensor.md, with the view's own strides).
std::vector<std::vector<int64_t>> visits(const Tensor& v) {
  std::vector<std::vector<int64_t>> at(static_cast<size_t>(v.impl()->storage->nbytes() / 4));
  const int nd = static_cast<int>(v.shape().size());
  std::vector<int64_t> index(static_cast<size_t>(nd), 0);
  for (int64_t k = 0, k_end = v.numel(); k < k_end; ++k) {
    int64_t off = v.offset();
    for (int d = 0; d < nd; ++d) off += index[static_cast<size_t>(d)] * v.strides()[d];
    at[static_cast<size_t>(off)].push_back(k);
    for (int d = nd - 1; d >= 0; --d) {
      if (++index[static_cast<size_t>(d)] < v.shape()[d]) break;
      index[static_cast<size_t>(d)] = 0;
    }
  }
  return at;
}

void draw_strides(const std::vector<std::pair<std::string, Tensor>>& views) {
  const double cell = 30, left = 20, row = 84;
  Picture pic(left * 2 + 24 * cell, 70 + row * static_cast<double>(views.size()), "Strides: one storage, four views");
  pic.text(left, 24, "One storage, four views: each cell is one float of storage (its offset below it);", 14, "start");
  pic.text(left, 44, "the number inside is when the view's row-major walk reaches it (eq. 1: offset + sum i_d stride_d)",
           13, "start", "#444444");
  double y = 70;
  for (const auto& [name, v] : views) {
    const auto at = visits(v);
    pic.text(left, y + 14, name + ":  shape " + v.shape().str() + ", strides " + v.strides().str() + ", offset " +
                              std::to_string(v.offset()), 13, "start", svg::kInk, "bold");
    for (size_t c = 0; c < at.size(); ++c) {
      const double x = left + cell * static_cast<double>(c);
      const bool used = !at[c].empty();
      pic.rect(x, y + 22, cell, cell, used ? (at[c].size() > 1 ? "#F5D9A8" : "#CFE6F5") : "#F2F2F2",
               used ? "#333333" : "#BBBBBB");
      std::string label;
      if (at[c].size() == 1) label = std::to_string(at[c][0]);
      else if (at[c].size() > 1) label = std::to_string(at[c].front()) + "-" + std::to_string(at[c].back());
      pic.text(x + cell / 2, y + 42, label, at[c].size() > 1 ? 10 : 12);
      pic.text(x + cell / 2, y + 66, std::to_string(c), 9, "middle", "#888888");
    }
    y += row;
  }
  save("tensor_strides.svg", pic.str());
}

int strides() {
  const Tensor t = reshape(arange(24), {2, 3, 4});
  std::printf("t = arange(24).reshape(2, 3, 4): %s\n", view_of(t).c_str());
  std::printf("t[1, 2, 3]: offset 0 + 1*12 + 2*4 + 3*1 = 23, value %g\n", t.at({1, 2, 3}));
  const Tensor tt = transpose(t, 0, 2);
  std::printf("transpose(t, 0, 2): %s\n", view_of(tt).c_str());
  std::printf("  its [3, 2, 1] is t[1, 2, 3]: %g\n", tt.at({3, 2, 1}));
  const Tensor s = slice(t, 1, 1, 3);
  std::printf("slice(t, 1, 1, 3): %s\n", view_of(s).c_str());
  std::printf("  its [0, 0, 0] is t[0, 1, 0]: %g\n", s.at({0, 0, 0}));
  const Tensor col = reshape(arange(3), {3, 1});
  const Tensor e = kernels::expand(col, {3, 4});
  std::printf("expand (3, 1) to (3, 4): %s\n", view_of(e).c_str());
  std::printf("shares storage: transpose %s, slice %s, expand %s\n",
              tt.impl()->storage == t.impl()->storage ? "yes" : "no",
              s.impl()->storage == t.impl()->storage ? "yes" : "no",
              e.impl()->storage == col.impl()->storage ? "yes" : "no");
  try {
    (void)add(zeros({2, 3}), zeros({4}));
  } catch (const std::exception& ex) {
    std::printf("%s\n", ex.what());
  }
  if (!g_svg_dir.empty()) draw_strides({{"t = arange(24).reshape(2, 3, 4)", t}, {"transpose(t, 0, 2)", tt},
                                        {"slice(t, 1, 1, 3)", s}, {"expand(arange(3).reshape(3, 1), (3, 4))", e}});
  return 0;
}

// ---- docs/autograd.md: the graph of SimpleNN ----
struct SimpleNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 2));
  Tensor forward(const Tensor& x) override { return relu(fc2(relu(fc1(x)))); }
};

struct GraphRow {
  struct Input {
    int node = 0;      // the input's node, or 0 for a leaf
    std::string leaf;  // the leaf's name
    bool gets_gradient = false;
  };
  int id;
  std::string name;
  std::vector<Input> inputs;
};

void draw_graph(const std::vector<GraphRow>& rows) {
  const double top = 96, step = 78, node_w = 210, node_h = 40, node_x = 40;
  Picture pic(660, top + step * static_cast<double>(rows.size()) + 10, "The autograd graph of SimpleNN");
  pic.text(20, 24, "The graph of loss = cross_entropy(relu(fc2(relu(fc1(x)))), target)", 15, "start", svg::kInk, "bold");
  pic.text(20, 46, "backward() starts at node 1 with dL/dL = 1 and walks down; each arrow carries a gradient", 13,
           "start", "#444444");
  pic.text(20, 66, "to an input: blue boxes are leaves that collect it in .grad, grey ones receive none", 13, "start",
           "#444444");
  for (size_t r = 0; r < rows.size(); ++r) {
    const double y = top + step * static_cast<double>(r);
    pic.rect(node_x, y, node_w, node_h, "#FBE3D1", svg::kVermillion, 6);
    pic.text(node_x + node_w / 2, y + 25, std::to_string(rows[r].id) + "  " + rows[r].name, 14);
    std::vector<const GraphRow::Input*> leaves;
    for (const auto& in : rows[r].inputs) {
      if (in.node)  // the next node down
        pic.line(node_x + node_w / 2, y + node_h, node_x + node_w / 2, y + step - 2, "#333333", 1.5, true);
      else
        leaves.push_back(&in);
    }
    const double lx = node_x + node_w + 110, lw = 130, lh = 22;
    for (size_t k = 0; k < leaves.size(); ++k) {
      const auto& in = *leaves[k];
      const double ly = y + node_h / 2 + (static_cast<double>(k) - (static_cast<double>(leaves.size()) - 1) / 2) * 27;
      pic.line(node_x + node_w, y + node_h / 2, lx - 2, ly, in.gets_gradient ? "#333333" : "#BBBBBB", 1.5, true,
               in.gets_gradient ? "" : "4 3");
      pic.rect(lx, ly - lh / 2, lw, lh, in.gets_gradient ? "#CFE6F5" : "#F2F2F2", in.gets_gradient ? svg::kBlue : "#BBBBBB",
               4);
      pic.text(lx + lw / 2, ly + 5, in.leaf + (in.gets_gradient ? "" : " (no gradient)"), 12, "middle",
               in.gets_gradient ? svg::kInk : "#777777");
    }
  }
  save("autograd_graph.svg", pic.str());
}

int graph() {
  manual_seed(0);
  SimpleNN model;
  Generator rng(1);
  const Tensor x = randn({1, 10}, rng);
  const Tensor target = from_vector_i64({1}, {1});
  const Tensor loss = cross_entropy(model(x), target);

  std::map<const TensorImpl*, std::string> leaf_names;
  for (const auto& [name, p] : model.named_parameters()) leaf_names[p.impl()] = name;
  leaf_names[x.impl()] = "x";

  // Depth-first post-order from the loss, reversed: the order backward() visits.
  std::vector<const Node*> order;
  std::set<const Node*> seen;
  std::function<void(const Node*)> visit = [&](const Node* n) {
    if (!seen.insert(n).second) return;
    for (int i = 0; i < n->num_inputs; ++i)
      if (n->inputs[static_cast<size_t>(i)].defined() && n->inputs[static_cast<size_t>(i)].grad_fn())
        visit(n->inputs[static_cast<size_t>(i)].grad_fn().get());
    order.push_back(n);
  };
  visit(loss.grad_fn().get());
  std::map<const Node*, int> id;
  for (size_t i = 0; i < order.size(); ++i) id[order[order.size() - 1 - i]] = static_cast<int>(i) + 1;

  std::printf("loss = cross_entropy(relu(fc2(relu(fc1(x)))), target): %zu nodes\n", order.size());
  std::printf("backward visits them in this order; each lists its inputs:\n");
  std::vector<GraphRow> rows;
  for (size_t i = order.size(); i-- > 0;) {
    const Node* n = order[i];
    std::string ins;
    for (int k = 0; k < n->num_inputs; ++k) {
      const Tensor& in = n->inputs[static_cast<size_t>(k)];
      if (!ins.empty()) ins += ", ";
      if (!in.defined()) ins += "-";
      else if (in.grad_fn()) ins += "node " + std::to_string(id[in.grad_fn().get()]);
      else if (leaf_names.count(in.impl())) ins += leaf_names[in.impl()] + (in.requires_grad() ? " (leaf)" : " (no grad)");
      else ins += in.requires_grad() ? "leaf" : "constant";
      GraphRow::Input gi;
      gi.node = in.defined() && in.grad_fn() ? id[in.grad_fn().get()] : 0;
      gi.leaf = gi.node ? "" : (leaf_names.count(in.impl()) ? leaf_names[in.impl()] : "constant");
      gi.gets_gradient = in.defined() && in.requires_grad();
      if (rows.empty() || rows.back().id != id[n]) rows.push_back({id[n], n->name(), {}});
      rows.back().inputs.push_back(gi);
    }
    std::printf("  node %d %-22s <- %s\n", id[n], n->name(), ins.c_str());
  }
  loss.backward();
  std::printf("after backward: fc1.weight.grad %s, x has %s\n", model.fc1->weight.grad().shape().str().c_str(),
              x.grad().defined() ? "a gradient" : "no gradient");
  if (!g_svg_dir.empty()) draw_graph(rows);
  return 0;
}

// ---- docs/sgd.md: three steps with momentum, by the optimizer and by hand ----
int sgd() {
  Tensor w = from_vector({1.0f, -2.0f}, {2});
  w.requires_grad_();
  nn::SGD opt({w}, {.lr = 0.1, .momentum = 0.9});
  float v[2] = {0, 0}, h[2] = {1.0f, -2.0f};
  std::printf("loss = sum(w^2) / 2, so g = w; lr 0.1, momentum 0.9, w0 = [1, -2]\n");
  for (int step = 1; step <= 3; ++step) {
    opt.zero_grad();
    Tensor loss = mul(sum(pow2(w)), 0.5f);
    loss.backward();
    opt.step();
    for (int i = 0; i < 2; ++i) {  // docs/sgd.md eq. 3 by hand: v = mu v + g; w = w - lr v
      const float g = h[i];
      v[i] = step == 1 ? g : 0.9f * v[i] + g;
      h[i] = h[i] - 0.1f * v[i];
    }
    std::printf("step %d: w = [%.6f, %.6f]  by hand [%.6f, %.6f]\n", step, w.at({0}), w.at({1}), h[0], h[1]);
  }
  return 0;
}

// ---- docs/optim.md: Adam's first step moves every weight by lr ----
int adam() {
  Tensor w = from_vector({1.0f, 1.0f}, {2});
  w.requires_grad_();
  nn::Adam opt({w}, {.lr = 0.01});
  opt.zero_grad();
  Tensor loss = sum(mul(w, from_vector({1000.0f, 0.001f}, {2})));  // g = [1000, 0.001]
  loss.backward();
  opt.step();
  std::printf("Adam, lr 0.01, gradients [1000, 0.001]: first step moves w by [%.6f, %.6f]\n", 1.0 - w.at({0}),
              1.0 - w.at({1}));
  Tensor u = from_vector({1.0f, 1.0f}, {2});
  u.requires_grad_();
  nn::SGD sgd({u}, 0.01);
  sgd.zero_grad();
  sum(mul(u, from_vector({1000.0f, 0.001f}, {2}))).backward();
  sgd.step();
  std::printf("SGD,  lr 0.01, same gradients:           first step moves w by [%.6f, %.6f]\n", 1.0 - u.at({0}),
              1.0 - u.at({1}));
  return 0;
}

// ---- docs/quantization.md: the fake-quant staircase and its STE gradient ----
// A 3-bit grid (0..7) with s = 0.25, z = 2: it covers [-0.5, 1.25].
int staircase() {
  QParams qp;
  qp.scale = {0.25f};
  qp.zero_point = {2};
  qp.quant_min = 0;
  qp.quant_max = 7;
  const std::vector<float> xs = {-0.8f, -0.6f, -0.5f, -0.3f, 0.1f, 0.13f, 0.6f, 1.2f, 1.25f, 1.35f, 1.5f};
  Tensor x = from_vector(xs, {static_cast<int64_t>(xs.size())});
  x.requires_grad_();
  Tensor y = quant::fake_quantize(x, qp);
  sum(y).backward();
  std::printf("fake quant on 0..7, s = 0.25, z = 2: grid [%.2f, %.2f]\n", 0.25 * (0 - 2), 0.25 * (7 - 2));
  std::printf("     x    fq(x)  d fq / dx (STE)\n");
  for (size_t i = 0; i < xs.size(); ++i)
    std::printf("%6.2f  %7.2f  %g\n", xs[i], y.at({static_cast<int64_t>(i)}), x.grad().at({static_cast<int64_t>(i)}));
  if (g_svg_dir.empty()) return 0;
  // The picture: the same function on a fine sweep of x, and its STE gradient.
  std::vector<float> sweep;
  for (int i = 0; i <= 1100; ++i) sweep.push_back(-1.0f + 0.0025f * static_cast<float>(i));
  Tensor xs2 = from_vector(sweep, {static_cast<int64_t>(sweep.size())});
  xs2.requires_grad_();
  const Tensor ys2 = quant::fake_quantize(xs2, qp);
  sum(ys2).backward();
  const auto yv = to_vector(ys2), gv = to_vector(xs2.grad());
  std::vector<std::pair<double, double>> stair, ident, grad;
  for (size_t i = 0; i < sweep.size(); ++i) {
    stair.emplace_back(sweep[i], yv[i]);
    ident.emplace_back(sweep[i], sweep[i]);
    grad.emplace_back(sweep[i], gv[i]);
  }
  svg::Chart top_chart(720, 330, "Fake quantization: y = s (clamp(round(x / s) + z, 0, 7) - z)", "x", "y");
  top_chart.subtitle("3-bit grid 0..7, s = 0.25, z = 2: the grid covers [-0.5, 1.25] (quantization.md eq. 8)");
  top_chart.x_range(-1, 1.75);
  top_chart.y_range(-1, 1.75);
  top_chart.x_ticks(svg::linear_ticks(-1, 1.75, 8), true);
  top_chart.y_ticks(svg::linear_ticks(-1, 1.75, 6));
  top_chart.polyline(ident, "#999999", 1.5, "5 4");
  top_chart.polyline(stair, svg::kBlue, 2.5);
  top_chart.vline(-0.5, svg::kVermillion, 1.5, "6 4");
  top_chart.vline(1.25, svg::kVermillion, 1.5, "6 4");
  top_chart.legend({{svg::LegendEntry::line, "fq(x)", svg::kBlue, "", 2.5},
                    {svg::LegendEntry::line, "y = x", "#999999", "5 4", 1.5},
                    {svg::LegendEntry::line, "grid ends", svg::kVermillion, "6 4", 1.5}},
                   svg::LegendPlace::top_left);
  svg::Chart bottom_chart(720, 220, "Its gradient in QAT: the straight-through estimator", "x", "d fq / dx");
  bottom_chart.subtitle("round() counts as the identity: 1 where round(x / s) + z is in 0..7, up to half a step past the grid (eq. 9)");
  bottom_chart.x_range(-1, 1.75);
  bottom_chart.y_range(-0.2, 1.3);
  bottom_chart.x_ticks(svg::linear_ticks(-1, 1.75, 8), true);
  bottom_chart.y_ticks({{0, "0"}, {1, "1"}});
  bottom_chart.polyline(grad, svg::kGreen, 2.5);
  bottom_chart.vline(-0.5, svg::kVermillion, 1.5, "6 4");
  bottom_chart.vline(1.25, svg::kVermillion, 1.5, "6 4");
  Picture pic(720, 550, "The fake-quant staircase and its STE gradient");
  pic.embed(0, 0, chart_group(top_chart, 1));
  pic.embed(0, 330, chart_group(bottom_chart, 2));
  save("fake_quant_ste.svg", pic.str());
  return 0;
}

// ---- docs/lsq.md: LSQ's gradient of y with respect to s, against x ----
int lsq() {
  const float s = 0.25f;
  const int32_t z = 2, qmin = 0, qmax = 7;
  std::printf("LSQ on 0..7, s = 0.25, z = 2 (grid [-0.50, 1.25]); upstream gradient 1\n");
  std::printf("     x    x/s  d y / d s  d y / d z\n");
  for (float x : {-0.8f, -0.5f, -0.3f, -0.2f, 0.1f, 0.13f, 0.6f, 1.2f, 1.5f}) {
    const auto g = quant::fake_quantize_learnable_gradients_value(x, 1.0f, s, z, qmin, qmax);
    std::printf("%6.2f  %5.2f  %9.4f  %9.4f\n", x, x / s, g.scale, g.zero_point);
  }
  if (g_svg_dir.empty()) return 0;
  std::vector<std::pair<double, double>> ds, dz;
  for (int i = 0; i <= 1100; ++i) {
    const float x = -1.0f + 0.0025f * static_cast<float>(i);
    const auto g = quant::fake_quantize_learnable_gradients_value(x, 1.0f, s, z, qmin, qmax);
    ds.emplace_back(x, g.scale);
    dz.emplace_back(x, g.zero_point);
  }
  svg::Chart chart(680, 380, "LSQ: the gradient of y = fq(x) with respect to the step size s", "x", "d y / d s");
  chart.subtitle("3-bit grid 0..7, s = 0.25, z = 2: r - x/s inside (lsq.md eq. 4), qmin - z below, qmax - z above");
  chart.x_range(-1, 1.75);
  chart.y_range(-2.5, 5.5);
  chart.x_ticks(svg::linear_ticks(-1, 1.75, 8), true);
  chart.y_ticks(svg::linear_ticks(-2, 5, 8));
  chart.polyline(ds, svg::kBlue, 2);
  chart.polyline(dz, svg::kPurple, 2, "6 3");
  chart.vline(-0.5, svg::kVermillion, 1.5, "6 4");
  chart.vline(1.25, svg::kVermillion, 1.5, "6 4");
  chart.legend({{svg::LegendEntry::line, "d y / d s", svg::kBlue, "", 2},
                {svg::LegendEntry::line, "d y / d z (eq. 5)", svg::kPurple, "6 3", 2},
                {svg::LegendEntry::line, "grid ends", svg::kVermillion, "6 4", 1.5}},
               svg::LegendPlace::top_left);
  Picture pic(680, 380, "LSQ's d y / d s against x");
  pic.embed(0, 0, chart_group(chart, 1));
  save("lsq_dy_ds.svg", pic.str());
  return 0;
}

// ---- docs/convolution.md: im2col of a 3x3 image, 2x2 kernel ----
int im2col() {
  const auto g = kernels::conv2d_geometry({1, 1, 3, 3}, {1, 1, 2, 2}, 1, 1, 0, 0, 1, 1, 1);
  std::vector<float> x(9), col(static_cast<size_t>(g.patch() * g.OH * g.OW));
  for (int i = 0; i < 9; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i + 1);
  kernels::im2col(x.data(), g, col.data());
  std::printf("x (1, 3, 3) = 1..9, kernel 2x2, stride 1: output %lldx%lld\n", static_cast<long long>(g.OH),
              static_cast<long long>(g.OW));
  std::printf("im2col (C*KH*KW = %lld rows, OH*OW = %lld columns):\n", static_cast<long long>(g.patch()),
              static_cast<long long>(g.OH * g.OW));
  for (int64_t r = 0; r < g.patch(); ++r) {
    std::printf(" ");
    for (int64_t c = 0; c < g.OH * g.OW; ++c) std::printf(" %2g", col[static_cast<size_t>(r * g.OH * g.OW + c)]);
    std::printf("\n");
  }
  // With padding 1 the receptive fields reach outside: zeros.
  const auto p = kernels::conv2d_geometry({1, 1, 3, 3}, {1, 1, 2, 2}, 1, 1, 1, 1, 1, 1, 1);
  std::vector<float> colp(static_cast<size_t>(p.patch() * p.OH * p.OW));
  kernels::im2col(x.data(), p, colp.data());
  int zeros = 0;
  for (float v : colp) zeros += v == 0;
  std::printf("with padding 1: output %lldx%lld, %d of the %zu entries are padding zeros\n",
              static_cast<long long>(p.OH), static_cast<long long>(p.OW), zeros, colp.size());
  if (g_svg_dir.empty()) return 0;
  const char* colours[4] = {svg::kBlue, svg::kVermillion, svg::kGreen, svg::kPurple};
  const char* fills[4] = {"#CFE6F5", "#FBE3D1", "#CCEDE3", "#F4DCEA"};
  const double c = 44;
  Picture pic(720, 330, "im2col: every receptive field becomes a column");
  pic.text(20, 26, "im2col of a 3x3 image (values 1..9) for a 2x2 kernel, stride 1", 15, "start", svg::kInk, "bold");
  pic.text(20, 46, "output pixel j reads the 2x2 patch drawn in colour j; im2col copies it into column j", 13, "start",
           "#444444");
  const double x0 = 40, y0 = 90;
  pic.text(x0 + 1.5 * c, y0 - 12, "x (1, 3, 3)", 13);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      pic.rect(x0 + j * c, y0 + i * c, c, c, "white");
      pic.text(x0 + j * c + c / 2, y0 + i * c + c / 2 + 5, std::to_string(static_cast<int>(x[static_cast<size_t>(i * 3 + j)])), 15);
    }
  for (int k = 0; k < 4; ++k) {  // patch k: rows k/2.., cols k%2.., drawn slightly inset so all four show
    const double inset = 3 + 3 * k;
    const double px = x0 + (k % 2) * c + inset, py = y0 + (k / 2) * c + inset;
    pic.rect(px, py, 2 * c - 2 * inset, 2 * c - 2 * inset, "none", colours[k], 0);
  }
  const double cx = 330, cy = 90;
  pic.text(cx + 2 * c, cy - 12, "col (C*KH*KW = 4, OH*OW = 4)", 13);
  for (int64_t r = 0; r < g.patch(); ++r)
    for (int64_t j = 0; j < g.OH * g.OW; ++j) {
      pic.rect(cx + static_cast<double>(j) * c, cy + static_cast<double>(r) * c, c, c, fills[j], colours[j]);
      pic.text(cx + static_cast<double>(j) * c + c / 2, cy + static_cast<double>(r) * c + c / 2 + 5,
               std::to_string(static_cast<int>(col[static_cast<size_t>(r * g.OH * g.OW + j)])), 15);
    }
  for (int64_t r = 0; r < g.patch(); ++r)
    pic.text(cx + 4 * c + 10, cy + static_cast<double>(r) * c + c / 2 + 5,
             "tap (" + std::to_string(r / 2) + ", " + std::to_string(r % 2) + ")", 12, "start", "#444444");
  pic.line(x0 + 3 * c + 20, y0 + 1.5 * c, cx - 20, cy + 1.5 * c, "#333333", 1.5, true);
  pic.text(20, 300, "then y (OC, 4) = W (OC, 4) @ col: one GEMM (convolution.md eq. 2)", 13, "start", "#444444");
  save("im2col.svg", pic.str());
  return 0;
}

// ---- docs/batchnorm.md: train vs eval ----
int batchnorm() {
  nn::BatchNorm2d bn(1);
  const Tensor x = from_vector({1, 2, 3, 6}, {4, 1, 1, 1});  // one channel, batch of 4
  Tensor y = bn(x);
  std::printf("x = [1, 2, 3, 6]: batch mean 3, biased variance 3.5, unbiased 4.6667\n");
  std::printf("train: y = [%.4f, %.4f, %.4f, %.4f]\n", y.at({0, 0, 0, 0}), y.at({1, 0, 0, 0}), y.at({2, 0, 0, 0}),
              y.at({3, 0, 0, 0}));
  std::printf("running_mean %.4f, running_var %.4f (momentum 0.1, from 0 and 1)\n", bn.running_mean().at({0}),
              bn.running_var().at({0}));
  bn.eval();
  y = bn(x);
  std::printf("eval:  y = [%.4f, %.4f, %.4f, %.4f]\n", y.at({0, 0, 0, 0}), y.at({1, 0, 0, 0}), y.at({2, 0, 0, 0}),
              y.at({3, 0, 0, 0}));
  return 0;
}

// ---- docs/quantized_cnn.md: BatchNorm folded into the convolution before it ----
int bnfold() {
  nn::Conv2d conv(1, 2, {1, 2});
  {
    NoGradGuard no_grad;
    kernels::copy_(conv.weight, from_vector({0.5f, -1.0f, 2.0f, 0.25f}, {2, 1, 1, 2}));
    kernels::copy_(conv.bias, from_vector({0.1f, -0.2f}, {2}));
  }
  nn::BatchNorm2d bn(2);
  {
    NoGradGuard no_grad;
    kernels::copy_(bn.weight, from_vector({2.0f, 3.0f}, {2}));
    kernels::copy_(bn.bias, from_vector({0.0f, 1.0f}, {2}));
    kernels::copy_(bn.running_mean(), from_vector({1.0f, -1.0f}, {2}));
    kernels::copy_(bn.running_var(), from_vector({16.0f, 9.0f}, {2}));
  }
  bn.eval();
  const auto f = quant::batch_norm_factor(bn.weight, bn.running_var(), bn.eps);
  const auto folded = quant::fold_batch_norm(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean(),
                                             bn.running_var(), bn.eps);
  std::printf("W = [[0.5, -1], [2, 0.25]], b = [0.1, -0.2]; gamma [2, 3], beta [0, 1], mean [1, -1], var [16, 9]\n");
  std::printf("f = gamma / sqrt(var + eps) = [%.5f, %.5f]\n", f[0], f[1]);
  std::printf("W' = W f:  [[%.5f, %.5f], [%.5f, %.5f]]\n", folded.weight.at({0, 0, 0, 0}),
              folded.weight.at({0, 0, 0, 1}), folded.weight.at({1, 0, 0, 0}), folded.weight.at({1, 0, 0, 1}));
  std::printf("b' = (b - mean) f + beta: [%.5f, %.5f]\n", folded.bias.at({0}), folded.bias.at({1}));
  NoGradGuard no_grad;
  const Tensor x = from_vector({1, 2, 3, -1, 0.5f, 4}, {1, 1, 2, 3});
  const Tensor a = bn(conv(x));
  nn::Conv2d fused(1, 2, {1, 2});
  kernels::copy_(fused.weight, folded.weight);
  kernels::copy_(fused.bias, folded.bias);
  const Tensor b = fused(x);
  double worst = 0;
  const auto va = to_vector(a), vb = to_vector(b);
  for (size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(va[i]) - vb[i]));
  std::printf("bn(conv(x)) vs conv'(x) on a 2x3 input: %zu outputs, max difference %s 1e-6\n", va.size(),
              worst <= 1e-6 ? "<=" : ">");
  if (!g_svg_dir.empty()) {
    auto f5 = [](double v) { return svg::fixed(v, 5); };
    Picture pic(860, 300, "Folding a BatchNorm into the convolution before it");
    pic.text(20, 26, "Folding BatchNorm (eval) into the convolution before it", 15, "start", svg::kInk, "bold");
    pic.text(20, 46, "per output channel c: f = gamma / sqrt(var + eps), W' = W f, b' = (b - mean) f + beta", 13,
             "start", "#444444");
    struct Box {
      double x;
      const char* title;
      std::vector<std::string> lines;
      const char* fill;
      const char* stroke;
    };
    const std::vector<Box> boxes = {
        {20, "Conv2d", {"W[0] = [0.5, -1]", "W[1] = [2, 0.25]", "b = [0.1, -0.2]"}, "#CFE6F5", svg::kBlue},
        {250, "BatchNorm2d (eval)", {"gamma = [2, 3], beta = [0, 1]", "mean = [1, -1], var = [16, 9]",
                                     "f = [" + f5(f[0]) + ", " + f5(f[1]) + "]"}, "#FBE3D1", svg::kVermillion},
        {590, "Conv2d, folded", {"W'[0] = [" + f5(folded.weight.at({0, 0, 0, 0})) + ", " + f5(folded.weight.at({0, 0, 0, 1})) + "]",
                                 "W'[1] = [" + f5(folded.weight.at({1, 0, 0, 0})) + ", " + f5(folded.weight.at({1, 0, 0, 1})) + "]",
                                 "b' = [" + f5(folded.bias.at({0})) + ", " + f5(folded.bias.at({1})) + "]"},
         "#CCEDE3", svg::kGreen}};
    for (const Box& b : boxes) {
      const double w = b.x == 250 ? 290 : (b.x == 20 ? 200 : 250);
      pic.rect(b.x, 80, w, 120, b.fill, b.stroke, 6);
      pic.text(b.x + w / 2, 104, b.title, 14, "middle", svg::kInk, "bold");
      for (size_t i = 0; i < b.lines.size(); ++i) pic.text(b.x + w / 2, 132 + 24 * static_cast<double>(i), b.lines[i], 13);
    }
    pic.line(220, 140, 248, 140, "#333333", 1.5, true);  // conv feeds BN
    pic.line(540, 140, 588, 140, "#333333", 2.5, true);
    pic.text(564, 128, "fold", 12);
    pic.text(20, 240, "bn(conv(x)) and the folded conv(x) agree on a 2x3 input (max difference <= 1e-6): one layer", 13,
             "start", "#444444");
    pic.text(20, 262, "less, and the int8 model quantizes W' per channel (quantized_cnn.md section 6)", 13, "start",
             "#444444");
    save("bn_folding.svg", pic.str());
  }
  return worst <= 1e-6 ? 0 : 1;
}

// ---- docs/quantization.md §5: how the "on a grid" mark flows ----
struct Flow : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(4, 3));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(3, 2));
  std::vector<std::pair<std::string, Tensor>> seen;
  Tensor forward(const Tensor& x) override {
    seen.clear();
    seen.emplace_back("x", x);
    const Tensor a = fc1(x);
    seen.emplace_back("fc1(x)", a);
    const Tensor r = relu(a);
    seen.emplace_back("relu", r);
    const Tensor y = fc2(r);
    seen.emplace_back("fc2", y);
    return y;
  }
};

std::string mark_of(const Tensor& t) {
  if (t.is_quantized()) {
    const QParams& q = t.qparams();
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s, scale %.4g, zero point %d", dtype_name(t.dtype()), q.scale[0],
                  q.zero_point[0]);
    return buf;
  }
  const auto& grid = t.impl()->fake_quant_grid;
  if (!grid) return "f32, no mark";
  if (grid->scale.empty()) return "f32, marked: an observed output";
  char buf[96];
  std::snprintf(buf, sizeof buf, "f32, on the grid scale %.4g, zero point %d", grid->scale[0], grid->zero_point[0]);
  return buf;
}

// Two rows (QAT, int8) of the chain x -> fc1 -> relu -> fc2, each arrow
// labelled with the mark of the tensor it carries.
void draw_grid(const std::vector<std::string>& qat, const std::vector<std::string>& int8) {
  Picture pic(1140, 340, "How the on-the-grid mark flows between layers");
  pic.text(20, 26, "How a tensor's \"on the grid\" mark flows between layers (quantization.md section 5)", 15, "start",
           svg::kInk, "bold");
  pic.text(20, 46, "fc1 receives an unmarked float tensor and fake-quantizes it with its own fq_in; fc2 receives fc1's",
           13, "start", "#444444");
  pic.text(20, 64, "marked output and uses it as it is. After convert the same boundaries carry u8 tensors.", 13,
           "start", "#444444");
  const char* stages[3] = {"fc1 (QATLinear)", "relu", "fc2 (QATLinear)"};
  const char* stages8[3] = {"fc1 (QuantizedLinear)", "relu (on u8)", "fc2 (QuantizedLinear)"};
  auto split = [](const std::string& m) {  // "f32, on the grid scale ..., zero point z" -> two lines
    const auto comma = m.find(", ");
    return std::pair<std::string, std::string>(m.substr(0, comma), comma == std::string::npos ? "" : m.substr(comma + 2));
  };
  for (int r = 0; r < 2; ++r) {
    const auto& marks = r == 0 ? qat : int8;
    const double y = 110 + 120 * r;
    pic.text(20, y - 14, r == 0 ? "QAT, after prepare_qat" : "int8, after convert", 13, "start", svg::kInk, "bold");
    double x = 20;
    for (int k = 0; k < 4; ++k) {
      // the tensor: an arrow with its mark
      const auto [a, b] = split(marks[static_cast<size_t>(k)]);
      const bool marked = marks[static_cast<size_t>(k)].find("no mark") == std::string::npos;
      const double len = 175;
      pic.line(x, y + 20, x + len - 4, y + 20, marked ? svg::kGreen : "#888888", 2, true);
      pic.text(x + len / 2, y + 8, a, 11, "middle", marked ? svg::kGreen : "#666666", "bold");
      pic.text(x + len / 2, y + 38, b.size() > 30 ? b.substr(0, b.find(" zero")) : b, 10.5, "middle", "#444444");
      if (b.size() > 30) pic.text(x + len / 2, y + 52, b.substr(b.find("zero")), 10.5, "middle", "#444444");
      x += len;
      if (k == 3) break;
      const double w = 60 + 4 * static_cast<double>(std::string(r == 0 ? stages[k] : stages8[k]).size()) * 1.0;
      pic.rect(x, y, w, 40, r == 0 ? "#FBE3D1" : "#CFE6F5", r == 0 ? svg::kVermillion : svg::kBlue, 6);
      pic.text(x + w / 2, y + 25, r == 0 ? stages[k] : stages8[k], 12);
      x += w;
    }
  }
  pic.text(20, 330, "green: on a grid (a fake-quant grid in QAT, a u8 tensor after convert); grey: plain float", 12,
           "start", "#444444");
  save("grid_mark_flow.svg", pic.str());
}

int grid() {
  manual_seed(0);
  Flow model;
  model.qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(model);
  Generator rng(3);
  const Tensor x = randn({8, 4}, rng);
  {
    NoGradGuard no_grad;
    (void)model(x);
  }
  std::printf("QAT (after prepare_qat):\n");
  for (const auto& [name, t] : model.seen) std::printf("  %-7s %s\n", name.c_str(), mark_of(t).c_str());
  std::vector<std::string> qat_marks;
  for (const auto& [name, t] : model.seen) qat_marks.push_back(mark_of(t));
  for (const auto& [name, m] : model.named_modules())
    if (const auto* q = dynamic_cast<const quant::QATLinear*>(m))
      std::printf("  %s fake-quantized a float input: %s\n", name.c_str(), q->saw_float_input() ? "yes" : "no");
  model.eval();
  quant::convert(model);
  NoGradGuard no_grad;
  (void)model(x);
  std::printf("int8 (after convert):\n");
  for (const auto& [name, t] : model.seen) std::printf("  %-7s %s\n", name.c_str(), mark_of(t).c_str());
  std::vector<std::string> int8_marks;
  for (const auto& [name, t] : model.seen) int8_marks.push_back(mark_of(t));
  if (!g_svg_dir.empty()) draw_grid(qat_marks, int8_marks);
  for (const auto& [name, m] : model.named_modules()) {
    if (name != "fc2") continue;
    try {
      (void)m->forward(from_vector({0.1f, 0.2f, 0.3f}, {1, 3}));
    } catch (const std::exception& ex) {
      std::printf("fc2 given a float tensor: %s\n", ex.what());
    }
  }
  return 0;
}

// ---- docs/mobilenet_v2.md: the block table, counted ----
int mobilenet() {
  for (double width : {1.0, 0.25}) {
    manual_seed(0);
    const auto model = models::mobilenet_v2(1000, width);
    int64_t params = 0, blocks = 0, skips = 0, depthwise = 0;
    for (const Tensor& p : model->parameters()) params += p.numel();
    for (const auto& [name, m] : model->named_modules()) {
      const std::string type = m->type_name();
      blocks += type == "InvertedResidual";
      skips += type == "Add";
      if (const auto* c = dynamic_cast<const nn::Conv2d*>(m))
        depthwise += c->weight.size(1) == 1 && c->weight.size(0) > 1 && c->weight.size(2) == 3;
    }
    std::printf("width %.2f: %lld parameters, %lld inverted residual blocks (%lld with a skip add), %lld depthwise "
                "3x3 convs, last_channel %lld\n",
                width, static_cast<long long>(params), static_cast<long long>(blocks), static_cast<long long>(skips),
                static_cast<long long>(depthwise), static_cast<long long>(model->last_channel));
  }
  std::printf("make_divisible: 24 * 0.5 = 12 -> %lld, 96 * 0.35 = 33.6 -> %lld, 16 * 0.25 = 4 -> %lld\n",
              static_cast<long long>(models::make_divisible(24 * 0.5)),
              static_cast<long long>(models::make_divisible(96 * 0.35)),
              static_cast<long long>(models::make_divisible(16 * 0.25)));
  return 0;
}

// ---- docs/distributed.md: the collectives of one data-parallel step ----
// A communicator that says it has 2 ranks and records every collective it is
// asked for (leaving the data as it is): what one rank of a real run calls,
// in order, counted by the library's own code paths.
struct Recorded {
  std::string phase, what;
  int64_t values, bytes;
};
class Recorder final : public dist::Communicator {
 public:
  std::string phase;
  std::vector<Recorded> calls;
  int rank() const override { return 0; }
  int size() const override { return 2; }
  void allreduce(float*, int64_t n, dist::ReduceOp op) override { add(op, "f32", n, 4); }
  void allreduce(double*, int64_t n, dist::ReduceOp op) override { add(op, "f64", n, 8); }
  void allreduce(int64_t*, int64_t n, dist::ReduceOp op) override { add(op, "i64", n, 8); }
  void broadcast(void*, int64_t bytes, int) override { calls.push_back({phase, "broadcast", bytes, bytes}); }
  void barrier() override { calls.push_back({phase, "barrier", 0, 0}); }
  std::string describe() const override { return "recorder"; }

 private:
  void add(dist::ReduceOp op, const char* type, int64_t n, int64_t size) {
    const char* o = op == dist::ReduceOp::sum ? "sum" : op == dist::ReduceOp::min ? "min" : "max";
    calls.push_back({phase, std::string("all-reduce ") + o + " " + type, n, n * size});
  }
};

// One training step of `model` on 4 samples under the recorder, as cli::train
// does it: forward, the loss all-reduced, backward, the gradient buckets.
std::vector<Recorded> record_step(nn::Module& model, bool images) {
  auto rec = std::make_shared<Recorder>();
  dist::WorldScope scope(rec);
  manual_seed(1);
  const Tensor x = images ? randn({4, 1, 28, 28}) : randn({4, 784});
  const Tensor y = randint(0, 10, {4});
  nn::GradientReducer reducer(model.parameters());
  model.train();
  rec->phase = "forward";
  Tensor loss = cross_entropy(model(x), y);
  rec->phase = "loss";
  double l = loss.item() * 0.5;
  rec->allreduce_sum(&l, 1);
  rec->phase = "backward";
  loss.backward();
  rec->phase = "gradients";
  reducer.reduce(0.5);
  return rec->calls;
}

int dataparallel() {
  struct Run {
    const char* name;
    std::vector<Recorded> calls;
  };
  std::vector<Run> runs;
  {
    manual_seed(0);
    auto mlp = nn::make_mlp({784, 256, 128, 10});
    runs.push_back({"mlp train", record_step(*mlp, false)});
  }
  {
    manual_seed(0);
    auto cnn = models::cnn();
    runs.push_back({"cnn train", record_step(*cnn, true)});
  }
  manual_seed(0);
  auto qat = models::cnn();
  qat->train();
  quant::fuse_known_modules(*qat);
  qat->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*qat);
  runs.push_back({"cnn qat", record_step(*qat, true)});

  std::printf("collectives of one data-parallel step (per rank; 1 MiB gradient buckets)\n");
  for (const Run& r : runs) {
    std::printf("%s:\n", r.name);
    std::map<std::string, std::pair<int64_t, int64_t>> per_phase;  // calls, bytes
    for (const char* phase : {"forward", "loss", "backward", "gradients"}) {
      int64_t calls = 0, bytes = 0;
      for (const Recorded& c : r.calls)
        if (c.phase == phase) ++calls, bytes += c.bytes;
      std::printf("  %-9s %3lld collectives %9lld bytes\n", phase, static_cast<long long>(calls),
                  static_cast<long long>(bytes));
    }
  }

  // The picture: the QAT CNN's step, two ranks, the collectives between them.
  const std::vector<Recorded>& calls = runs.back().calls;
  // Consecutive calls of one phase and kind drawn as one arrow with a count.
  struct Group {
    std::string phase, what;
    int count;
    int64_t bytes;
  };
  std::vector<Group> groups;
  for (const Recorded& c : calls) {
    if (!groups.empty() && groups.back().phase == c.phase && groups.back().what == c.what) {
      ++groups.back().count;
      groups.back().bytes += c.bytes;
    } else {
      groups.push_back({c.phase, c.what, 1, c.bytes});
    }
  }
  const double w = 900, lane0 = 70, lane1 = 250;
  const double h = lane1 + 110;
  Picture pic(w, h, "One data-parallel QAT step of the CNN: the collectives between two ranks");
  pic.text(w / 2, 22, "One data-parallel QAT step (CNN, 2 ranks): every collective, in order", 15, "middle", svg::kInk,
           "bold");
  auto lane = [&](double y, const std::string& name) {
    pic.text(12, y + 5, name, 13, "start", svg::kInk, "bold");
    pic.line(80, y, w - 20, y, "#999999", 1);
  };
  lane(lane0, "rank 0");
  lane(lane1, "rank 1");
  // Phases as bands along the time axis, widths by the number of groups.
  const std::vector<std::pair<std::string, std::string>> phases = {
      {"forward", svg::kSky}, {"loss", svg::kOrange}, {"backward", svg::kPurple}, {"gradients", svg::kGreen}};
  double x = 90;
  const double unit = (w - 110 - 4 * 30) / static_cast<double>(groups.size() + 4);
  for (const auto& [phase, colour] : phases) {
    std::vector<const Group*> mine;
    for (const Group& g : groups)
      if (g.phase == phase) mine.push_back(&g);
    const double band = unit * static_cast<double>(mine.size() + 1);
    for (double y : {lane0, lane1}) pic.rect(x, y - 14, band, 28, colour, "#333333", 4);
    const std::string label = phase == "gradients" ? "gradient buckets" : phase;
    pic.text(x + band / 2, lane0 - 20, label, 12);
    pic.text(x + band / 2, lane1 + 30, label, 12);
    for (size_t i = 0; i < mine.size(); ++i) {
      const double cx = x + unit * (static_cast<double>(i) + 1);
      pic.line(cx, lane0 + 16, cx, lane1 - 18, "#333333", 1.2, true);
      pic.line(cx, lane1 - 16, cx, lane0 + 18, "#333333", 1.2, true);
      const Group& g = *mine[i];
      const std::string what = g.what.substr(g.what.find(' ') + 1);  // "sum f32"
      const double ty = (lane0 + lane1) / 2 + ((i % 2) ? 22 : -10);
      pic.text(cx + 3, ty, (g.count > 1 ? std::to_string(g.count) + "x " : "") + what, 10, "start");
      pic.text(cx + 3, ty + 12, std::to_string(g.bytes) + " B", 10, "start", "#555555");
    }
    x += band + 30;
  }
  pic.text(w / 2, h - 34,
           "forward: BatchNorm's batch statistics and each observer's range over the global batch; loss: its mean",
           11, "middle", "#444444");
  pic.text(w / 2, h - 18,
           "backward: BatchNorm's sums of dy and dy*xhat; then the gradients, flattened into buckets and averaged",
           11, "middle", "#444444");
  save("data_parallel_step.svg", pic.str());
  return 0;
}

// ---- docs/int8_kernel.md §3: which AVX2 path eq. 9 allows ----
int paths() {
  struct Case {
    const char* preset;
    int32_t x_max, w_max;
  };
  std::printf("eq. 9: vpmaddubsw is exact when 2 * x_quant_max * max|w| <= 32767\n");
  for (const Case c : {Case{"x86 / fbgemm (u8 0..127, i8 weights)", 127, 128},
                       Case{"qnnpack (u8 0..255, i8 weights)", 255, 128},
                       Case{"qnnpack, 7-bit weights (|w| <= 64)", 255, 64}}) {
    const long long bound = 2LL * c.x_max * c.w_max;
    std::printf("  %-38s 2 * %d * %d = %lld: AVX2 rung takes %s\n", c.preset, c.x_max, c.w_max,
                bound, maddubs_is_exact(c.x_max, c.w_max) ? "avx2_maddubs" : "avx2_widening");
  }
  // The library's own answer for the qnnpack case, under the rungs this CPU has
  // (machine-dependent: printed last).
  std::vector<int8_t> w(16 * 4, 0);
  w[0] = -128;
  const PackedWeightsI8 packed(w.data(), 16, 4);
  std::printf("library: maddubs_is_exact(255, 128) = %s; on this CPU, qnnpack case:",
              maddubs_is_exact(255, 128) ? "true" : "false");
  for (auto k : {Int8Kernel::avx2, Int8Kernel::automatic}) {
    const char* name = k == Int8Kernel::avx2 ? "avx2" : "auto";
    if (!int8_kernel_available(k)) {
      std::printf(" %s -> not available;", name);
      continue;
    }
    ScopedInt8Kernel scoped(k);
    std::printf(" %s -> %s;", name, to_string(select_int8_path(255, packed)));
  }
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, int (*)()> sections = {
      {"strides", strides}, {"graph", graph},         {"sgd", sgd},   {"adam", adam},
      {"staircase", staircase}, {"lsq", lsq},         {"im2col", im2col}, {"batchnorm", batchnorm},
      {"bnfold", bnfold},   {"grid", grid}, {"mobilenet", mobilenet},           {"paths", paths},
      {"dataparallel", dataparallel}};
  if (argc == 3 && std::string(argv[1]) == "--svg") {
    g_svg_dir = argv[2];
    if (!std::freopen("/dev/null", "w", stdout)) return 1;  // the pictures only
    try {
      for (const char* name : {"strides", "graph", "staircase", "lsq", "im2col", "bnfold", "grid", "dataparallel"})
        if (sections.at(name)() != 0) return 1;
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "tinyqat-figures --svg: %s\n", ex.what());
      return 1;
    }
    return 0;
  }
  if (argc != 2 || !sections.count(argv[1])) {
    std::fprintf(stderr, "usage: tinyqat-figures SECTION | --svg DIR\nsections:");
    for (const auto& [name, fn] : sections) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  }
  try {
    return sections.at(argv[1])();
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "tinyqat-figures %s: %s\n", argv[1], ex.what());
    return 1;
  }
}
