#include "onnx_io/onnx_import.h"

#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include "io/model_limits.h"
#include "models/mobilenet_v2.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/pooling.h"
#include "tensor/ops.h"

namespace tq::onnx_io {

namespace {

using ::onnx::TensorProto;

// The file being imported ("'path'"), while import_onnx runs: the layer
// importers below say "model", and their errors name the file instead.
thread_local const std::string* g_importing = nullptr;

[[noreturn]] void fail(const std::string& what, const std::string& msg) {
  throw std::invalid_argument(
      fmt::format("ONNX import of {}: {}", what == "model" && g_importing ? *g_importing : what, msg));
}

std::string node_label(const ::onnx::NodeProto& n) {
  return fmt::format("node '{}' ({})", n.name().empty() ? (n.output_size() ? n.output(0) : "?") : n.name(), n.op_type());
}

// The number of elements `t`'s dims describe: each dimension non-negative,
// the product without overflow (a file may claim 2^31 x 2^31 x ...).
int64_t element_count(const TensorProto& t, const std::string& what) {
  int64_t count = 1;
  for (int64_t d : t.dims()) {
    if (d < 0) fail(what, fmt::format("constant '{}' has a negative dimension", t.name()));
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / d)
      fail(what, fmt::format("constant '{}' has more elements than any file can hold (dimensions overflow)", t.name()));
    count *= d;
  }
  return count;
}

void check_stored_inline(const TensorProto& t, const std::string& what) {
  if (t.data_location() == TensorProto::EXTERNAL)
    fail(what, fmt::format("constant '{}' is stored in an external file; save the model with its weights inside", t.name()));
}

// The values of `t` as T: the element count its dims give, checked against
// what the file holds (raw bytes, or `stored` typed values read by `at`)
// before anything is allocated. `kind` names the values in errors.
template <class T, class At>
std::vector<T> stored_values(const TensorProto& t, const std::string& what, int stored, At at, const char* kind) {
  const int64_t count = element_count(t, what);
  if (t.has_raw_data()) {
    if (t.raw_data().size() / sizeof(T) != static_cast<uint64_t>(count) || t.raw_data().size() % sizeof(T) != 0)
      fail(what, fmt::format("constant '{}' holds {} bytes for {} {}", t.name(), t.raw_data().size(), count, kind));
  } else if (stored != count) {
    fail(what, fmt::format("constant '{}' holds {} {} for {} elements", t.name(), stored, kind, count));
  }
  std::vector<T> v(static_cast<size_t>(count));
  if (t.has_raw_data()) std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
  else
    for (int64_t i = 0; i < count; ++i) v[static_cast<size_t>(i)] = at(static_cast<int>(i));
  return v;
}

// A float tensor from an initializer or a Constant's value.
Tensor float_tensor(const TensorProto& t, const std::string& what) {
  if (t.data_type() != TensorProto::FLOAT)
    fail(what, fmt::format("constant '{}' has element type {}; only float32 constants are imported", t.name(),
                           static_cast<int>(t.data_type())));
  check_stored_inline(t, what);
  if (t.dims_size() > static_cast<int>(kMaxDims))
    fail(what, fmt::format("constant '{}' has {} dimensions; a tensor has at most {}", t.name(), t.dims_size(), kMaxDims));
  Shape shape;
  for (int64_t d : t.dims()) shape.push_back(d);
  const std::vector<float> v =
      stored_values<float>(t, what, t.float_data_size(), [&](int i) { return t.float_data(i); }, "floats");
  // A weight that is not a number is refused here, where it is read, rather
  // than giving NaN outputs (or int8 codes of -128 after quantization) later.
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      fail(what, fmt::format("constant '{}' holds {} at element {}; weights must be finite", t.name(), v[i], i));
  return from_vector(v, shape);
}

// An int64 tensor from an initializer or a Constant's value.
std::vector<int64_t> int64_values(const TensorProto& t, const std::string& what) {
  check_stored_inline(t, what);
  return stored_values<int64_t>(t, what, t.int64_data_size(), [&](int i) { return t.int64_data(i); }, "int64 values");
}

const ::onnx::AttributeProto* attribute(const ::onnx::NodeProto& n, const std::string& name) {
  const ::onnx::AttributeProto* found = nullptr;
  for (const auto& a : n.attribute())
    if (a.name() == name) {
      if (found) fail("model", fmt::format("{}: attribute {} is given twice", node_label(n), name));
      found = &a;
    }
  return found;
}
int64_t int_attr(const ::onnx::NodeProto& n, const std::string& name, int64_t fallback) {
  const auto* a = attribute(n, name);
  return a ? a->i() : fallback;
}
std::vector<int64_t> ints_attr(const ::onnx::NodeProto& n, const std::string& name, std::vector<int64_t> fallback) {
  const auto* a = attribute(n, name);
  if (!a) return fallback;
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}
float float_attr(const ::onnx::NodeProto& n, const std::string& name, float fallback) {
  const auto* a = attribute(n, name);
  if (a && !std::isfinite(a->f()))
    fail("model", fmt::format("{}: attribute {} = {} is not finite", node_label(n), name, a->f()));
  return a ? a->f() : fallback;
}

// "fc1.weight" -> "fc1"; "layers.0.weight" -> "layers_0"; "onnx::Gemm_5" -> "".
std::string module_of_constant(const std::string& name) {
  if (name.find("::") != std::string::npos) return "";
  const auto dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0) return "";
  std::string m = name.substr(0, dot);
  for (char& c : m)
    if (c == '.') c = '_';
  return m;
}
// "/relu1/Relu" -> "relu1"; "/net/net.0/Gemm" -> "net_0"; "/Relu" -> "".
std::string module_of_node(const std::string& name) {
  if (name.empty() || name[0] != '/') return "";
  const auto last = name.rfind('/');
  if (last == 0) return "";
  const auto prev = name.rfind('/', last - 1);
  std::string m = name.substr(prev + 1, last - prev - 1);
  for (char& c : m)
    if (c == '.') c = '_';
  return m;
}

// What the naming below has already counted, per Sequential being filled,
// so that naming stays linear in the number of nodes: children are only ever
// added during an import, so a count can go on from where it stopped.
struct NameCounts {
  struct Prefix {
    size_t seen = 0;  // children looked at so far
    int count = 0;    // of them, those whose name starts with the prefix
  };
  std::map<std::pair<const nn::Module*, std::string>, Prefix> prefixes;
  std::map<std::pair<const nn::Module*, std::string>, int> next_suffix;  // no free "name_i" below it
};
thread_local NameCounts* g_names = nullptr;  // set by import_onnx for the import it runs

std::string unique_child(const nn::Module& model, std::string name) {
  if (!model.find_slot(name)) return name;
  int from = 1;
  if (g_names) from = g_names->next_suffix[{&model, name}];
  for (int i = std::max(from, 1);; ++i) {
    const std::string n = fmt::format("{}_{}", name, i);
    if (!model.find_slot(n)) {
      if (g_names) g_names->next_suffix[{&model, name}] = i;
      return n;
    }
  }
}

const Tensor& constant(ImportContext& c, int input, const std::string& what) {
  if (c.node.input_size() <= input || c.node.input(input).empty())
    fail("model", fmt::format("{} has no input {} ({})", node_label(c.node), input, what));
  auto it = c.constants.find(c.node.input(input));
  if (it == c.constants.end())
    fail("model", fmt::format("{}: its {} '{}' is computed in the graph; only constant weights are imported",
                              node_label(c.node), what, c.node.input(input)));
  return it->second;
}

// A Linear holding `weight` (out, in) and `bias` (out, or undefined).
void add_linear(ImportContext& c, const Tensor& weight, const Tensor& bias) {
  const int64_t out = weight.size(0), in = weight.size(1);
  auto linear = std::make_shared<nn::Linear>(in, out, bias.defined());
  const std::vector<float> w = to_vector(weight);
  std::copy(w.begin(), w.end(), linear->weight.data<float>());
  if (bias.defined()) {
    if (bias.numel() != out)
      fail("model", fmt::format("{}: bias of {} values for {} outputs", node_label(c.node), bias.numel(), out));
    const std::vector<float> b = to_vector(bias);
    std::copy(b.begin(), b.end(), linear->bias.data<float>());
  }
  c.model.push_back(unique_child(c.model, c.child_name("fc")), linear);
}

int import_gemm(ImportContext& c) {
  const auto& n = c.node;
  if (int_attr(n, "transA", 0) != 0) fail("model", node_label(n) + ": transA=1 is not supported");
  const float alpha = float_attr(n, "alpha", 1.f), beta = float_attr(n, "beta", 1.f);
  Tensor b = constant(c, 1, "weight");
  if (b.dim() != 2) fail("model", fmt::format("{}: weight of shape {} is not 2-D", node_label(n), b.shape().str()));
  Tensor w = int_attr(n, "transB", 0) ? kernels::contiguous(b) : kernels::contiguous(kernels::transpose(b, 0, 1));
  if (alpha != 1.f) w = kernels::mul_scalar(w, alpha);
  Tensor bias;
  if (n.input_size() > 2 && !n.input(2).empty()) {
    const Tensor& cb = constant(c, 2, "bias");
    bias = kernels::reshape(cb, {cb.numel()});
    if (beta != 1.f) bias = kernels::mul_scalar(bias, beta);
    if (bias.numel() == 1 && w.size(0) != 1) bias = full({w.size(0)}, to_vector(bias)[0]);  // a scalar C, broadcast
  }
  add_linear(c, w, bias);
  return 0;
}

int import_matmul(ImportContext& c) {
  const Tensor b = constant(c, 1, "weight");
  if (b.dim() != 2) fail("model", fmt::format("{}: weight of shape {} is not 2-D", node_label(c.node), b.shape().str()));
  const Tensor w = kernels::contiguous(kernels::transpose(b, 0, 1));
  Tensor bias;
  int consumed = 0;
  // MatMul followed by Add(., constant bias) is one Linear.
  if (!c.rest.empty()) {
    const auto& add = *c.rest.front();
    if (add.op_type() == "Add" && add.input_size() == 2) {
      for (int i = 0; i < 2; ++i) {
        if (add.input(i) != c.node.output(0)) continue;
        auto it = c.constants.find(add.input(1 - i));
        if (it != c.constants.end() && it->second.numel() == w.size(0)) {
          bias = kernels::reshape(it->second, {it->second.numel()});
          consumed = 1;
        }
      }
    }
  }
  add_linear(c, w, bias);
  return consumed;
}

// ---- Convolutional layers ----

// The 2-D attributes of a Conv / pool node: `name` with two values (one per
// spatial axis), default `fallback`.
std::array<int64_t, 2> pair_attr(const ::onnx::NodeProto& n, const std::string& name, int64_t fallback) {
  const std::vector<int64_t> v = ints_attr(n, name, {fallback, fallback});
  if (v.size() != 2)
    fail("model", fmt::format("{}: {} has {} values; only 2-D (N, C, H, W) operators are imported", node_label(n), name,
                              v.size()));
  return {v[0], v[1]};
}

// ONNX's pads (top, left, bottom, right) as tinyqat's symmetric (h, w).
std::array<int64_t, 2> symmetric_pads(const ::onnx::NodeProto& n) {
  if (attribute(n, "auto_pad") && attribute(n, "auto_pad")->s() != "NOTSET")
    fail("model", fmt::format("{}: auto_pad={} is not supported; write explicit pads", node_label(n),
                              attribute(n, "auto_pad")->s()));
  const std::vector<int64_t> p = ints_attr(n, "pads", {0, 0, 0, 0});
  if (p.size() != 4) fail("model", fmt::format("{}: pads has {} values, expected 4", node_label(n), p.size()));
  if (p[0] != p[2] || p[1] != p[3])
    fail("model", fmt::format("{}: asymmetric pads ({}, {}, {}, {}) are not supported", node_label(n), p[0], p[1], p[2], p[3]));
  return {p[0], p[1]};
}

void copy_into(Tensor& dst, const Tensor& src) {
  const std::vector<float> v = to_vector(src);
  std::copy(v.begin(), v.end(), dst.data<float>());
}

int import_conv(ImportContext& c) {
  const auto& n = c.node;
  const Tensor& w = constant(c, 1, "weight");
  if (w.dim() != 4) fail("model", fmt::format("{}: weight of shape {} is not (out, in / groups, kH, kW)", node_label(n), w.shape().str()));
  const int64_t groups = int_attr(n, "group", 1);
  const int64_t out = w.size(0), in = w.size(1) * groups;
  const auto k = pair_attr(n, "kernel_shape", 0);
  if ((k[0] != 0 || k[1] != 0) && (k[0] != w.size(2) || k[1] != w.size(3)))
    fail("model", fmt::format("{}: kernel_shape ({}, {}) does not match the weight {}", node_label(n), k[0], k[1], w.shape().str()));
  const auto stride = pair_attr(n, "strides", 1), dilation = pair_attr(n, "dilations", 1);
  const auto pad = symmetric_pads(n);
  const bool has_bias = n.input_size() > 2 && !n.input(2).empty();
  auto conv = std::make_shared<nn::Conv2d>(in, out, nn::Pair2d(w.size(2), w.size(3)), nn::Pair2d(stride[0], stride[1]),
                                           nn::Pair2d(pad[0], pad[1]), nn::Pair2d(dilation[0], dilation[1]), groups, has_bias);
  copy_into(conv->weight, w);
  if (has_bias) {
    const Tensor& b = constant(c, 2, "bias");
    if (b.numel() != out) fail("model", fmt::format("{}: bias of {} values for {} outputs", node_label(n), b.numel(), out));
    copy_into(conv->bias, b);
  }
  c.model.push_back(unique_child(c.model, c.child_name("conv")), conv);
  return 0;
}

int import_batch_norm(ImportContext& c) {
  const auto& n = c.node;
  if (int_attr(n, "training_mode", 0) != 0 || n.output_size() > 1)
    fail("model", node_label(n) + ": only the inference form of BatchNormalization (one output) is imported");
  const Tensor &gamma = constant(c, 1, "scale"), &beta = constant(c, 2, "bias"), &mean = constant(c, 3, "mean"),
               &var = constant(c, 4, "variance");
  const int64_t ch = gamma.numel();
  if (beta.numel() != ch || mean.numel() != ch || var.numel() != ch)
    fail("model", fmt::format("{}: scale, bias, mean and variance must have one value per channel", node_label(n)));
  auto bn = std::make_shared<nn::BatchNorm2d>(ch, static_cast<double>(float_attr(n, "epsilon", 1e-5f)));
  copy_into(bn->weight, gamma);
  copy_into(bn->bias, beta);
  bn->set_buffer("running_mean", kernels::contiguous(kernels::reshape(mean, {ch})));
  bn->set_buffer("running_var", kernels::contiguous(kernels::reshape(var, {ch})));
  // The name of a BatchNormalization: its scale's prefix ("bn3.weight") or node name.
  c.model.push_back(unique_child(c.model, c.child_name("bn")), bn);
  return 0;
}

void refuse_ceil_mode(const ::onnx::NodeProto& n) {
  if (int_attr(n, "ceil_mode", 0) != 0) fail("model", node_label(n) + ": ceil_mode=1 is not supported");
}

int import_max_pool(ImportContext& c) {
  const auto& n = c.node;
  refuse_ceil_mode(n);
  if (int_attr(n, "storage_order", 0) != 0 || n.output_size() > 1)
    fail("model", node_label(n) + ": MaxPool with indices or column-major storage is not supported");
  const auto k = pair_attr(n, "kernel_shape", 0), s = pair_attr(n, "strides", 1), d = pair_attr(n, "dilations", 1);
  const auto p = symmetric_pads(n);
  c.model.push_back(unique_child(c.model, c.child_name("pool")),
                    std::make_shared<nn::MaxPool2d>(nn::Pair2d(k[0], k[1]), nn::Pair2d(s[0], s[1]), nn::Pair2d(p[0], p[1]),
                                                    nn::Pair2d(d[0], d[1])));
  return 0;
}

// AveragePool, with `extra` padding from a Pad before it (which counts in
// the average, as AvgPool2d's count_include_pad=True).
void add_avg_pool(ImportContext& c, const ::onnx::NodeProto& n, std::array<int64_t, 2> extra, const std::string& name) {
  refuse_ceil_mode(n);
  const auto k = pair_attr(n, "kernel_shape", 0), s = pair_attr(n, "strides", 1);
  const auto p = symmetric_pads(n);
  if ((p[0] != 0 || p[1] != 0) && int_attr(n, "count_include_pad", 0) == 0)
    fail("model", node_label(n) + ": padded AveragePool with count_include_pad=0 is not supported");
  if ((p[0] != 0 || p[1] != 0) && (extra[0] != 0 || extra[1] != 0))
    fail("model", node_label(n) + ": padded AveragePool after a Pad is not supported");
  c.model.push_back(unique_child(c.model, name),
                    std::make_shared<nn::AvgPool2d>(nn::Pair2d(k[0], k[1]), nn::Pair2d(s[0], s[1]),
                                                    nn::Pair2d(p[0] + extra[0], p[1] + extra[1])));
}

// Pad with zeros on H and W only (PyTorch writes a padded AvgPool2d as Pad +
// AveragePool): merged into the AveragePool after it.
int import_pad(ImportContext& c) {
  const auto& n = c.node;
  const std::string mode = attribute(n, "mode") ? attribute(n, "mode")->s() : "constant";
  if (mode != "constant") fail("model", fmt::format("{}: mode {} is not supported", node_label(n), mode));
  if (n.input_size() < 2 || !c.int_constants.count(n.input(1)))
    fail("model", node_label(n) + ": its pads must be a constant int64 tensor");
  const std::vector<int64_t>& p = c.int_constants.at(n.input(1));
  if (n.input_size() > 2 && !n.input(2).empty()) {
    const auto it = c.constants.find(n.input(2));
    if (it == c.constants.end() || it->second.numel() != 1 || to_vector(it->second)[0] != 0.f)
      fail("model", node_label(n) + ": only padding with 0 is supported");
  }
  if (p.size() != 8 || p[0] != 0 || p[1] != 0 || p[4] != 0 || p[5] != 0 || p[2] != p[6] || p[3] != p[7] || p[2] < 0 || p[3] < 0)
    fail("model", node_label(n) + ": only the same zero padding on both sides of H and W of an (N, C, H, W) input is supported");
  const std::array<int64_t, 2> extra = {p[2], p[3]};
  if (extra[0] == 0 && extra[1] == 0) return 0;  // a no-op
  if (c.rest.empty() || c.rest.front()->op_type() != "AveragePool" || c.rest.front()->input(0) != n.output(0))
    fail("model", node_label(n) + ": a Pad is imported only before an AveragePool");
  add_avg_pool(c, *c.rest.front(), extra, c.child_name("pool"));
  return 1;
}

template <class M>
ImportFunction simple(const char* fallback) {
  return [fallback](ImportContext& c) {
    c.model.push_back(unique_child(c.model, c.child_name(fallback)), std::make_shared<M>());
    return 0;
  };
}


// ---- The residual sum: a branch from x that meets x again in an Add ----

// The leaves of a module tree (modules without children), in order.
std::vector<nn::Module*> leaves_of(nn::Module& m) {
  std::vector<nn::Module*> out;
  for (auto& [path, sub] : m.named_modules())
    if (sub->children().empty()) out.push_back(sub);
  return out;
}

// The layer configuration two leaves must share to hold the same computation.
bool same_layer(const nn::Module& a, const nn::Module& b) {
  if (a.type_name() != b.type_name()) return false;
  if (const auto* x = dynamic_cast<const nn::Conv2d*>(&a)) {
    const auto& y = dynamic_cast<const nn::Conv2d&>(b);
    auto eq = [](const nn::Pair2d& p, const nn::Pair2d& q) { return p.h == q.h && p.w == q.w; };
    return x->in_channels == y.in_channels && x->out_channels == y.out_channels && eq(x->kernel_size, y.kernel_size) &&
           eq(x->stride, y.stride) && eq(x->padding, y.padding) && eq(x->dilation, y.dilation) && x->groups == y.groups &&
           x->bias.defined() == y.bias.defined();
  }
  if (const auto* x = dynamic_cast<const nn::BatchNorm2d*>(&a))
    return x->num_features == dynamic_cast<const nn::BatchNorm2d&>(b).num_features;
  return true;
}

// A branch y = body(x) summed with x: MobileNetV2's InvertedResidual (its
// `conv` chain and its `skip_add`) when the body has that block's layers
// (1x1 expand + BN + ReLU6 when expanded, 3x3 depthwise + BN + ReLU6, 1x1
// projection + BN, convolutions without bias); anything else is refused,
// naming the Add.
std::shared_ptr<nn::Module> residual_module(nn::Sequential& body, const ::onnx::NodeProto& add) {
  const auto refuse = [&](const std::string& why) {
    fail("model", fmt::format("{}: a residual sum is imported only as MobileNetV2's inverted residual block (1x1 expand, "
                              "3x3 depthwise, 1x1 projection, each convolution without bias and followed by its "
                              "BatchNormalization, Clip(0, 6) after the first two); {}",
                              node_label(add), why));
  };
  const std::vector<nn::Module*> got = leaves_of(body);
  std::vector<const nn::Conv2d*> convs;
  for (auto* m : got)
    if (const auto* c = dynamic_cast<const nn::Conv2d*>(m)) convs.push_back(c);
  if (convs.size() < 2 || convs.size() > 3) refuse(fmt::format("its branch holds {} convolutions", convs.size()));
  const nn::Conv2d& depthwise = *convs[convs.size() - 2];
  const int64_t in = convs.front()->in_channels, hidden = depthwise.in_channels;
  if (depthwise.groups != hidden || hidden % in != 0 || (convs.size() == 2 && hidden != in))
    refuse("its branch has no depthwise convolution in the right place");
  std::shared_ptr<models::InvertedResidual> block;
  try {
    block = std::make_shared<models::InvertedResidual>(in, convs.back()->out_channels, depthwise.stride.h, hidden / in);
  } catch (const std::invalid_argument& e) {
    refuse(e.what());
  }
  if (!block->use_res_connect) refuse("its branch changes the shape of its input");
  const std::vector<nn::Module*> want = leaves_of(*block->conv);
  if (want.size() != got.size()) refuse(fmt::format("its branch holds {} layers, the block {}", got.size(), want.size()));
  for (size_t k = 0; k < want.size(); ++k) {
    if (!same_layer(*want[k], *got[k]))
      refuse(fmt::format("layer {} of its branch is {}, the block's is {}", k + 1, got[k]->repr(), want[k]->repr()));
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(want[k])) bn->eps = dynamic_cast<nn::BatchNorm2d*>(got[k])->eps;
    const auto p = want[k]->named_parameters(false), q = got[k]->named_parameters(false);
    for (size_t j = 0; j < p.size() && j < q.size(); ++j) kernels::copy_(p[j].second, q[j].second);
    for (const auto& [name, t] : got[k]->named_buffers(false)) want[k]->set_buffer(name, t);
  }
  block->eval();
  return block;
}

}  // namespace

std::string ImportContext::child_name(const std::string& fallback) const {
  for (const auto& in : node.input()) {
    if (!constants.count(in)) continue;
    const std::string m = module_of_constant(in);
    if (!m.empty()) return m;
  }
  const std::string m = module_of_node(node.name());
  if (!m.empty()) return m;
  // 1 + the children whose name starts with `fallback`.
  const auto& children = model.children();
  NameCounts::Prefix scratch;
  NameCounts::Prefix& p = g_names ? g_names->prefixes[{&model, fallback}] : scratch;
  for (; p.seen < children.size(); ++p.seen)
    if (children[p.seen]->name.rfind(fallback, 0) == 0) ++p.count;
  return fmt::format("{}{}", fallback, p.count + 1);
}

std::map<std::string, ImportFunction>& onnx_importers() {
  static std::map<std::string, ImportFunction> table = {
      {"Gemm", import_gemm},
      {"MatMul", import_matmul},
      {"Relu", simple<nn::ReLU>("relu")},
      {"Flatten",
       [](ImportContext& c) {
         if (int_attr(c.node, "axis", 1) != 1)
           fail("model", node_label(c.node) + ": only Flatten with axis=1 (keep the batch dimension) is supported");
         return simple<nn::Flatten>("flatten")(c);
       }},
      {"Clip",
       [](ImportContext& c) {
         // Clip(0, 6) is PyTorch's ReLU6 (min / max as inputs since opset 11, attributes before).
         auto bound = [&](int input, const char* attr, float fallback) {
           if (c.node.input_size() > input && !c.node.input(input).empty()) {
             const Tensor& t = constant(c, input, attr);
             if (t.numel() != 1) fail("model", node_label(c.node) + ": Clip bounds must be scalars");
             return to_vector(t)[0];
           }
           return float_attr(c.node, attr, fallback);
         };
         const float lo = bound(1, "min", -INFINITY), hi = bound(2, "max", INFINITY);
         if (lo != 0.f || hi != 6.f)
           fail("model", fmt::format("{}: Clip({}, {}) is not supported; only Clip(0, 6) (ReLU6) is", node_label(c.node), lo, hi));
         return simple<nn::ReLU6>("relu")(c);
       }},
      // Inference no-ops.
      {"Identity", [](ImportContext&) { return 0; }},
      {"Dropout", [](ImportContext&) { return 0; }},
      {"Conv", import_conv},
      {"BatchNormalization", import_batch_norm},
      {"MaxPool", import_max_pool},
      {"AveragePool",
       [](ImportContext& c) {
         add_avg_pool(c, c.node, {0, 0}, c.child_name("pool"));
         return 0;
       }},
      {"Pad", import_pad},
      {"GlobalAveragePool",
       [](ImportContext& c) {
         c.model.push_back(unique_child(c.model, c.child_name("pool")), std::make_shared<nn::AdaptiveAvgPool2d>(1));
         return 0;
       }},
      // A residual Add (a branch meeting its input again) is recognised by import_onnx, not by this table.
  };
  return table;
}

namespace {

// Imports nodes[begin, end), a chain that starts from `current`, into
// `model`; returns the name of its result. A value that two nodes take (x
// below) opens a residual sum: the nodes up to the Add that takes x again
// are its branch, imported on their own, and the sum becomes one module.
// `takers` lists, for each value, the nodes that take it, in order (each node once).
using Takers = std::unordered_map<std::string, std::vector<size_t>>;

std::string import_chain(const std::vector<const ::onnx::NodeProto*>& nodes, const Takers& takers_of, size_t begin,
                         size_t end, std::string current, const std::map<std::string, Tensor>& constants,
                         const std::map<std::string, std::vector<int64_t>>& int_constants, nn::Sequential& model,
                         const std::string& what) {
  auto& table = onnx_importers();
  for (size_t i = begin; i < end; ++i) {
    const auto& n = *nodes[i];
    int takers = 0;
    size_t add = end;
    if (const auto found = takers_of.find(current); found != takers_of.end())
      for (const size_t j : found->second) {
        if (j < i || j >= end) continue;
        ++takers;
        if (j > i && add == end && nodes[j]->op_type() == "Add" && nodes[j]->input_size() == 2) add = j;
      }
    if (takers > 1 && add != end) {
      // x -> nodes[i, add) -> y; Add(x, y) or Add(y, x).
      const auto& sum = *nodes[add];
      const std::string other = sum.input(0) == current ? sum.input(1) : sum.input(0);
      auto body = std::make_shared<nn::Sequential>();
      if (import_chain(nodes, takers_of, i, add, current, constants, int_constants, *body, what) != other)
        fail(what, fmt::format("{}: its second input '{}' is not the end of the branch from '{}'", node_label(sum), other,
                               current));
      // Named as the block: "/features.2.skip_add/Add" -> "features_2", "/layer1/Add" -> "layer1".
      std::string name = module_of_node(sum.name());
      if (const std::string tail = "skip_add"; name.size() >= tail.size() && name.ends_with(tail)) {
        name.resize(name.size() - tail.size());
        if (!name.empty() && name.back() == '_') name.pop_back();
      }
      model.push_back(unique_child(model, name.empty() ? "block" : name), residual_module(*body, sum));
      i = add;
      current = sum.output(0);
      continue;
    }
    if (n.input_size() == 0 || n.input(0) != current)
      fail(what, fmt::format("{} does not take the previous result '{}' as its first input; only chains of layers "
                             "are imported",
                             node_label(n), current));
    for (int k = 1; k < n.input_size(); ++k)
      if (!n.input(k).empty() && !constants.count(n.input(k)) && !int_constants.count(n.input(k)))
        fail(what, fmt::format("{}: input '{}' is neither the previous result nor a constant (branches are not "
                               "supported)",
                               node_label(n), n.input(k)));
    auto it = table.find(n.op_type());
    if (it == table.end()) {
      std::string known;
      for (const auto& [k, _] : table) known += (known.empty() ? "" : ", ") + k;
      fail(what, fmt::format("{}: operator {} is not supported (supported: {})", node_label(n), n.op_type(), known));
    }
    const std::span<const ::onnx::NodeProto* const> rest(nodes.data() + i + 1, end - i - 1);
    ImportContext ctx{n, constants, int_constants, rest, model};
    const int consumed = it->second(ctx);
    i += static_cast<size_t>(consumed);
    current = nodes[i]->output(0);
  }
  return current;
}

}  // namespace

std::shared_ptr<nn::Sequential> import_onnx(const ::onnx::ModelProto& proto, const std::string& what) {
  g_importing = &what;
  struct Reset {
    ~Reset() { g_names = nullptr, g_importing = nullptr; }
  } reset;
  const auto& graph = proto.graph();
  for (const auto& op : proto.opset_import())
    if (!op.domain().empty() && op.domain() != "ai.onnx")
      fail(what, fmt::format("operators of domain '{}' are not supported", op.domain()));
  // Every step below is linear in the graph; the limit keeps the model it
  // makes within what a model file may hold.
  if (static_cast<size_t>(graph.node_size()) > io::kMaxModules)
    fail(what, fmt::format("the graph has {} nodes, more than the limit of {} (io::kMaxModules)", graph.node_size(),
                           io::kMaxModules));
  std::map<std::string, Tensor> constants;
  std::map<std::string, std::vector<int64_t>> int_constants;
  auto add_constant = [&](const TensorProto& t, const std::string& name) {
    if (constants.count(name) || int_constants.count(name))
      fail(what, fmt::format("constant '{}' is defined twice", name));
    if (t.data_type() == TensorProto::INT64)
      int_constants[name] = int64_values(t, what);
    else
      constants[name] = float_tensor(t, what);
  };
  for (const auto& t : graph.initializer()) add_constant(t, t.name());
  std::vector<const ::onnx::NodeProto*> nodes;
  for (const auto& n : graph.node()) {
    if (n.op_type() == "Constant") {
      const auto* v = attribute(n, "value");
      if (!v || n.output_size() != 1) fail(what, node_label(n) + ": only Constant nodes with a tensor value are supported");
      add_constant(v->t(), n.output(0));
    } else {
      nodes.push_back(&n);
    }
  }
  std::string current;
  for (const auto& in : graph.input())
    if (!constants.count(in.name()) && !int_constants.count(in.name())) {
      if (!current.empty()) fail(what, "the graph has more than one input; only single-input chains are imported");
      current = in.name();
    }
  if (current.empty()) fail(what, "the graph has no input");
  if (graph.output_size() != 1) fail(what, "the graph must have exactly one output");

  Takers takers;
  for (size_t j = 0; j < nodes.size(); ++j)
    for (const auto& in : nodes[j]->input()) {
      auto& list = takers[in];
      if (list.empty() || list.back() != j) list.push_back(j);
    }
  NameCounts names;
  g_names = &names;
  auto model = std::make_shared<nn::Sequential>();
  current = import_chain(nodes, takers, 0, nodes.size(), current, constants, int_constants, *model, what);
  if (current != graph.output(0).name())
    fail(what, fmt::format("the chain ends in '{}', not in the graph output '{}'", current, graph.output(0).name()));
  if (model->size() == 0) fail(what, "the graph holds no layer");
  model->eval();
  return model;
}

std::shared_ptr<nn::Sequential> import_onnx(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::invalid_argument(fmt::format("ONNX import: cannot open '{}'", path));
  std::stringstream ss;
  ss << f.rdbuf();
  ::onnx::ModelProto proto;
  if (!proto.ParseFromString(ss.str())) throw std::invalid_argument(fmt::format("ONNX import: '{}' is not an ONNX model", path));
  return import_onnx(proto, "'" + path + "'");
}

}  // namespace tq::onnx_io
