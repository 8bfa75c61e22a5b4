// backward(): reverse-mode differentiation over the recorded graph
// (docs/autograd.md eq. 2-4).
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "autograd/node.h"
#include "tensor/ops.h"

namespace tq {

namespace {
thread_local bool g_grad_enabled = true;
uint64_t g_backward_pass = 0;

// d loss / d t += g, allocating the gradient the first time (eq. 3).
void accumulate(std::shared_ptr<TensorImpl>& slot, const Tensor& g, const Shape& shape) {
  if (!slot) {
    // Own a fresh contiguous copy: the incoming gradient may be shared or a view.
    Tensor fresh = empty(shape, DType::f32);
    kernels::copy_(fresh, g);
    slot = fresh.impl_ptr();
  } else {
    kernels::add_(Tensor(slot), g);
  }
}

void accumulate(Tensor& slot, const Tensor& g, const Shape& shape) {
  if (!slot.defined()) {
    // An interior gradient that nobody else holds can be adopted as is.
    slot = (g.is_contiguous() && g.shape() == shape) ? g : kernels::clone(kernels::expand(g, shape));
    if (!(slot.shape() == shape)) slot = kernels::contiguous(kernels::expand(slot, shape));
  } else {
    // Add in place only into memory this slot owns alone.
    if (slot.impl()->storage.use_count() > 1 || !slot.is_contiguous()) slot = kernels::clone(slot);
    kernels::add_(slot, g);
  }
}
}  // namespace

const char* node_name(const Node& node) { return node.name(); }

bool grad_mode_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

void backward(const Tensor& root, const Tensor& grad_root) {
  if (!root.defined()) throw std::invalid_argument("backward: the tensor is undefined");
  if (!root.requires_grad())
    throw std::logic_error("backward: the tensor does not require grad and has no grad_fn (did any input require grad?)");
  Tensor seed = grad_root;
  if (!seed.defined()) {
    if (root.numel() != 1)
      throw std::invalid_argument(fmt::format(
          "backward: can only start from a scalar (one element), got shape {}; pass a gradient of that shape instead",
          root.shape().str()));
    seed = ones(root.shape());
  } else if (!(seed.shape() == root.shape())) {
    throw std::invalid_argument(fmt::format("backward: gradient of shape {} does not match the tensor's shape {}",
                                            seed.shape().str(), root.shape().str()));
  }
  if (root.is_leaf()) {
    accumulate(root.impl()->grad, seed, root.shape());
    return;
  }

  // Topological order by an iterative depth-first search: a node is appended
  // after every node that feeds it, so the reversed list visits each node
  // only once all of its consumers have added their contributions.
  const uint64_t pass = ++g_backward_pass;
  std::vector<Node*> order;
  std::vector<std::pair<Node*, int>> stack;
  Node* start = root.grad_fn().get();
  start->visit_mark = pass;
  stack.push_back({start, 0});
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->num_inputs) {
      const Tensor& in = node->inputs[next++];
      Node* child = in.defined() ? in.grad_fn().get() : nullptr;
      if (child && child->visit_mark != pass) {
        child->visit_mark = pass;
        stack.push_back({child, 0});
      }
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }

  start->grad = seed;
  Tensor grad_in[Node::kMaxInputs];
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    if (!node->grad.defined()) continue;  // nothing flowed here
    for (auto& g : grad_in) g = Tensor();
    node->backward(node->grad, grad_in);
    node->grad = Tensor();  // free as we go
    for (int i = 0; i < node->num_inputs; ++i) {
      const Tensor& in = node->inputs[i];
      if (!grad_in[i].defined() || !in.defined() || !in.requires_grad()) continue;
      if (in.grad_fn()) accumulate(in.grad_fn()->grad, grad_in[i], in.shape());
      else accumulate(in.impl()->grad, grad_in[i], in.shape());
    }
  }
}

void Tensor::backward() const { tq::backward(*this); }

}  // namespace tq
