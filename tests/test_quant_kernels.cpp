// The QAT loops (src/quant/quant_kernels.h): the plain reference loops
// against docs/quantization.md eq. 8-9 written out with nearbyint (fake_quantize_value), and the
// AVX2 loops against the reference, on values chosen to hit every corner:
// .5 ties, near-ties, the ends of the range, far outside it, NaN, inf, signed
// zeros, odd lengths (vector tails). All comparisons are exact.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "quant/quant_kernels.h"
#include "tensor/affine_quant.h"
#include "tensor/cpu_features.h"
#include "tinyqat.h"

using namespace tq;
using namespace tq::quant;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Values around the grid of (scale, zero point, range): every .5 tie and its
// float neighbours, the grid points, the ends and beyond, specials, randoms.
std::vector<float> probe_values(float scale, int32_t zp, int32_t qmin, int32_t qmax, uint64_t seed) {
  std::vector<float> v;
  for (int32_t k = qmin - zp - 3; k <= qmax - zp + 3; ++k) {
    const float tie = (static_cast<float>(k) + 0.5f) * scale;
    v.push_back(tie);
    v.push_back(std::nextafter(tie, kInf));
    v.push_back(std::nextafter(tie, -kInf));
    v.push_back(static_cast<float>(k) * scale);
  }
  for (float s : {0.f, -0.f, 1e-30f, -1e-30f, 1e4f, -1e4f, 1e30f, -1e30f, kInf, -kInf, kNaN, 3.4e38f, -3.4e38f})
    v.push_back(s);
  Generator g(seed);
  for (float r : to_vector(randn({257}, g))) v.push_back(r * scale * static_cast<float>(qmax - qmin) / 3.f);
  return v;
}

struct Grid {
  float scale;
  int32_t zero_point, quant_min, quant_max;
};

const std::vector<Grid> kGrids = {
    {0.1f, 64, 0, 127}, {0.5f, 3, 0, 15}, {0.7f, 0, -128, 127}, {3.f, 1, -128, 127},
    {0.0123f, -5, -128, 127}, {1e-6f, 255, 0, 255}, {1.1920929e-07f, 0, -2, 1}, {1000.f, 0, 0, 255},
};

}  // namespace

TEST_CASE("fake quant reference loop equals eq. 8-9 with nearbyint, bit for bit", "[quant][kernels]") {
  for (const Grid& gr : kGrids) {
    const std::vector<float> x = probe_values(gr.scale, gr.zero_point, gr.quant_min, gr.quant_max, 1);
    const FakeQuantConstants k = fake_quant_constants(gr.scale, gr.zero_point, gr.quant_min, gr.quant_max);
    std::vector<float> y(x.size());
    std::vector<uint8_t> mask(x.size());
    fake_quantize_run_reference(x.data(), y.data(), mask.data(), static_cast<int64_t>(x.size()), k);
    int bad = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const float want = fake_quantize_value(x[i], gr.scale, gr.zero_point, gr.quant_min, gr.quant_max);
      // The mask of eq. 9, on the unclamped integer
      const float q = std::nearbyint(x[i] * (1.f / gr.scale)) + static_cast<float>(gr.zero_point);
      const uint8_t want_mask = q >= gr.quant_min && q <= gr.quant_max;
      // -0 and +0 are the same real value; everything else must match bitwise.
      const bool ok = (y[i] == want || same_bits(y[i], want)) && mask[i] == want_mask;
      if (!ok && bad++ < 5)
        FAIL_CHECK("x=" << x[i] << " scale=" << gr.scale << " z=" << gr.zero_point << ": y " << y[i] << " want " << want
                        << ", mask " << int(mask[i]) << " want " << int(want_mask));
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("AVX2 QAT loops equal the reference loops", "[quant][kernels]") {
  if (!quant_kernel_uses_avx2()) {
    WARN("this CPU has no AVX2: only the reference loops run here");
    return;
  }
  for (const Grid& gr : kGrids) {
    std::vector<float> x = probe_values(gr.scale, gr.zero_point, gr.quant_min, gr.quant_max, 2);
    const FakeQuantConstants k = fake_quant_constants(gr.scale, gr.zero_point, gr.quant_min, gr.quant_max);
    // Every length up to 70 exercises the 32-, 8- and 1-wide parts; then all of it.
    for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{31}, size_t{32}, size_t{33}, size_t{40},
                     size_t{70}, x.size()}) {
      n = std::min(n, x.size());
      std::vector<float> y_ref(n), y_fast(n), y_nomask(n);
      std::vector<uint8_t> m_ref(n), m_fast(n);
      fake_quantize_run_reference(x.data(), y_ref.data(), m_ref.data(), static_cast<int64_t>(n), k);
      fake_quantize_run_avx2(x.data(), y_fast.data(), m_fast.data(), static_cast<int64_t>(n), k);
      fake_quantize_run_avx2(x.data(), y_nomask.data(), nullptr, static_cast<int64_t>(n), k);
      int bad = 0;
      for (size_t i = 0; i < n; ++i)
        bad += !same_bits(y_ref[i], y_fast[i]) || !same_bits(y_ref[i], y_nomask[i]) || m_ref[i] != m_fast[i];
      INFO("scale " << gr.scale << " n " << n);
      CHECK(bad == 0);
    }
  }
  // The STE, overwriting and accumulating.
  Generator g(3);
  const int64_t n = 1000 + 13;
  std::vector<float> grad = to_vector(randn({n}, g));
  grad[5] = kInf;  // masked out: must give 0, not NaN
  grad[6] = kNaN;
  std::vector<uint8_t> mask(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) mask[i] = (i * 7 + 3) % 5 != 0;
  mask[5] = 0;
  mask[6] = 1;
  for (bool accumulate : {false, true}) {
    std::vector<float> ref(static_cast<size_t>(n), 0.25f), fast(static_cast<size_t>(n), 0.25f);
    apply_ste_mask_reference(grad.data(), mask.data(), ref.data(), n, accumulate);
    apply_ste_mask_avx2(grad.data(), mask.data(), fast.data(), n, accumulate);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += !same_bits(ref[i], fast[i]);
    CHECK(bad == 0);
    CHECK(ref[5] == (accumulate ? 0.25f : 0.f));
    CHECK(std::isnan(ref[6]));
  }
  // Min / max, NaNs skipped, over lengths that exercise the tails.
  for (int64_t len : {1, 5, 8, 31, 32, 33, 100, 1000}) {
    std::vector<float> v = to_vector(randn({len}, g));
    if (len > 3) v[3] = kNaN;
    float lo_ref = kInf, hi_ref = -kInf, lo_fast = kInf, hi_fast = -kInf;
    fold_min_max_reference(v.data(), len, lo_ref, hi_ref);
    fold_min_max_avx2(v.data(), len, lo_fast, hi_fast);
    INFO("length " << len);
    CHECK(lo_ref == lo_fast);
    CHECK(hi_ref == hi_fast);
    CHECK_FALSE(std::isnan(lo_fast));
  }
}

TEST_CASE("set_quant_kernel(reference) gives the same model outputs", "[quant][kernels]") {
  manual_seed(4);
  const Tensor w = randn({37, 53});
  const Tensor x = mul(randn({9, 53}), 3.f);
  MovingAveragePerChannelMinMaxObserver wobs(weight_spec(8, QScheme::per_channel_symmetric));
  MovingAverageMinMaxObserver xobs(activation_spec(7));
  wobs.observe(w);
  xobs.observe(x);
  const QParams wq = wobs.calculate_qparams(), xq = xobs.calculate_qparams();
  const std::vector<float> fw = to_vector(fake_quantize(w, wq)), fx = to_vector(fake_quantize(x, xq));
  set_quant_kernel(QuantKernel::reference);
  MovingAveragePerChannelMinMaxObserver wobs_ref(weight_spec(8, QScheme::per_channel_symmetric));
  MovingAverageMinMaxObserver xobs_ref(activation_spec(7));
  wobs_ref.observe(w);
  xobs_ref.observe(x);
  const std::vector<float> rw = to_vector(fake_quantize(w, wobs_ref.calculate_qparams()));
  const std::vector<float> rx = to_vector(fake_quantize(x, xobs_ref.calculate_qparams()));
  // quantize(): ties, the ends, NaN and infinities included
  std::vector<float> probe = probe_values(xq.scale[0], xq.zero_point[0], xq.quant_min, xq.quant_max, 9);
  const Tensor p = from_vector(probe, {static_cast<int64_t>(probe.size())});
  const std::vector<float> q_ref = to_vector(quantize(p, xq, DType::u8));
  set_quant_kernel(QuantKernel::automatic);
  const std::vector<float> q_fast = to_vector(quantize(p, xq, DType::u8));
  CHECK(q_fast == q_ref);
  CHECK(wobs_ref.calculate_qparams().scale == wq.scale);
  CHECK(xobs_ref.calculate_qparams().scale == xq.scale);
  CHECK(rw == fw);
  CHECK(rx == fx);
}

TEST_CASE("AVX-512 QAT loops and the activation quantizer equal the reference loops", "[quant][kernels]") {
  if (!cpu_features().avx512) {
    WARN("this CPU has no AVX-512 (" << cpu_feature_summary() << "): the AVX-512 loops are not tested here");
    return;
  }
  for (const Grid& gr : kGrids) {
    std::vector<float> x = probe_values(gr.scale, gr.zero_point, gr.quant_min, gr.quant_max, 5);
    const FakeQuantConstants k = fake_quant_constants(gr.scale, gr.zero_point, gr.quant_min, gr.quant_max);
    // Lengths that exercise the masked tail of every size, and all of it.
    for (size_t n : {size_t{1}, size_t{7}, size_t{15}, size_t{16}, size_t{17}, size_t{31}, size_t{33}, size_t{70},
                     x.size()}) {
      n = std::min(n, x.size());
      std::vector<float> y_ref(n), y_fast(n + 1, 9.f), y_nomask(n);
      std::vector<uint8_t> m_ref(n), m_fast(n + 1, 7);
      fake_quantize_run_reference(x.data(), y_ref.data(), m_ref.data(), static_cast<int64_t>(n), k);
      fake_quantize_run_avx512(x.data(), y_fast.data(), m_fast.data(), static_cast<int64_t>(n), k);
      fake_quantize_run_avx512(x.data(), y_nomask.data(), nullptr, static_cast<int64_t>(n), k);
      int bad = 0;
      for (size_t i = 0; i < n; ++i)
        bad += !same_bits(y_ref[i], y_fast[i]) || !same_bits(y_ref[i], y_nomask[i]) || m_ref[i] != m_fast[i];
      INFO("scale " << gr.scale << " n " << n);
      CHECK(bad == 0);
      CHECK(y_fast[n] == 9.f);  // nothing written past the end
      CHECK(m_fast[n] == 7);
    }
    // The u8 activation quantizer (tensor/affine_quant.h), when the grid is a u8 one.
    if (gr.quant_min >= 0) {
      const float inv = 1.f / gr.scale;
      for (size_t n : {size_t{1}, size_t{9}, size_t{16}, size_t{17}, x.size()}) {
        n = std::min(n, x.size());
        std::vector<uint8_t> q_ref(n), q_avx2(n), q_avx512(n + 1, 7);
        quantize_affine_u8(x.data(), q_ref.data(), static_cast<int64_t>(n), inv, gr.zero_point, gr.quant_min,
                           gr.quant_max, SimdLevel::scalar);
        quantize_affine_u8(x.data(), q_avx2.data(), static_cast<int64_t>(n), inv, gr.zero_point, gr.quant_min,
                           gr.quant_max, SimdLevel::avx2);
        quantize_affine_u8(x.data(), q_avx512.data(), static_cast<int64_t>(n), inv, gr.zero_point, gr.quant_min,
                           gr.quant_max, SimdLevel::avx512);
        INFO("quantize_affine_u8, scale " << gr.scale << " n " << n);
        CHECK(q_avx2 == q_ref);
        CHECK(std::vector<uint8_t>(q_avx512.begin(), q_avx512.begin() + static_cast<long>(n)) == q_ref);
        CHECK(q_avx512[n] == 7);
      }
    }
  }
  Generator g(4);
  const int64_t n = 1000 + 13;
  std::vector<float> grad = to_vector(randn({n}, g));
  grad[5] = kInf;  // masked out: must give 0, not NaN
  grad[6] = kNaN;
  std::vector<uint8_t> mask(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) mask[i] = (i * 7 + 3) % 5 != 0;
  mask[5] = 0;
  mask[6] = 1;
  for (bool accumulate : {false, true}) {
    for (int64_t len : {int64_t{3}, int64_t{16}, int64_t{29}, n}) {
      std::vector<float> ref(static_cast<size_t>(n), 0.25f), fast(static_cast<size_t>(n), 0.25f);
      apply_ste_mask_reference(grad.data(), mask.data(), ref.data(), len, accumulate);
      apply_ste_mask_avx512(grad.data(), mask.data(), fast.data(), len, accumulate);
      int bad = 0;
      for (int64_t i = 0; i < n; ++i) bad += !same_bits(ref[i], fast[i]);
      INFO("length " << len << (accumulate ? " accumulate" : ""));
      CHECK(bad == 0);
    }
  }
  // Min / max, NaNs skipped (and reported), over lengths that exercise the tails.
  for (int64_t len : {1, 5, 15, 16, 17, 63, 64, 65, 100, 1000}) {
    std::vector<float> v = to_vector(randn({len}, g));
    if (len > 3) v[3] = kNaN;
    float lo_ref = kInf, hi_ref = -kInf, lo_fast = kInf, hi_fast = -kInf;
    const bool nan_ref = tq::detail::fold_min_max_reference(v.data(), len, lo_ref, hi_ref);
    const bool nan_fast = tq::detail::fold_min_max_avx512(v.data(), len, lo_fast, hi_fast);
    INFO("length " << len);
    CHECK(lo_ref == lo_fast);
    CHECK(hi_ref == hi_fast);
    CHECK(nan_ref == nan_fast);
    CHECK(nan_fast == (len > 3));
  }
  // The switch: avx512 and avx2 can be chosen by name, and give the model the same outputs.
  set_quant_kernel(QuantKernel::avx2);
  CHECK(quant_kernel_level() == SimdLevel::avx2);
  set_quant_kernel(QuantKernel::avx512);
  CHECK(quant_kernel_level() == SimdLevel::avx512);
  set_quant_kernel(QuantKernel::automatic);
  CHECK(quant_kernel_level() == SimdLevel::avx512);
}
