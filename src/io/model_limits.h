// Limits of the model-file reader (docs/reliability.md §4): the module tree a
// file describes is refused beyond them, each limit named in its error;
// below them, loading is linear in the file's size.
#pragma once

#include <cstddef>

namespace tq::io {

inline constexpr size_t kMaxModules = 200'000;    // modules in one model (MobileNetV2 has about 150)
inline constexpr int kMaxModuleDepth = 64;        // nesting of modules
inline constexpr int kMaxDescriptionDepth = 256;  // JSON nesting of the description (about 3 per module level)

}  // namespace tq::io
