#include "nn/sequential.h"

#include <stdexcept>
#include <string>

#include "nn/activation.h"
#include "nn/linear.h"

namespace tq::nn {

std::shared_ptr<Sequential> make_mlp(const std::vector<int64_t>& sizes) {
  if (sizes.size() < 2) throw std::invalid_argument("make_mlp: needs at least two sizes (inputs and outputs)");
  auto mlp = std::make_shared<Sequential>();
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    mlp->push_back("fc" + std::to_string(i + 1), Linear(sizes[i], sizes[i + 1]));
    if (i + 2 < sizes.size()) mlp->push_back("relu" + std::to_string(i + 1), ReLU());
  }
  return mlp;
}

}  // namespace tq::nn
