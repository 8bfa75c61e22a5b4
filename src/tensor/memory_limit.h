// How much memory tensors hold, and a limit on it (docs/reliability.md §4).
#pragma once

#include <cstddef>
#include <string>

namespace tq {

// The most bytes all tensors' storage together may hold (0 = no limit, the
// default). An allocation that would go beyond it is an AllocationError, as if
// malloc had failed: Linux overcommits, so a tensor larger than the memory
// left is often granted and the process killed when it touches the pages;
// under a limit it fails at the allocation instead, and the caller can say
// why. The tinyqat command line sets the memory available when it starts.
void set_tensor_memory_limit(size_t bytes);
size_t tensor_memory_limit();
// The bytes all Storage objects hold now, the most they have held, and the
// bytes ever allocated (the difference of two readings is what the code
// between them allocated, freed or not).
size_t tensor_memory_in_use();
size_t tensor_memory_peak();
size_t tensor_memory_allocated();
// A byte count for a message: "512 bytes", "44.9 MiB", "3.2 GiB".
std::string human_bytes(size_t bytes);

}  // namespace tq
