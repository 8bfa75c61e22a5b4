// Matrix products, each beside its backward node: matmul and linear
// (docs/autograd.md §5, eq. 6-8). Their backward writes a leaf's gradient
// straight into its .grad when it can, an optimisation over the plain +=
// of backward() (gemm_into_grad, and leaf_grad_for_accumulation in node.h).
#include "autograd/functions.h"
#include "autograd/op_helpers.h"

namespace tq {

using namespace autograd_detail;

namespace {
// Writes op(a) op(b) into `input`'s gradient: straight into its .grad when it
// is a leaf (beta = 1 adds, eq. 3), otherwise into a new tensor in *grad_in.
void gemm_into_grad(const Tensor& input, const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
                    Tensor* grad_in) {
  const LeafGrad leaf = leaf_grad_for_accumulation(input);
  if (leaf.buffer.defined()) {
    k::gemm(a, trans_a, b, trans_b, 1.f, leaf.fresh ? 0.f : 1.f, leaf.buffer);
  } else {
    *grad_in = empty(input.shape());
    k::gemm(a, trans_a, b, trans_b, 1.f, 0.f, *grad_in);
  }
}

struct MatmulBackward final : Node {
  const char* name() const override { return "MatmulBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // C = A B, g = dL/dC (M, N), A (M, K), B (K, N):
    // dA = g B^T (M, K), dB = A^T g (K, N)   (eq. 6)
    const Tensor& a = inputs[0];
    const Tensor& b = inputs[1];
    if (a.requires_grad()) gemm_into_grad(a, g, false, b, true, &gi[0]);
    if (b.requires_grad()) gemm_into_grad(b, a, true, g, false, &gi[1]);
  }
};
}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = f(a_in, "matmul"), b = f(b_in, "matmul");
  Tensor out = k::matmul(a, b);
  if (any_requires_grad(a, b)) record<MatmulBackward>(out, {a, b});
  return out;
}

namespace {
struct LinearBackward final : Node {
  const char* name() const override { return "LinearBackward"; }
  void backward(const Tensor& g, Tensor* gi) override {
    // y = x W^T + b, g = dL/dy (N, out), x (N, in), W (out, in), b (out):
    // dx = g W (N, in)  (eq. 7),  dW = g^T x (out, in),  db = sum_n g[n, :]  (eq. 8).
    // Both GEMMs read g and x where they are (transposes are BLAS flags), and
    // a leaf's dW / db is added straight into its .grad.
    const Tensor& x = inputs[0];
    const Tensor& w = inputs[1];
    if (x.requires_grad()) {
      gi[0] = empty(x.shape());
      k::gemm(g, false, w, false, 1.f, 0.f, gi[0]);
    }
    if (w.requires_grad()) gemm_into_grad(w, g, true, x, false, &gi[1]);
    if (num_inputs > 2 && inputs[2].requires_grad()) {
      const LeafGrad leaf = leaf_grad_for_accumulation(inputs[2]);
      if (leaf.buffer.defined()) k::sum_rows_into(g, leaf.buffer, !leaf.fresh);
      else gi[2] = k::sum(g, 0, false);
    }
  }
};
}  // namespace

Tensor linear(const Tensor& x_in, const Tensor& weight, const Tensor& bias) {
  const Tensor x = f(x_in, "linear");
  Tensor out = k::linear(x, weight, bias);
  if (any_requires_grad(x, weight, bias)) {
    if (bias.defined()) record<LinearBackward>(out, {x, weight, bias});
    else record<LinearBackward>(out, {x, weight});
  }
  return out;
}

}  // namespace tq
