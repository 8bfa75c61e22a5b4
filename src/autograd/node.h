// The autograd graph (docs/autograd.md). Every differentiable op that sees an
// input requiring a gradient creates a Node: it keeps the inputs (and whatever
// else the backward needs) and knows how to turn the gradient of its output
// into gradients of its inputs (eq. 2, the chain rule). backward() visits the
// nodes in reverse topological order and *accumulates* gradients (eq. 3), so a
// tensor used twice receives both contributions.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "tensor/tensor.h"

namespace tq {

class Node {
 public:
  static constexpr int kMaxInputs = 5;  // the fused conv + batch-norm op has five

  // Releases the inputs without recursing down a long chain of nodes
  // (engine.cpp), so dropping a 100000-op graph cannot overflow the stack.
  virtual ~Node();
  // Op name for printing ("AddBackward").
  virtual const char* name() const = 0;
  // grad_out: d loss / d output. Writes d loss / d input[i] into grad_in[i]
  // for every input that requires a gradient (others may stay undefined).
  virtual void backward(const Tensor& grad_out, Tensor* grad_in) = 0;

  std::array<Tensor, kMaxInputs> inputs;
  int num_inputs = 0;

  // Filled during backward(): the gradient that reached this node's output.
  Tensor grad;
  uint64_t visit_mark = 0;  // which backward() last visited this node
};

// True unless inside a NoGradGuard scope.
bool grad_mode_enabled();

// Within its lifetime, ops record no graph (evaluation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Does an op with these inputs need to record a node?
inline bool any_requires_grad(const Tensor& a) { return grad_mode_enabled() && a.defined() && a.requires_grad(); }
inline bool any_requires_grad(const Tensor& a, const Tensor& b) {
  return grad_mode_enabled() && ((a.defined() && a.requires_grad()) || (b.defined() && b.requires_grad()));
}
inline bool any_requires_grad(const Tensor& a, const Tensor& b, const Tensor& c) {
  return grad_mode_enabled() && ((a.defined() && a.requires_grad()) || (b.defined() && b.requires_grad()) ||
                                 (c.defined() && c.requires_grad()));
}

// Connects `out` to a new node of type N (constructed from args) whose inputs
// are `ins`: out.requires_grad = true, out.grad_fn = node.
template <class N, class... Args>
N& record(Tensor& out, std::initializer_list<Tensor> ins, Args&&... args) {
  auto node = std::make_shared<N>(std::forward<Args>(args)...);
  for (const Tensor& t : ins) node->inputs[node->num_inputs++] = t;
  N& ref = *node;
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = std::move(node);
  return ref;
}

// An optimisation over the plain path. Plainly, a node's backward returns
// each input's gradient in grad_in and backward() adds it to the input's
// .grad (the += of eq. 3): a temporary, then a second pass over it. A node
// whose gradient comes out of a GEMM can instead write it straight into a
// leaf's .grad, with beta = 1 doing the += for free (Linear's dW and db never
// exist as temporaries). The result is the same; see docs/autograd.md §3.
// This returns that buffer for `input`:
//   fresh = true:  .grad did not exist; it was created uninitialised, so the
//                  caller must overwrite it (beta = 0);
//   fresh = false: the existing .grad, to be added to (beta = 1).
// `buffer` is undefined when `input` is not a leaf requiring a gradient, or
// its .grad is not a contiguous f32 tensor of its shape: then the backward
// returns the gradient through grad_in as usual.
struct LeafGrad {
  Tensor buffer;
  bool fresh = false;
};
LeafGrad leaf_grad_for_accumulation(const Tensor& input);

// Every node `root` depends on, root included, each listed after all the
// nodes that feed it. Valid until the next call on this thread.
const std::vector<Node*>& topological_order(Node* root);

// Runs backward from `root` (a one-element tensor), seeding d root / d root = 1,
// or from a non-scalar root with an explicit `grad_root` of its shape: visits
// topological_order() in reverse, each node applying the chain rule (eq. 2)
// and adding what it sends back into its inputs' gradients (eq. 3).
// Tensor::backward() calls this.
void backward(const Tensor& root, const Tensor& grad_root = Tensor());

}  // namespace tq
