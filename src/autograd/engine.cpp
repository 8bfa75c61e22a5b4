// backward(): reverse-mode differentiation over the recorded graph
// (docs/autograd.md eq. 1-3): seed d loss / d loss = 1, visit the nodes in
// reverse topological order, let each apply the chain rule, and add up
// (accumulate) the contributions that reach each tensor.
#include <atomic>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "autograd/node.h"
#include "tensor/ops.h"

namespace tq {

namespace {
thread_local bool g_grad_enabled = true;
std::atomic<uint64_t> g_backward_pass{0};  // numbers each backward() for the visit marks

// A leaf's .grad += g (eq. 3), allocating it the first time. The leaf owns a
// fresh contiguous copy: the incoming gradient may be shared or a view.
void accumulate(std::shared_ptr<TensorImpl>& slot, const Tensor& g, const Shape& shape) {
  if (!slot) {
    Tensor fresh = empty(shape, DType::f32);
    kernels::copy_(fresh, g);
    slot = fresh.impl_ptr();
  } else {
    kernels::add_(Tensor(slot), g);
  }
}

// An interior node's gradient += g (eq. 3). The first contribution is adopted
// without a copy (contiguous ones; others are copied once); a later one is
// added in place only into memory the slot owns alone, else into a copy.
// "Alone" means no other handle either: a node may hand the same gradient to
// two inputs (AddBackward), and adding into it for one would change the other.
void accumulate(Tensor& slot, const Tensor& g) {
  if (!slot.defined()) {
    slot = g.is_contiguous() ? g : kernels::clone(g);
  } else {
    if (!is_sole_owner(slot) || !slot.is_contiguous()) slot = kernels::clone(slot);
    kernels::add_(slot, g);
  }
}
// d root / d root (eq. 1): 1 for a one-element root, else the given
// gradient, which must have the root's shape.
Tensor seed_gradient(const Tensor& root, const Tensor& grad_root) {
  if (!root.defined()) throw std::invalid_argument("backward: the tensor is undefined");
  if (!root.requires_grad())
    throw std::logic_error("backward: the tensor does not require grad and has no grad_fn (did any input require grad?)");
  if (!grad_root.defined()) {
    if (root.numel() != 1)
      throw std::invalid_argument(fmt::format(
          "backward: can only start from a scalar (one element), got shape {}; pass a gradient of that shape instead",
          root.shape().str()));
    return ones(root.shape());
  }
  if (!(grad_root.shape() == root.shape()))
    throw std::invalid_argument(fmt::format("backward: gradient of shape {} does not match the tensor's shape {}",
                                            grad_root.shape().str(), root.shape().str()));
  return grad_root;
}
}  // namespace

Node::~Node() {
  // Dropping a node drops its inputs; an input's own node dies with it if
  // nothing else holds it, then that node's inputs, and so on. Left to the
  // destructors, this recursion is as deep as the graph. Instead each node
  // hands the nodes it alone keeps alive to a per-thread list, and the
  // outermost destructor releases them one by one in a loop.
  thread_local std::vector<std::shared_ptr<Node>> pending;
  thread_local bool draining = false;
  for (Tensor& in : inputs) {
    if (!in.defined()) continue;
    std::shared_ptr<Node>& producer = in.impl()->grad_fn;
    if (in.impl_ptr().use_count() == 1 && producer && producer.use_count() == 1) pending.push_back(std::move(producer));
    in = Tensor();
  }
  if (draining) return;
  draining = true;
  while (!pending.empty()) {
    std::shared_ptr<Node> next = std::move(pending.back());
    pending.pop_back();
    next.reset();  // may push that node's producers
  }
  draining = false;
}

LeafGrad leaf_grad_for_accumulation(const Tensor& input) {
  if (!input.defined() || !input.requires_grad() || !input.is_leaf()) return {};
  std::shared_ptr<TensorImpl>& slot = input.impl()->grad;
  if (!slot) {
    // First gradient: the caller overwrites this buffer (fresh = true).
    slot = empty(input.shape(), DType::f32).impl_ptr();
    return {Tensor(slot), true};
  }
  const Tensor g(slot);
  if (!(g.shape() == input.shape()) || g.dtype() != DType::f32 || !g.is_contiguous()) return {};
  return {g, false};
}

bool grad_mode_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

// Every node that `root` depends on, each after all the nodes that feed it:
// an iterative depth-first search (an explicit stack, so a 20 000-op chain
// is fine) appends a node once all its inputs' nodes are in the list. The
// list is a per-thread buffer, reused by the next call: after the first
// backward() it allocates nothing.
const std::vector<Node*>& topological_order(Node* root) {
  const uint64_t pass = ++g_backward_pass;  // marks the nodes this search has seen
  thread_local std::vector<Node*> order;
  thread_local std::vector<std::pair<Node*, int>> stack;  // a node, its next input to look at
  order.clear();
  stack.clear();
  root->visit_mark = pass;
  stack.push_back({root, 0});
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->num_inputs) {
      const Tensor& in = node->inputs[next++];
      Node* producer = in.defined() ? in.grad_fn().get() : nullptr;
      if (producer && producer->visit_mark != pass) {
        producer->visit_mark = pass;
        stack.push_back({producer, 0});
      }
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  return order;
}

void backward(const Tensor& root, const Tensor& grad_root) {
  const Tensor seed = seed_gradient(root, grad_root);
  if (root.is_leaf()) {
    accumulate(root.impl()->grad, seed, root.shape());
    return;
  }
  // The plain walk: in reverse topological order every consumer of a tensor
  // has added its contribution (eq. 3) before the tensor's own node runs.
  const std::vector<Node*>& order = topological_order(root.grad_fn().get());
  root.grad_fn()->grad = seed;
  Tensor grad_in[Node::kMaxInputs];
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    if (!node->grad.defined()) continue;  // nothing flowed here
    for (auto& g : grad_in) g = Tensor();
    // Take the gradient out of the node (freeing it as we go); when nobody
    // else holds it, the node's backward may reuse its memory in place.
    const Tensor grad_out = std::move(node->grad);
    node->grad = Tensor();
    node->backward(grad_out, grad_in);  // the chain rule (eq. 2)
    for (int i = 0; i < node->num_inputs; ++i) {
      const Tensor& in = node->inputs[i];
      if (!grad_in[i].defined() || !in.defined() || !in.requires_grad()) continue;
      if (!(grad_in[i].shape() == in.shape()))  // a bug in that node's backward
        throw std::logic_error(fmt::format("backward: {} returned a gradient of shape {} for input {} of shape {}",
                                           node->name(), grad_in[i].shape().str(), i, in.shape().str()));
      if (in.grad_fn()) accumulate(in.grad_fn()->grad, grad_in[i]);  // an interior tensor
      else accumulate(in.impl()->grad, grad_in[i], in.shape());         // a leaf: its .grad
    }
  }
}

// Tensor::backward() and the printing of a grad_fn reach this layer through
// the tensor layer's hooks, registered when the program starts. The library
// target adds a linker flag that keeps this file in every program linking
// autograd (CMakeLists.txt), so the hooks are there whenever it is.
extern "C" const bool tinyqat_autograd_hooks_registered = [] {
  set_autograd_hooks({.backward = [](const Tensor& root) { tq::backward(root); },
                      .node_name = [](const Node& node) { return node.name(); }});
  return true;
}();

}  // namespace tq
