// Dropout: the probability check and the printout.
#include "nn/dropout.h"

#include <fmt/format.h>

namespace tq::nn {

Dropout::Dropout(double p_) : p(p_) {
  if (!(p >= 0.0 && p <= 1.0))
    throw std::invalid_argument(fmt::format("Dropout: probability has to be between 0 and 1, but got {}", p));
}

std::string Dropout::extra_repr() const { return fmt::format("p={}, inplace=False", p); }

}  // namespace tq::nn
