// The layer interface (src/quant/layer.h, docs/quantization.md §6.2-6.3): the
// passes, the comparison tools and the model files reach every layer through
// it, so a layer kind the library has never heard of works through
// prepare_qat / convert / compare / save / load once its classes implement
// the interface and its entries are in the tables. And the fused activation
// is a kind: ReLU6 in float, in fake quant and in the int8 epilogue.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <typeindex>

#include <nlohmann/json.hpp>

#include "test_files.h"
#include "tinyqat.h"

using namespace tq;
namespace q = tq::quant;
using Catch::Matchers::Contains;

namespace {

// ---- A user's own layer kind: y = x * weight (one weight per feature) ----

// The float layer.
struct Scale : nn::Module {
  explicit Scale(int64_t features) { weight = register_parameter("weight", rand_uniform({features}, 0.5, 2.0)); }
  Tensor forward(const Tensor& x) override { return x * weight; }
  Tensor weight;  // (features)
};

// Its int8 form (kept in float arithmetic here: what matters is that the
// tools reach it): the weight rounded to its grid, the output to its grid.
struct QuantizedScale : nn::Module, q::QuantizedLayer {
  QuantizedScale(const Tensor& weight_q, const QParams& output) : output_(output) {
    weight_ = register_buffer("weight", weight_q);
  }
  Tensor forward(const Tensor& x) override {
    const Tensor y = kernels::to_float(x) * kernels::to_float(weight_);
    return q::quantize(y, output_, DType::u8);
  }
  q::FusedActivation activation() const override { return q::FusedActivation::none; }
  std::optional<QParams> qparams(q::QuantRole role) const override {
    if (role == q::QuantRole::weight) return weight_.qparams();
    if (role == q::QuantRole::output) return output_;
    return std::nullopt;
  }
  Tensor effective_weight() override { return weight_; }
  Tensor weight_;
  QParams output_;
};

// Its prepared (QAT) form: fake quant on the weight and the output.
struct QATScale : nn::Module, q::PreparedLayer {
  QATScale(Scale& f, const q::QConfig& qc) {
    weight = register_parameter("weight", f.weight);
    weight_quant = register_module("weight_fake_quant", qc.weight());
    output_quant = register_module("activation_post_process", qc.activation());
  }
  Tensor forward(const Tensor& x) override { return output_quant(x * weight_quant(weight)); }
  q::FusedActivation activation() const override { return q::FusedActivation::none; }
  q::QParamsSource* quantizer(q::QuantRole role) const override {
    if (role == q::QuantRole::weight) return &weight_quant.get();
    if (role == q::QuantRole::output) return &output_quant.get();
    return nullptr;
  }
  Tensor float_weight() const override { return weight; }
  std::shared_ptr<nn::Module> to_quantized(const std::string&) const override {
    const Tensor w = q::quantize(weight.detach(), weight_quant->calculate_qparams(), DType::i8);
    return std::make_shared<QuantizedScale>(w, output_quant->calculate_qparams());
  }
  Tensor weight;
  nn::Slot<q::QParamsSource> weight_quant, output_quant;
};

struct ScaleNet : nn::Module {
  nn::Slot<nn::Linear> fc = register_module("fc", nn::Linear(6, 4));
  nn::Slot<nn::Module> scale = register_module("scale", std::shared_ptr<nn::Module>(std::make_shared<Scale>(4)));
  Tensor forward(const Tensor& x) override { return scale(relu(fc(x))); }
};

// The table entries that make Scale quantizable, in copies of the defaults.
struct ScaleTables {
  q::ModuleMapping qat = q::default_qat_module_mappings();
  q::ModuleMapping convert = q::default_static_quant_module_mappings();
  ScaleTables() {
    qat[typeid(Scale)] = [](nn::Module& m, const q::QConfig* qc, const std::string&) -> std::shared_ptr<nn::Module> {
      return std::make_shared<QATScale>(static_cast<Scale&>(m), *qc);
    };
    convert[typeid(QATScale)] = [](nn::Module& m, const q::QConfig*, const std::string& path) {
      return dynamic_cast<q::PreparedLayer&>(m).to_quantized(path);
    };
  }
};

// The codec entry: the output qparams in the config; the i8 weight, as a
// buffer, is stored and restored by the generic path.
void register_scale_codec() {
  io::module_codecs()["QuantizedScale"] = {
      [](const nn::Module& m, nlohmann::json& c) {
        auto& s = dynamic_cast<const QuantizedScale&>(m);
        const QParams& w = s.weight_.qparams();
        c = {{"features", s.weight_.numel()}, {"output_scale", s.output_.scale[0]},
             {"output_zero_point", s.output_.zero_point[0]}, {"output_quant_max", s.output_.quant_max},
             {"weight_scales", w.scale}};
      },
      [](const nlohmann::json& c, const std::map<std::string, Tensor>&) -> std::shared_ptr<nn::Module> {
        QParams out;
        out.scheme = QScheme::per_tensor_affine;
        out.scale = {c.at("output_scale").get<float>()};
        out.zero_point = {c.at("output_zero_point").get<int32_t>()};
        out.quant_min = 0;
        out.quant_max = c.at("output_quant_max").get<int32_t>();
        QParams w;  // one scale per feature (per channel, axis 0)
        w.scheme = QScheme::per_channel_symmetric;
        w.axis = 0;
        w.scale = c.at("weight_scales").get<std::vector<float>>();
        w.zero_point.assign(w.scale.size(), 0);
        w.quant_min = -128;
        w.quant_max = 127;
        const Tensor weight = with_qparams(empty({c.at("features").get<int64_t>()}, DType::i8),
                                           std::make_shared<const QParams>(w));
        return std::make_shared<QuantizedScale>(weight, out);
      }};
}

Tensor run(nn::Module& m, const Tensor& x) {
  NoGradGuard no_grad;
  m.eval();
  return m(x);
}

std::vector<int> ints(const Tensor& y) {
  const Tensor c = kernels::contiguous(y);
  std::vector<int> out;
  for (int64_t i = 0; i < c.numel(); ++i) out.push_back(c.data<uint8_t>()[i]);
  return out;
}

void train(nn::Module& m, int steps) {
  m.train();
  nn::SGD opt(m.parameters(), {.lr = 0.05, .momentum = 0.9});
  for (int s = 0; s < steps; ++s) {
    Generator g(70 + s);
    const Tensor x = randn({32, 6}, g) * 3.f;
    opt.zero_grad();
    Tensor loss = mse_loss(m(x), zeros({32, 4}));
    loss.backward();
    opt.step();
  }
  m.eval();
}

}  // namespace

TEST_CASE("a user's layer kind goes through prepare_qat, convert, compare, save and load by table entries alone",
          "[quant][interface]") {
  manual_seed(5);
  ScaleNet net;
  manual_seed(5);
  ScaleNet float_net;  // the same initial weights
  ScaleTables tables;
  net.qconfig = q::get_default_qat_qconfig("x86");
  q::prepare_qat(net, tables.qat);
  REQUIRE(net.scale.module().type_name() == "QATScale");
  CHECK(net.fc.module().type_name() == "QATLinear");
  train(net, 3);

  // The comparison tools see the new kind through the interface.
  const auto weights = q::compare_weights(float_net, net);
  bool saw_scale = false;
  for (const auto& row : weights) saw_scale |= row.name == "scale" && row.quant_type == "QATScale";
  CHECK(saw_scale);

  // convert checks it (through check_convertible) and swaps it.
  {
    ScaleNet unused;
    unused.qconfig = q::get_default_qat_qconfig("x86");
    q::prepare_qat(unused, tables.qat);
    CHECK_THROWS_WITH(q::convert(unused, tables.convert), Contains("has seen no data"));
    CHECK(unused.scale.module().type_name() == "QATScale");  // left as it was
  }
  Generator g(9);
  const Tensor x = randn({8, 6}, g);
  const Tensor fake = run(net, x);
  q::convert(net, tables.convert);
  REQUIRE(net.scale.module().type_name() == "QuantizedScale");
  CHECK(q::set_int8_threads(net, 1) == 2);  // QuantizedLinear and QuantizedScale
  const Tensor int8 = run(net, x);
  REQUIRE(int8.is_quantized());
  // Within a few output steps (the int8 Linear before it may already be one
  // of its own steps off, which the scale then multiplies).
  const double step = int8.qparams().scale[0];
  const std::vector<float> a = to_vector(kernels::to_float(int8)), b = to_vector(fake);
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::fabs(a[i] - b[i]) <= step * 3.01);

  // A quantized model is refused by prepare_qat, found through the interface.
  CHECK_THROWS_WITH(q::prepare_qat(net, tables.qat), Contains("already quantized") && Contains("fc"));

  // Saved and loaded through its registered codec.
  register_scale_codec();
  const std::string path = (tq_test::scratch_dir("layer_interface") / "scale.safetensors").string();
  io::save_model(net, path);
  ScaleNet fresh;
  io::load_into(fresh, path);
  CHECK(fresh.scale.module().type_name() == "QuantizedScale");
  CHECK(ints(run(fresh, x)) == ints(int8));
  io::module_codecs().erase("QuantizedScale");
}

TEST_CASE("the interface answers the qparams, activation and weight of library layers", "[quant][interface]") {
  manual_seed(6);
  auto model = nn::make_mlp({6, 8, 4});
  q::fuse_linear_relu(*model);
  model->qconfig = q::get_default_qat_qconfig("x86");
  q::prepare_qat(*model);
  auto* fc1 = q::as_prepared_layer(&model->get_submodule("fc1"));
  REQUIRE(fc1);
  CHECK(fc1->activation() == q::FusedActivation::relu);
  CHECK_FALSE(fc1->qparams(q::QuantRole::output));  // no data yet
  train(*model, 2);
  auto& qat = dynamic_cast<q::QATLinear&>(model->get_submodule("fc1"));
  REQUIRE(fc1->qparams(q::QuantRole::output));
  CHECK(fc1->qparams(q::QuantRole::output)->scale == qat.output_quant->calculate_qparams().scale);
  CHECK(fc1->qparams(q::QuantRole::input)->zero_point == qat.input_quant->calculate_qparams().zero_point);
  CHECK(fc1->quantizer(q::QuantRole::weight) == &qat.weight_quant.get());
  const QParams out_before = *fc1->qparams(q::QuantRole::output);
  q::convert(*model);
  auto* int8 = q::as_quantized_layer(&model->get_submodule("fc1"));
  REQUIRE(int8);
  CHECK(int8->activation() == q::FusedActivation::relu);
  CHECK(int8->qparams(q::QuantRole::output)->scale == out_before.scale);
  CHECK(int8->effective_weight().dtype() == DType::i8);
  CHECK(q::as_quant_layer(&model->get_submodule("fc2"))->activation() == q::FusedActivation::none);
  CHECK_FALSE(q::as_quant_layer(&model->get_submodule("relu1")));
}

TEST_CASE("quantize_dynamic is driven by its mapping table", "[quant][interface][dynamic]") {
  manual_seed(7);
  auto model = nn::make_mlp({6, 8, 4});
  q::ModuleMapping& table = q::default_dynamic_quant_module_mappings();
  const auto saved = table.at(typeid(nn::Linear));
  int used = 0;
  table[typeid(nn::Linear)] = [&](nn::Module& m, const q::QConfig* qc, const std::string& path) {
    ++used;
    REQUIRE(qc);
    return saved(m, qc, path);
  };
  CHECK(q::quantize_dynamic(*model) == 2);
  table[typeid(nn::Linear)] = saved;
  CHECK(used == 2);
  CHECK(model->get_submodule("fc1").type_name() == "DynamicQuantizedLinear");
}

// ---- ReLU6 ----

TEST_CASE("relu6 is min(max(x, 0), 6), with its gradient where 0 < x < 6", "[nn][relu6]") {
  Tensor x = from_vector({-3.f, 0.f, 0.5f, 5.9f, 6.f, 100.f}, {6});
  x.requires_grad_();
  nn::ReLU6 act;
  Tensor y = act(x);
  CHECK(to_vector(y) == std::vector<float>{0.f, 0.f, 0.5f, 5.9f, 6.f, 6.f});
  sum(y).backward();
  CHECK(to_vector(x.grad()) == std::vector<float>{0.f, 0.f, 1.f, 1.f, 0.f, 0.f});
  // On a quantized tensor the integers are clamped to the codes of 0 and 6.
  QParams qp;
  qp.scheme = QScheme::per_tensor_affine;
  qp.scale = {0.1f};
  qp.zero_point = {20};
  qp.quant_min = 0;
  qp.quant_max = 255;
  const Tensor xq = q::quantize(from_vector({-1.f, 0.3f, 5.f, 7.f, 20.f}, {5}), qp, DType::u8);
  const Tensor yq = nn::relu6(xq);
  REQUIRE(yq.is_quantized());
  CHECK(ints(yq) == std::vector<int>{20, 23, 70, 80, 80});
}

TEST_CASE("(Linear, ReLU6) fuses; its int8 layer clamps at the code of 6 and agrees with fake quant",
          "[quant][relu6]") {
  manual_seed(8);
  auto model = std::make_shared<nn::Sequential>();
  model->push_back("fc1", nn::Linear(6, 16));
  model->push_back("act1", nn::ReLU6());
  model->push_back("fc2", nn::Linear(16, 4));
  Generator g(3);
  const Tensor x = randn({64, 6}, g) * 8.f;  // wide enough that some outputs pass 6
  const Tensor float_out = run(*model, x);
  REQUIRE(q::fuse_linear_relu(*model) == 1);
  CHECK(model->get_submodule("fc1").type_name() == "LinearReLU6");
  CHECK(to_vector(run(*model, x)) == to_vector(float_out));  // fusing changes nothing in float

  model->qconfig = q::get_default_qat_qconfig("x86");
  q::prepare_qat(*model);
  CHECK(model->get_submodule("fc1").type_name() == "QATLinearReLU6");
  {
    model->train();
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) (*model)(x);
    model->eval();
  }
  // The hidden layer's outputs, fake quant against int8.
  auto hidden = [&](nn::Module& m) { return run(m.get_submodule("fc1"), x); };
  const Tensor fake_hidden = hidden(*model);
  const Tensor fake_out = run(*model, x);
  float fake_max = 0;
  for (float v : to_vector(fake_hidden)) fake_max = std::max(fake_max, v);
  q::convert(*model);
  CHECK(model->get_submodule("fc1").type_name() == "QuantizedLinearReLU6");
  const Tensor int8_hidden = hidden(*model);
  REQUIRE(int8_hidden.is_quantized());
  const QParams& oq = int8_hidden.qparams();
  const int six = oq.zero_point[0] + static_cast<int>(std::nearbyint(6.0 / oq.scale[0]));
  const std::vector<int> codes = ints(int8_hidden);
  int top = 0;
  for (int c : codes) top = std::max(top, c);
  CHECK(top == std::min(six, oq.quant_max));  // some outputs reach the clamp at real 6...
  CHECK(fake_max <= 6.f + oq.scale[0] / 2);    // ...as they do in fake quant
  const std::vector<float> a = to_vector(kernels::to_float(int8_hidden)), b = to_vector(fake_hidden);
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::fabs(a[i] - b[i]) <= oq.scale[0] * 1.01);
  const Tensor int8_out = run(*model, x);
  const std::vector<float> c = to_vector(kernels::to_float(int8_out)), d = to_vector(fake_out);
  for (size_t i = 0; i < c.size(); ++i) CHECK(std::fabs(c[i] - d[i]) <= int8_out.qparams().scale[0] * 1.01);

  // Saved and loaded as QuantizedLinearReLU6, bit for bit.
  const std::string path = (tq_test::scratch_dir("layer_interface") / "relu6.safetensors").string();
  io::save_model(*model, path);
  auto loaded = io::load_model(path);
  CHECK(loaded->get_submodule("fc1").type_name() == "QuantizedLinearReLU6");
  CHECK(ints(run(*loaded, x)) == ints(int8_out));
}

TEST_CASE("the int8 ReLU6 epilogue is the plain layer's output clamped to [z_y, z_y + round(6 / s_y)]", "[quant][relu6]") {
  manual_seed(9);
  const Tensor w = randn({8, 5}), b = randn({8});
  q::PerChannelMinMaxObserver observer(q::weight_spec(8, QScheme::per_channel_symmetric, 0));
  observer.observe(w);
  const QParams wq = observer.calculate_qparams();
  auto per_tensor_u8 = [](float scale, int32_t zero_point, int32_t quant_max) {
    QParams p;
    p.scheme = QScheme::per_tensor_affine;
    p.scale = {scale};
    p.zero_point = {zero_point};
    p.quant_min = 0;
    p.quant_max = quant_max;
    return p;
  };
  const QParams oq = per_tensor_u8(0.05f, 40, 255);  // real 6 is code 40 + 120 = 160
  const auto iq = std::make_shared<const QParams>(per_tensor_u8(0.05f, 64, 127));
  q::QuantizedLinear plain(w, b, wq, oq, iq, q::FusedActivation::none, "plain");
  q::QuantizedLinear relu6(w, b, wq, oq, iq, q::FusedActivation::relu6, "relu6");
  CHECK(relu6.type_name() == "QuantizedLinearReLU6");
  Generator g(4);
  const Tensor x = randn({64, 5}, g) * 1.5f;
  const std::vector<int> p = ints(plain(x)), r = ints(relu6(x));
  int below = 0, above = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    CHECK(r[i] == std::clamp(p[i], 40, 160));
    below += p[i] < 40;
    above += p[i] > 160;
  }
  CHECK(below > 0);  // both ends of the clamp were exercised
  CHECK(above > 0);
  const q::OutputRange range = q::fused_output_range(q::FusedActivation::relu6, oq);
  CHECK(range.min == 40);
  CHECK(range.max == 160);
  // The code of 6 never passes the top of the range.
  CHECK(q::fused_output_range(q::FusedActivation::relu6, per_tensor_u8(0.01f, 10, 127)).max == 127);
}
