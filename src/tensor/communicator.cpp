// The current communicator (docs/distributed.md).
#include "tensor/communicator.h"

namespace tq::dist {

namespace {
std::shared_ptr<Communicator>& current() {
  static std::shared_ptr<Communicator> c = std::make_shared<SingleProcess>();
  return c;
}
}  // namespace

Communicator& world() { return *current(); }

std::shared_ptr<Communicator> set_world(std::shared_ptr<Communicator> c) {
  std::shared_ptr<Communicator> previous = current();
  current() = c ? std::move(c) : std::make_shared<SingleProcess>();
  return previous;
}

uint64_t fnv1a(const void* data, int64_t bytes, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (int64_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace tq::dist
