// Batch normalisation kernels (docs/batchnorm.md eq. 1-4) and their twins.
#include "tensor/norm_kernels.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "tensor/fused_loops.h"
#include "tensor/pool_kernels.h"

namespace tq::kernels {

namespace {

struct Layout {
  int64_t N, C, plane;  // x viewed as (N, C, plane)
};

Layout layout_of(const Tensor& x, const char* op) {
  if (!x.defined() || x.dtype() != DType::f32 || !x.is_contiguous() || x.dim() < 2)
    throw std::invalid_argument(fmt::format("{}: expected a contiguous f32 tensor (N, C, ...)", op));
  const int64_t N = x.size(0), C = x.size(1);
  return {N, C, N * C == 0 ? 0 : x.numel() / (N * C)};
}

constexpr int64_t kLanes = fused_loops::kLanes;

// sum g and sum g (p - m) over n values.
inline void gradient_sums(const float* g, const float* p, int64_t n, float m, float& sum_g, float& sum_g_centered) {
  float a[kLanes] = {}, b[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) {
      a[j] += g[i + j];
      b[j] += g[i + j] * (p[i + j] - m);
    }
  for (; i < n; ++i) {
    a[0] += g[i];
    b[0] += g[i] * (p[i] - m);
  }
  sum_g = sum_g_centered = 0.f;
  for (int64_t j = 0; j < kLanes; ++j) sum_g += a[j], sum_g_centered += b[j];
}

}  // namespace

BatchNormStats::BatchNormStats(int64_t channels, int64_t plane)
    : C_(channels), plane_(plane), shift_(static_cast<size_t>(channels)), sum_(static_cast<size_t>(channels)),
      sum_sq_(static_cast<size_t>(channels)) {}

void BatchNormStats::add(const float* image) {
  // One pass: shift by the channel's first value (of image 0) so the sum and
  // the sum of squares do not cancel catastrophically when the mean is large
  // against the spread.
  if (images_ == 0)
    for (int64_t c = 0; c < C_; ++c) shift_[c] = plane_ ? image[c * plane_] : 0.f;
  const detail::FusedLoops& loops = detail::fused_loops_build();
  for (int64_t c = 0; c < C_; ++c) {
    float a, a2;
    loops.shifted_sums(image + c * plane_, plane_, shift_[c], a, a2);
    sum_[c] += a;
    sum_sq_[c] += a2;
  }
  ++images_;
}

void BatchNormStats::finish(Tensor& mean, Tensor& var) const {
  if (images_ == 0) throw std::logic_error("BatchNormStats::finish: no image was added");
  mean = empty({C_});
  var = empty({C_});
  const double M = static_cast<double>(images_ * plane_);
  for (int64_t c = 0; c < C_; ++c) {
    const double m = sum_[c] / M;
    mean.data<float>()[c] = static_cast<float>(shift_[c] + m);
    var.data<float>()[c] = static_cast<float>(std::max(0.0, sum_sq_[c] / M - m * m));
  }
}

void batch_norm_stats(const Tensor& x, Tensor& mean, Tensor& var) {
  const Layout l = layout_of(x, "batch_norm_stats");
  BatchNormStats stats(l.C, l.plane);
  const float* xp = x.data<float>();
  for (int64_t n = 0; n < l.N; ++n) stats.add(xp + n * l.C * l.plane);
  if (l.N == 0) {
    mean = empty({l.C});
    var = empty({l.C});
    for (int64_t c = 0; c < l.C; ++c) mean.data<float>()[c] = var.data<float>()[c] = std::nanf("");  // 0 / 0
    return;
  }
  stats.finish(mean, var);
}

void batch_norm_stats_reference(const Tensor& x, Tensor& mean, Tensor& var) {
  const Layout l = layout_of(x, "batch_norm_stats_reference");
  mean = empty({l.C});
  var = empty({l.C});
  const float* xp = x.data<float>();
  const double M = static_cast<double>(l.N * l.plane);
  for (int64_t c = 0; c < l.C; ++c) {
    double s = 0;
    for (int64_t n = 0; n < l.N; ++n)
      for (int64_t i = 0; i < l.plane; ++i) s += xp[(n * l.C + c) * l.plane + i];
    const double m = s / M;
    double v = 0;
    for (int64_t n = 0; n < l.N; ++n)
      for (int64_t i = 0; i < l.plane; ++i) {
        const double d = xp[(n * l.C + c) * l.plane + i] - m;
        v += d * d;
      }
    mean.data<float>()[c] = static_cast<float>(m);
    var.data<float>()[c] = static_cast<float>(v / M);
  }
}

void batch_norm_apply_plane(const float* p, float* q, int64_t n, float a, float b, bool then_relu6) {
  detail::fused_loops_build().batch_norm_apply_plane(p, q, n, a, b, then_relu6);
}

Tensor batch_norm_apply(const Tensor& x, const Tensor& scale, const Tensor& shift, bool then_relu6) {
  const Layout l = layout_of(x, "batch_norm_apply");
  Tensor y = empty(x.shape());
  const float* xp = x.data<float>();
  const float* sc = scale.data<float>();
  const float* sh = shift.data<float>();
  float* yp = y.data<float>();
  for (int64_t n = 0; n < l.N; ++n)
    for (int64_t c = 0; c < l.C; ++c)
      batch_norm_apply_plane(xp + (n * l.C + c) * l.plane, yp + (n * l.C + c) * l.plane, l.plane, sc[c], sh[c],
                             then_relu6);
  return y;
}

void batch_norm_backward_sums(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                              Tensor& sum_dy, Tensor& sum_dy_xhat) {
  const Layout l = layout_of(x, "batch_norm_backward");
  sum_dy = empty({l.C});
  sum_dy_xhat = empty({l.C});
  const float* gp = dy.data<float>();
  const float* xp = x.data<float>();
  for (int64_t c = 0; c < l.C; ++c) {
    const float m = mean.data<float>()[c];
    double s = 0, sx = 0;
    for (int64_t n = 0; n < l.N; ++n) {
      float a, b;
      gradient_sums(gp + (n * l.C + c) * l.plane, xp + (n * l.C + c) * l.plane, l.plane, m, a, b);
      s += a;
      sx += b;
    }
    sum_dy.data<float>()[c] = static_cast<float>(s);
    sum_dy_xhat.data<float>()[c] = static_cast<float>(sx * invstd.data<float>()[c]);
  }
}

Tensor batch_norm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                 const Tensor& gamma, const Tensor& sum_dy, const Tensor& sum_dy_xhat, bool training,
                                 int64_t count) {
  const Layout l = layout_of(x, "batch_norm_backward");
  Tensor dx = empty(x.shape());
  const float* gp = dy.data<float>();
  const float* xp = x.data<float>();
  float* dp = dx.data<float>();
  const float inv_m = 1.f / static_cast<float>(count > 0 ? count : l.N * l.plane);
  for (int64_t c = 0; c < l.C; ++c) {
    const float is = invstd.data<float>()[c];
    const float k = (gamma.defined() ? gamma.data<float>()[c] : 1.f) * is;  // gamma invstd
    const float m = mean.data<float>()[c];
    // Training, eq. 4 expanded: dx = k dy - k mean(dy) - k xhat mean(dy xhat)
    //                              = k dy + (x - m) * a + b.
    const float a = training ? -k * is * sum_dy_xhat.data<float>()[c] * inv_m : 0.f;
    const float b = training ? -k * sum_dy.data<float>()[c] * inv_m : 0.f;
    for (int64_t n = 0; n < l.N; ++n) {
      const float* g = gp + (n * l.C + c) * l.plane;
      const float* p = xp + (n * l.C + c) * l.plane;
      float* d = dp + (n * l.C + c) * l.plane;
      for (int64_t i = 0; i < l.plane; ++i) d[i] = k * g[i] + (p[i] - m) * a + b;
    }
  }
  return dx;
}

Tensor batch_norm_backward_input_reference(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                           const Tensor& invstd, const Tensor& gamma, bool training) {
  const Layout l = layout_of(x, "batch_norm_backward_reference");
  const std::vector<float> g = to_vector(dy), xv = to_vector(x);
  std::vector<float> dx(g.size());
  const double M = static_cast<double>(l.N * l.plane);
  for (int64_t c = 0; c < l.C; ++c) {
    const double is = invstd.data<float>()[c], m = mean.data<float>()[c];
    const double gam = gamma.defined() ? gamma.data<float>()[c] : 1.0;
    double mean_dy = 0, mean_dy_xhat = 0;
    for (int64_t n = 0; n < l.N; ++n)
      for (int64_t i = 0; i < l.plane; ++i) {
        const size_t j = static_cast<size_t>((n * l.C + c) * l.plane + i);
        mean_dy += g[j] / M;
        mean_dy_xhat += g[j] * (xv[j] - m) * is / M;
      }
    for (int64_t n = 0; n < l.N; ++n)
      for (int64_t i = 0; i < l.plane; ++i) {
        const size_t j = static_cast<size_t>((n * l.C + c) * l.plane + i);
        const double xhat = (xv[j] - m) * is;
        dx[j] = static_cast<float>(training ? gam * is * (g[j] - mean_dy - xhat * mean_dy_xhat) : gam * is * g[j]);
      }
  }
  return from_vector(dx, x.shape());
}

}  // namespace tq::kernels
