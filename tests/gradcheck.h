// gradcheck: compares the gradients that autograd computes (the backward of
// each op) with central finite differences of the forward pass.
//
// For a function f of some f32 input tensors, every entry of the Jacobian
// d out_j / d in_i is computed twice:
//   analytic: backward() from out with a one-hot upstream gradient at j;
//   numeric:  (f(x + h e_i) - f(x - h e_i))_j / (x_i+ - x_i-), in double, where
//             x_i+ and x_i- are the perturbed values after rounding to f32 (so
//             the step is exactly what the forward pass saw).
// An entry passes when |analytic - numeric| <= atol + rtol * |numeric|.
//
// Kinks: a central difference across a kink (ReLU at 0, clamp at its bounds,
// a tie in max) measures the average of two slopes, which is no gradient at
// all. Elements near a kink are skipped: either by a `kink` predicate that
// knows where the kinks of the inputs are (see `near_zero`, `near_tie_along`),
// or, for kinks hidden inside a composite function (a ReLU between two layers),
// by `skip_nonsmooth`: the two one-sided differences must agree, otherwise the
// element straddles a kink and is skipped. The result counts skipped elements,
// so a test can make sure most of them were checked.
//
//   auto r = tq::testing::gradcheck([](const Inputs& in) { return tq::mul(in[0], in[1]); },
//                                   {a, b}, {.eps = 1e-3, .atol = 1e-3, .rtol = 1e-2});
//   INFO(r.message); REQUIRE(r.ok);
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/functions.h"

namespace tq::testing {

using Inputs = std::vector<Tensor>;
using Function = std::function<Tensor(const Inputs&)>;
// (inputs, which input, flat element index) -> true when the element lies
// within the finite-difference step of a kink and must not be checked.
using KinkPredicate = std::function<bool(const Inputs&, int, int64_t)>;

struct GradcheckOptions {
  double eps = 1e-3;    // half-width h of the central difference
  double atol = 1e-3;   // absolute tolerance
  double rtol = 1e-2;   // relative tolerance (to the numeric derivative)
  KinkPredicate kink;   // optional: skip elements at kinks of the inputs
  bool skip_nonsmooth = false;  // skip elements whose one-sided differences disagree
  int max_reported = 5;         // failures spelled out in the message
};

struct GradcheckResult {
  bool ok = true;
  int64_t checked = 0;    // Jacobian entries compared
  int64_t skipped = 0;    // input elements skipped (kinks)
  int64_t elements = 0;   // input elements in all checked inputs
  double max_abs_error = 0;
  std::string message;    // summary, then the first failures
};

namespace detail {

inline std::vector<double> values_as_double(const Tensor& t) {
  std::vector<float> v = to_vector(t);
  return {v.begin(), v.end()};
}

inline float get_flat(const Tensor& t, int64_t i) { return t.data<float>()[i]; }
inline void set_flat(const Tensor& t, int64_t i, float v) { t.data<float>()[i] = v; }

}  // namespace detail

// Skip elements whose value lies within `margin` of 0 (ReLU, abs).
inline KinkPredicate near_zero(double margin) {
  return [margin](const Inputs& in, int k, int64_t i) {
    return std::fabs(static_cast<double>(detail::get_flat(in[k], i))) < margin;
  };
}

// Skip elements within `margin` of another element on the same line along
// `dim` (max over `dim`: the winner changes there).
inline KinkPredicate near_tie_along(int dim, double margin) {
  return [dim, margin](const Inputs& in, int k, int64_t i) {
    const Tensor& t = in[k];  // contiguous: gradcheck works on its own copies
    const int d = dim < 0 ? dim + t.dim() : dim;
    const int64_t stride = t.strides()[d], n = t.shape()[d];
    const int64_t pos = (i / stride) % n, first = i - pos * stride;
    const float v = detail::get_flat(t, i);
    for (int64_t j = 0; j < n; ++j)
      if (j != pos && std::fabs(static_cast<double>(detail::get_flat(t, first + j * stride)) - v) < margin) return true;
    return false;
  };
}

// Checks every f32 input's gradient; other inputs (e.g. i64 targets) pass through.
inline GradcheckResult gradcheck(const Function& f, const Inputs& inputs_in, const GradcheckOptions& opt = {}) {
  GradcheckResult res;
  std::ostringstream failures;
  int reported = 0;

  // Fresh contiguous leaves, so the check owns its inputs and can poke them.
  Inputs inputs;
  for (const Tensor& t : inputs_in) {
    Tensor c = kernels::clone(t);
    if (c.dtype() == DType::f32) c.requires_grad_(true);
    inputs.push_back(c);
  }

  // ---- analytic Jacobian: one backward per output element ----
  Tensor out0;
  {
    NoGradGuard no_grad;
    out0 = f(inputs);
  }
  const int64_t m = out0.numel();
  const std::vector<double> base = detail::values_as_double(out0);
  // analytic[k][j * n_k + i] = d out_j / d input_k[i]
  std::vector<std::vector<double>> analytic(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k)
    if (inputs[k].dtype() == DType::f32) analytic[k].assign(static_cast<size_t>(m * inputs[k].numel()), 0.0);
  for (int64_t j = 0; j < m; ++j) {
    for (Tensor& t : inputs)
      if (t.dtype() == DType::f32) t.set_grad(Tensor());
    Tensor out = f(inputs);
    if (!out.requires_grad()) {
      res.ok = false;
      res.message = "gradcheck: the output does not require grad (no graph was recorded)";
      return res;
    }
    Tensor seed = zeros(out.shape());
    seed.data<float>()[j] = 1.f;
    tq::backward(out, seed);
    for (size_t k = 0; k < inputs.size(); ++k) {
      if (inputs[k].dtype() != DType::f32) continue;
      const Tensor g = inputs[k].grad();
      if (!g.defined()) continue;  // no path from this input: all zeros
      if (!(g.shape() == inputs[k].shape())) {
        res.ok = false;
        res.message = "gradcheck: gradient of input " + std::to_string(k) + " has shape " + g.shape().str() +
                      ", the input has shape " + inputs[k].shape().str();
        return res;
      }
      const std::vector<double> gv = detail::values_as_double(g);
      for (size_t i = 0; i < gv.size(); ++i) analytic[k][static_cast<size_t>(j) * gv.size() + i] = gv[i];
    }
  }
  for (Tensor& t : inputs)
    if (t.dtype() == DType::f32) t.set_grad(Tensor());

  // ---- numeric Jacobian, one input element at a time ----
  NoGradGuard no_grad;
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (inputs[k].dtype() != DType::f32) continue;
    const Tensor& x = inputs[k];
    const int64_t n = x.numel();
    res.elements += n;
    for (int64_t i = 0; i < n; ++i) {
      if (opt.kink && opt.kink(inputs, static_cast<int>(k), i)) {
        ++res.skipped;
        continue;
      }
      const float x0 = detail::get_flat(x, i);
      const float xp = static_cast<float>(x0 + opt.eps), xm = static_cast<float>(x0 - opt.eps);
      detail::set_flat(x, i, xp);
      const std::vector<double> up = detail::values_as_double(f(inputs));
      detail::set_flat(x, i, xm);
      const std::vector<double> down = detail::values_as_double(f(inputs));
      detail::set_flat(x, i, x0);
      const double step = static_cast<double>(xp) - static_cast<double>(xm);

      if (opt.skip_nonsmooth) {
        bool kinked = false;
        for (int64_t j = 0; j < m && !kinked; ++j) {
          const double fwd = (up[j] - base[j]) / (static_cast<double>(xp) - x0);
          const double bwd = (base[j] - down[j]) / (x0 - static_cast<double>(xm));
          kinked = std::fabs(fwd - bwd) > 10 * (opt.atol + opt.rtol * std::max(std::fabs(fwd), std::fabs(bwd)));
        }
        if (kinked) {
          ++res.skipped;
          continue;
        }
      }
      for (int64_t j = 0; j < m; ++j) {
        const double numeric = (up[j] - down[j]) / step;
        const double a = analytic[k][static_cast<size_t>(j * n + i)];
        const double err = std::fabs(a - numeric);
        res.max_abs_error = std::max(res.max_abs_error, err);
        ++res.checked;
        if (err > opt.atol + opt.rtol * std::fabs(numeric)) {
          res.ok = false;
          if (reported++ < opt.max_reported)
            failures << "\n  d out[" << j << "] / d input" << k << "[" << i << "] (input shape " << x.shape().str()
                     << ", value " << x0 << "): analytic " << a << ", numeric " << numeric;
        }
      }
    }
  }
  std::ostringstream msg;
  msg << "gradcheck " << (res.ok ? "passed" : "FAILED") << ": " << res.checked << " Jacobian entries checked, "
      << res.skipped << " of " << res.elements << " input elements skipped near kinks, max |analytic - numeric| "
      << res.max_abs_error << " (eps " << opt.eps << ", atol " << opt.atol << ", rtol " << opt.rtol << ")";
  if (!res.ok) msg << "; " << reported << " mismatches, first ones:" << failures.str();
  res.message = msg.str();
  return res;
}

}  // namespace tq::testing
