// <immintrin.h> for the vector kernels. GCC 12's own AVX-512 intrinsic
// headers start some intrinsics from an "undefined" register
// (_mm512_undefined_*, GCC bug 105593), which its -Wuninitialized and
// -Wmaybe-uninitialized report inside the header; they are silenced here, for
// GCC only (clang has no -Wmaybe-uninitialized and no such report).
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
