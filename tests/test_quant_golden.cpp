// The quantization core against PyTorch 1.13 (tests/golden/quant_core.txt,
// format and cases in tests/golden/README.md):
//   - qparams from (min, max), per tensor and per channel, affine and
//     symmetric, for every range in the file (8, 7, 4 and 2 bits);
//   - fake quant forward and STE gradient, per tensor and per channel,
//     including .5 ties, near-ties and out-of-range values;
//   - the moving-average observers batch by batch;
//   - the fbgemm QAT preset's FakeQuantize in training mode.
// PyTorch's math here is deterministic float32 arithmetic and tinyqat does the
// same operations in the same order, so the comparisons are exact (scale
// compared as floats with ==, zero point as integers), with no tolerance.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "golden_reader.h"
#include "tinyqat.h"

using namespace tq;
using namespace tq::quant;

namespace {

std::vector<float> floats(const std::string& name) {
  const golden::Entry& e = golden::load("quant_core.txt").entry(name);
  REQUIRE(e.dtype == "f32");
  return std::vector<float>(e.values.begin(), e.values.end());
}

std::vector<int64_t> ints(const std::string& name) {
  const golden::Entry& e = golden::load("quant_core.txt").entry(name);
  REQUIRE(e.dtype == "i64");
  return e.ints;
}

int32_t int_scalar(const std::string& name) { return static_cast<int32_t>(golden::load("quant_core.txt").scalar(name)); }

// "0_127" -> (0, 127); "-128_127" -> (-128, 127). As in the golden script,
// the dtype is quint8 when quant_min >= 0, else qint8.
QuantSpec spec_for(const std::string& range, QScheme scheme, int ch_axis = 0) {
  const size_t cut = range.find('_', 1);
  QuantSpec s;
  s.quant_min = std::stoi(range.substr(0, cut));
  s.quant_max = std::stoi(range.substr(cut + 1));
  s.dtype = s.quant_min >= 0 ? DType::u8 : DType::i8;
  s.qscheme = scheme;
  s.ch_axis = ch_axis;
  return s;
}

const std::vector<std::string> kRanges = {"0_127", "0_255", "-128_127", "-64_63", "0_15", "-8_7", "0_3", "-2_1"};

// Exact float equality, with the values in the message when it fails.
void check_same_floats(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  int mismatches = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(got[i] == want[i])) {
      if (mismatches++ == 0) first = fmt::format("[{}] got {:.9g}, want {:.9g}", i, got[i], want[i]);
    }
  INFO(what << ": " << mismatches << " of " << got.size() << " differ; first " << first);
  CHECK(mismatches == 0);
}

void check_same_ints(const std::vector<int64_t>& got, const std::vector<int64_t>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  int mismatches = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) {
      if (mismatches++ == 0) first = fmt::format("[{}] got {}, want {}", i, got[i], want[i]);
    }
  INFO(what << ": " << mismatches << " of " << got.size() << " differ; first " << first);
  CHECK(mismatches == 0);
}

std::vector<int64_t> as_ints(const std::vector<int32_t>& v) { return {v.begin(), v.end()}; }
std::vector<int64_t> as_ints(const std::vector<float>& v) {
  std::vector<int64_t> out;
  for (float x : v) out.push_back(static_cast<int64_t>(x));
  return out;
}

}  // namespace

TEST_CASE("golden qparams: per-tensor affine and symmetric, every range", "[quant][golden][qparams]") {
  const std::vector<float> minmax = floats("qparams/minmax");  // (39, 2)
  const size_t cases = minmax.size() / 2;
  REQUIRE(golden::load("quant_core.txt").scalar("qparams/eps") == kScaleEps);
  for (const char* scheme_name : {"per_tensor_affine", "per_tensor_symmetric"}) {
    const QScheme scheme =
        std::string(scheme_name) == "per_tensor_affine" ? QScheme::per_tensor_affine : QScheme::per_tensor_symmetric;
    for (const std::string& range : kRanges) {
      const std::string key = std::string("qparams/") + scheme_name + "/" + range;
      const QuantSpec spec = spec_for(range, scheme);
      std::vector<float> direct_scale, observer_scale;
      std::vector<int64_t> direct_zp, observer_zp;
      for (size_t i = 0; i < cases; ++i) {
        const float lo = minmax[2 * i], hi = minmax[2 * i + 1];
        // The one function...
        const ScaleZeroPoint sz = calculate_qparams(lo, hi, spec);
        direct_scale.push_back(sz.scale);
        direct_zp.push_back(sz.zero_point);
        // ...and the observer, after observing torch.tensor([min, max]) as the script did.
        MinMaxObserver obs(spec);
        obs.observe(from_vector({lo, hi}, {2}));
        const QParams q = obs.calculate_qparams();
        REQUIRE(q.scheme == scheme);
        REQUIRE(q.quant_min == spec.quant_min);
        REQUIRE(q.quant_max == spec.quant_max);
        observer_scale.push_back(q.scale[0]);
        observer_zp.push_back(q.zero_point[0]);
      }
      check_same_floats(direct_scale, floats(key + "/scale"), key + "/scale (calculate_qparams)");
      check_same_ints(direct_zp, ints(key + "/zero_point"), key + "/zero_point (calculate_qparams)");
      check_same_floats(observer_scale, floats(key + "/scale"), key + "/scale (MinMaxObserver)");
      check_same_ints(observer_zp, ints(key + "/zero_point"), key + "/zero_point (MinMaxObserver)");
    }
  }
}

TEST_CASE("golden qparams: quint8 symmetric without an explicit range", "[quant][golden][qparams]") {
  // PyTorch's quint8 symmetric observer puts the zero point at 128 when it was
  // built without quant_min / quant_max, and at (qmin + qmax) / 2 = 127 with an
  // explicit 0..255. A tinyqat spec always has an explicit range
  // (docs/design.md §4), so it gives 127; the scale is
  // the same either way.
  const std::vector<float> minmax = floats("qparams/minmax");
  const std::vector<float> want_scale = floats("qparams/per_tensor_symmetric/quint8_default/scale");
  const std::vector<int64_t> want_zp = ints("qparams/per_tensor_symmetric/quint8_default/zero_point");
  const QuantSpec spec = spec_for("0_255", QScheme::per_tensor_symmetric);
  std::vector<float> scale;
  for (size_t i = 0; i < want_scale.size(); ++i) {
    const ScaleZeroPoint sz = calculate_qparams(minmax[2 * i], minmax[2 * i + 1], spec);
    scale.push_back(sz.scale);
    CHECK(want_zp[i] == 128);
    CHECK(sz.zero_point == 127);
  }
  check_same_floats(scale, want_scale, "quint8_default/scale");
}

TEST_CASE("golden qparams: per-channel observers along axis 0 and axis 1", "[quant][golden][qparams]") {
  for (int axis : {0, 1}) {
    const std::string prefix = "qparams_pc/axis" + std::to_string(axis);
    const Tensor x = golden::load("quant_core.txt").tensor(prefix + "/x");
    for (const char* scheme_name : {"per_channel_affine", "per_channel_symmetric"}) {
      const QScheme scheme =
          std::string(scheme_name) == "per_channel_affine" ? QScheme::per_channel_affine : QScheme::per_channel_symmetric;
      for (const std::string range : {"-128_127", "0_255", "0_15", "-8_7"}) {
        const std::string key = prefix + "/" + scheme_name + "/" + range;
        PerChannelMinMaxObserver obs(spec_for(range, scheme, axis));
        obs.observe(x);
        const QParams q = obs.calculate_qparams();
        CHECK(q.axis == axis);
        check_same_floats(q.scale, floats(key + "/scale"), key + "/scale");
        check_same_ints(as_ints(q.zero_point), ints(key + "/zero_point"), key + "/zero_point");
      }
    }
  }
}

namespace {

// Runs one fake-quant golden case through tq::quant::fake_quantize with
// autograd: y = fake_quantize(x), then backward of sum(y * gout), which hands
// the op exactly gout as its upstream gradient.
void check_fake_quant_case(const std::string& key, const QParams& qp) {
  Tensor x = golden::load("quant_core.txt").tensor(key + "/x");
  x.requires_grad_();
  const Tensor y = fake_quantize(x, qp);
  const Tensor gout = golden::load("quant_core.txt").tensor(key + "/gout");
  sum(y * gout).backward();
  check_same_floats(to_vector(y), floats(key + "/out"), key + "/out");
  REQUIRE(x.grad().defined());
  check_same_floats(to_vector(x.grad()), floats(key + "/grad_x"), key + "/grad_x (STE)");
  // The forward's integers are what quantize() stores: the same grid.
  const DType dtype = qp.quant_min >= 0 ? DType::u8 : DType::i8;
  const Tensor q = quantize(x.detach(), qp, dtype);
  check_same_ints(as_ints(to_vector(q)), ints(key + "/q"), key + "/q (quantize)");
}

}  // namespace

TEST_CASE("golden fake quant per tensor: forward, STE gradient, ties and near-ties", "[quant][golden][fake_quant]") {
  for (const std::string name : {"u7_s0.5", "u8_s0.5", "i8_s0.5", "u4_s0.5", "u7_s0.1", "u8_s0.1", "i8_s0.1", "u4_s0.1",
                                 "i8_s3", "i8_s0.7_neartie"}) {
    const std::string key = "fq_tensor/" + name;
    QParams qp;
    qp.scheme = QScheme::per_tensor_affine;
    qp.scale = {static_cast<float>(golden::load("quant_core.txt").scalar(key + "/scale"))};
    qp.zero_point = {int_scalar(key + "/zero_point")};
    qp.quant_min = int_scalar(key + "/quant_min");
    qp.quant_max = int_scalar(key + "/quant_max");
    check_fake_quant_case(key, qp);
  }
}

TEST_CASE("golden fake quant: the near-tie case fails with true division", "[quant][golden][fake_quant]") {
  // docs/quantization.md §4: PyTorch multiplies by the float reciprocal. Every
  // value of this case rounds differently under x / s; the test makes sure the
  // case really tells the two apart (so the exact match above means something).
  const std::string key = "fq_tensor/i8_s0.7_neartie";
  const float s = static_cast<float>(golden::load("quant_core.txt").scalar(key + "/scale"));
  const std::vector<float> x = floats(key + "/x");
  const std::vector<int64_t> q = ints(key + "/q");
  int divide_differs = 0, multiply_differs = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    divide_differs += static_cast<int64_t>(std::nearbyint(x[i] / s)) != q[i];
    multiply_differs += static_cast<int64_t>(std::nearbyint(x[i] * (1.f / s))) != q[i];
  }
  CHECK(divide_differs == static_cast<int>(x.size()));
  CHECK(multiply_differs == 0);
}

TEST_CASE("golden fake quant per channel: axis 0 and axis 1", "[quant][golden][fake_quant]") {
  for (const std::string name : {"axis0_i8", "axis0_u8", "axis1_u4"}) {
    const std::string key = "fq_channel/" + name;
    QParams qp;
    qp.scheme = QScheme::per_channel_affine;
    qp.axis = int_scalar(key + "/axis");
    qp.scale = floats(key + "/scale");
    for (int64_t z : ints(key + "/zero_point")) qp.zero_point.push_back(static_cast<int32_t>(z));
    qp.quant_min = int_scalar(key + "/quant_min");
    qp.quant_max = int_scalar(key + "/quant_max");
    check_fake_quant_case(key, qp);
  }
}

// The moving-average update m + c (m_batch - m) is computed exactly as
// PyTorch does it: float32, c = 0.01f, the same two operations in the same
// order (a float tensor times a Python scalar multiplies by the scalar
// rounded to float32). So the running min / max agree bit for bit, and with
// them the qparams: the tolerance is zero ulps.
TEST_CASE("golden moving-average observers: min, max, scale, zero point after each batch", "[quant][golden][observer]") {
  MovingAverageMinMaxObserver per_tensor(
      QuantSpec{0, 127, DType::u8, QScheme::per_tensor_affine, 0}, 0.01f);
  MovingAveragePerChannelMinMaxObserver per_channel(
      QuantSpec{-128, 127, DType::i8, QScheme::per_channel_symmetric, 0}, 0.01f);
  for (int b = 0; b < 6; ++b) {
    const std::string t = "ma_tensor/batch" + std::to_string(b), c = "ma_channel/batch" + std::to_string(b);
    INFO("batch " << b);
    per_tensor.observe(golden::load("quant_core.txt").tensor(t + "/x"));
    CHECK(per_tensor.min_val() == static_cast<float>(golden::load("quant_core.txt").scalar(t + "/min_val")));
    CHECK(per_tensor.max_val() == static_cast<float>(golden::load("quant_core.txt").scalar(t + "/max_val")));
    const QParams qt = per_tensor.calculate_qparams();
    CHECK(qt.scale[0] == static_cast<float>(golden::load("quant_core.txt").scalar(t + "/scale")));
    CHECK(qt.zero_point[0] == int_scalar(t + "/zero_point"));

    per_channel.observe(golden::load("quant_core.txt").tensor(c + "/x"));
    check_same_floats(per_channel.min_vals(), floats(c + "/min_val"), c + "/min_val");
    check_same_floats(per_channel.max_vals(), floats(c + "/max_val"), c + "/max_val");
    const QParams qc = per_channel.calculate_qparams();
    check_same_floats(qc.scale, floats(c + "/scale"), c + "/scale");
    check_same_ints(as_ints(qc.zero_point), ints(c + "/zero_point"), c + "/zero_point");
  }
}

// PyTorch's default QAT activation fake quant (FusedMovingAvgObsFakeQuantize)
// chooses its qparams with ATen's ChooseQuantizationParams, while convert uses
// its observer's calculate_qparams(); tinyqat uses the observer formula for
// both (docs/design.md §1). On these batches the two PyTorch answers agree,
// so our FakeQuantize must match PyTorch's training output exactly too.
TEST_CASE("golden fbgemm QAT preset: the activation FakeQuantize in training mode", "[quant][golden][fake_quant]") {
  const QConfigPtr qconfig = get_default_qat_qconfig("fbgemm");
  std::shared_ptr<QParamsSource> made = qconfig->activation();
  auto* fq = dynamic_cast<FakeQuantize*>(made.get());
  REQUIRE(fq != nullptr);
  CHECK(fq->spec().quant_min == 0);
  CHECK(fq->spec().quant_max == 127);  // PyTorch's 0..255 with reduce_range, made explicit
  fq->train();
  auto& observer = dynamic_cast<MovingAverageMinMaxObserver&>(fq->observer());
  for (int b = 0; b < 6; ++b) {
    const std::string key = "fused_act/batch" + std::to_string(b);
    INFO("batch " << b);
    const Tensor y = (*fq)(golden::load("quant_core.txt").tensor("ma_tensor/batch" + std::to_string(b) + "/x"));
    CHECK(observer.min_val() == static_cast<float>(golden::load("quant_core.txt").scalar(key + "/min_val")));
    CHECK(observer.max_val() == static_cast<float>(golden::load("quant_core.txt").scalar(key + "/max_val")));
    const QParams q = fq->calculate_qparams();
    CHECK(q.scale[0] == static_cast<float>(golden::load("quant_core.txt").scalar(key + "/observer_scale")));
    CHECK(q.zero_point[0] == int_scalar(key + "/observer_zero_point"));
    // (and, on these batches, what the fused op used)
    CHECK(q.scale[0] == static_cast<float>(golden::load("quant_core.txt").scalar(key + "/scale")));
    CHECK(q.zero_point[0] == int_scalar(key + "/zero_point"));
    check_same_floats(to_vector(y), floats(key + "/out"), key + "/out");
  }
}

// The fused weight fake quant of PyTorch's preset deviates from its own
// observer (README): for mixed-sign channels its scale is
// max(|min|/128, max/127) instead of max(|min|, max)/127.5, and for the
// all-positive channel 2 it silently turns affine (zero point -128). Convert
// then quantizes with the observer's qparams, not the ones training used.
// tinyqat follows the observer formula in training and at convert, so it is
// compared with observer_scale / observer_zero_point, and its output with the
// fake quant of those.
TEST_CASE("golden fbgemm QAT preset: the weight FakeQuantize follows the observer formula", "[quant][golden][fake_quant]") {
  const QConfigPtr qconfig = get_default_qat_qconfig("fbgemm");
  std::shared_ptr<QParamsSource> made = qconfig->weight();
  auto* fq = dynamic_cast<FakeQuantize*>(made.get());
  REQUIRE(fq != nullptr);
  fq->train();
  const Tensor w = golden::load("quant_core.txt").tensor("fused_weight/x");
  const Tensor y = (*fq)(w);
  const QParams q = fq->calculate_qparams();
  REQUIRE(q.scheme == QScheme::per_channel_symmetric);
  check_same_floats(q.scale, floats("fused_weight/observer_scale"), "fused_weight/observer_scale");
  check_same_ints(as_ints(q.zero_point), ints("fused_weight/observer_zero_point"), "fused_weight/observer_zero_point");
  // Our output: eq. 8 of docs/quantization.md with those qparams, per row.
  const std::vector<float> x = to_vector(w), got = to_vector(y);
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t c = i / 8;
    CHECK(got[i] == fake_quantize_value(x[i], q.scale[c], q.zero_point[c], q.quant_min, q.quant_max));
  }
  // The documented deviation is really there: PyTorch's fused op used other
  // qparams on channel 2 (affine, zero point -128).
  CHECK(ints("fused_weight/zero_point")[2] == -128);
  CHECK(q.zero_point[2] == 0);
  CHECK(floats("fused_weight/scale")[2] != q.scale[2]);
}
