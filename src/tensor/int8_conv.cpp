// int8_conv.cpp — the scalar kernels of int8_conv.h (reference twins, im2col,
// the quantized add, pooling) and the dispatch to the SIMD depthwise kernels.
// Math: docs/quantized_cnn.md.
#include "tensor/int8_conv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tq {

namespace {

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument(message); }

void require(bool ok, const char* who, const char* what) {
  if (!ok) fail(std::string(who) + ": " + what);
}

void check_pointer(const void* p, const char* who, const char* name) {
  if (p == nullptr) fail(std::string(who) + ": " + name + " is null");
}

void check_clamp(const char* who, int32_t zy, int32_t y_min, int32_t y_max) {
  if (y_min < 0 || y_max > 255 || y_min > y_max) {
    std::ostringstream m;
    m << who << ": the output clamp [" << y_min << ", " << y_max << "] must lie in [0, 255] and be non-empty";
    fail(m.str());
  }
  if (zy < 0 || zy > 255) {
    std::ostringstream m;
    m << who << ": the output zero point " << zy << " is outside [0, 255]";
    fail(m.str());
  }
}

}  // namespace

bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return has;
}

// ---------------------------------------------------------------------------
// Shapes.

void Conv2dShapeU8::validate(const char* who) const {
  require(batch >= 1 && in_h >= 1 && in_w >= 1 && in_channels >= 1 && out_channels >= 1, who,
          "batch, height, width and channel counts must be >= 1");
  require(kernel_h >= 1 && kernel_w >= 1, who, "the kernel size must be >= 1");
  require(stride_h >= 1 && stride_w >= 1, who, "the stride must be >= 1");
  require(pad_h >= 0 && pad_w >= 0, who, "the padding must be >= 0");
  require(dilation_h >= 1 && dilation_w >= 1, who, "the dilation must be >= 1");
  require(in_h + 2 * pad_h >= dilation_h * (kernel_h - 1) + 1 && in_w + 2 * pad_w >= dilation_w * (kernel_w - 1) + 1,
          who, "the kernel is larger than the padded input");
  require(patch_size() <= PackedWeightsI8::kMaxK, who, "kernel_h * kernel_w * in_channels exceeds the GEMM's K limit");
}

void Depthwise3x3ShapeU8::validate(const char* who) const {
  require(batch >= 1 && in_h >= 1 && in_w >= 1 && channels >= 1, who,
          "batch, height, width and channels must be >= 1");
  require(stride == 1 || stride == 2, who, "the stride must be 1 or 2");
  require(pad >= 0 && pad <= 2, who, "the padding must be 0, 1 or 2");
  require(in_h + 2 * pad >= 3 && in_w + 2 * pad >= 3, who, "the 3x3 kernel is larger than the padded input");
}

void Pool2dShapeU8::validate(const char* who) const {
  require(batch >= 1 && in_h >= 1 && in_w >= 1 && channels >= 1, who,
          "batch, height, width and channels must be >= 1");
  require(kernel_h >= 1 && kernel_w >= 1, who, "the kernel size must be >= 1");
  require(stride_h >= 1 && stride_w >= 1, who, "the stride must be >= 1");
  require(pad_h >= 0 && pad_w >= 0 && 2 * pad_h <= kernel_h && 2 * pad_w <= kernel_w, who,
          "the padding must be >= 0 and at most half the kernel size");
  require(in_h + 2 * pad_h >= kernel_h && in_w + 2 * pad_w >= kernel_w, who,
          "the kernel is larger than the padded input");
}

// ---------------------------------------------------------------------------
// Layout helpers.

namespace {
// y (cols x rows) = transpose of x (rows x cols), bytes: the plain loop, in
// blocks of 32 x 32 so that both sides stay in cache lines that are reused.
void transpose_bytes_reference(const uint8_t* x, int64_t rows, int64_t cols, uint8_t* y) {
  if (rows == 1 || cols == 1) {
    std::copy(x, x + rows * cols, y);
    return;
  }
  constexpr int64_t kBlock = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = std::min(rows, r0 + kBlock);
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const int64_t c1 = std::min(cols, c0 + kBlock);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) y[c * rows + r] = x[r * cols + c];
    }
  }
}

// The same bytes, 16 x 16 blocks at a time in SSE2 registers (the
// transpose of the 7x7x64 activations before a classifier was a byte loop
// costing several times the classifier itself). Each round interleaves the
// bytes of register k with those of register k + 8: it rotates the 8 bits of
// a byte's address (4 bits of row, 4 bits of column) by one place, so four
// rounds swap row and column. The edges past the last whole block take the
// plain loop.
void transpose_bytes(const uint8_t* x, int64_t rows, int64_t cols, uint8_t* y) {
#if defined(__SSE2__)
  if (rows < 16 || cols < 16) {
    transpose_bytes_reference(x, rows, cols, y);
    return;
  }
  const int64_t rows16 = rows / 16 * 16, cols16 = cols / 16 * 16;
  for (int64_t r0 = 0; r0 < rows16; r0 += 16)
    for (int64_t c0 = 0; c0 < cols16; c0 += 16) {
      __m128i v[16];
      for (int i = 0; i < 16; ++i) v[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + (r0 + i) * cols + c0));
      for (int round = 0; round < 4; ++round) {
        __m128i t[16];
        for (int k = 0; k < 8; ++k) {
          t[2 * k] = _mm_unpacklo_epi8(v[k], v[k + 8]);
          t[2 * k + 1] = _mm_unpackhi_epi8(v[k], v[k + 8]);
        }
        for (int i = 0; i < 16; ++i) v[i] = t[i];
      }
      for (int j = 0; j < 16; ++j) _mm_storeu_si128(reinterpret_cast<__m128i*>(y + (c0 + j) * rows + r0), v[j]);
    }
  // The right edge (columns past cols16, every row), then the bottom edge
  // (rows past rows16, the columns of whole blocks).
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = cols16; c < cols; ++c) y[c * rows + r] = x[r * cols + c];
  for (int64_t c = 0; c < cols16; ++c)
    for (int64_t r = rows16; r < rows; ++r) y[c * rows + r] = x[r * cols + c];
#else
  transpose_bytes_reference(x, rows, cols, y);
#endif
}
}  // namespace

void nchw_to_nhwc_u8(const uint8_t* x, int64_t N, int64_t C, int64_t H, int64_t W, uint8_t* y) {
  // x: (N, C, H, W), y: (N, H, W, C): per image, (C, HW) -> (HW, C)
  const int64_t plane = H * W;
  for (int64_t n = 0; n < N; ++n) transpose_bytes(x + n * C * plane, C, plane, y + n * C * plane);
}

void nhwc_to_nchw_u8(const uint8_t* x, int64_t N, int64_t H, int64_t W, int64_t C, uint8_t* y) {
  // x: (N, H, W, C), y: (N, C, H, W): per image, (HW, C) -> (C, HW)
  const int64_t plane = H * W;
  for (int64_t n = 0; n < N; ++n) transpose_bytes(x + n * C * plane, plane, C, y + n * C * plane);
}

void nchw_to_nhwc_u8_reference(const uint8_t* x, int64_t N, int64_t C, int64_t H, int64_t W, uint8_t* y) {
  const int64_t plane = H * W;
  for (int64_t n = 0; n < N; ++n) transpose_bytes_reference(x + n * C * plane, C, plane, y + n * C * plane);
}

void nhwc_to_nchw_u8_reference(const uint8_t* x, int64_t N, int64_t H, int64_t W, int64_t C, uint8_t* y) {
  const int64_t plane = H * W;
  for (int64_t n = 0; n < N; ++n) transpose_bytes_reference(x + n * C * plane, plane, C, y + n * C * plane);
}

void conv_weight_to_ohwi(const int8_t* w_oihw, int64_t OC, int64_t C, int64_t KH, int64_t KW, int8_t* w_ohwi) {
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t kh = 0; kh < KH; ++kh)
        for (int64_t kw = 0; kw < KW; ++kw)
          w_ohwi[((o * KH + kh) * KW + kw) * C + c] = w_oihw[((o * C + c) * KH + kh) * KW + kw];
}

void depthwise_weight_to_taps(const int8_t* w_c133, int64_t C, int8_t* taps) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < 9; ++t) taps[t * C + c] = w_c133[c * 9 + t];
}

// ---------------------------------------------------------------------------
// Convolution.

void im2col_u8_reference(const uint8_t* x, const Conv2dShapeU8& s, uint8_t zero_point, uint8_t* cols) {
  // x: (N, H, W, C), cols: (N * OH * OW, KH * KW * C)
  s.validate("im2col_u8_reference");
  check_pointer(x, "im2col_u8_reference", "x");
  check_pointer(cols, "im2col_u8_reference", "cols");
  const int64_t OH = s.out_h(), OW = s.out_w(), C = s.in_channels;
  uint8_t* row = cols;
  for (int64_t n = 0; n < s.batch; ++n) {
    const uint8_t* xn = x + n * s.in_h * s.in_w * C;
    for (int64_t oy = 0; oy < OH; ++oy) {
      for (int64_t ox = 0; ox < OW; ++ox) {
        uint8_t* dst = row;
        for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
          const int64_t iy = oy * s.stride_h - s.pad_h + kh * s.dilation_h;
          for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
            const int64_t ix = ox * s.stride_w - s.pad_w + kw * s.dilation_w;
            if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) {
              std::fill(dst, dst + C, zero_point);  // real 0 is z_x, not the byte 0
            } else {
              std::copy(xn + (iy * s.in_w + ix) * C, xn + (iy * s.in_w + ix) * C + C, dst);
            }
            dst += C;
          }
        }
        row += s.patch_size();
      }
    }
  }
}

namespace {

// Copies n bytes with fixed-size moves (inlined; no call into memcpy, whose
// call costs more than the copy for the short runs of im2col). Runs of
// at least 4 bytes use two overlapping moves of the largest size that fits.
inline void copy_run(uint8_t* d, const uint8_t* s, int64_t n) {
  if (n >= 64) {
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) std::memcpy(d + i, s + i, 64);
    if (i < n) std::memcpy(d + n - 64, s + n - 64, 64);
  } else if (n >= 32) {
    std::memcpy(d, s, 32);
    std::memcpy(d + n - 32, s + n - 32, 32);
  } else if (n >= 16) {
    std::memcpy(d, s, 16);
    std::memcpy(d + n - 16, s + n - 16, 16);
  } else if (n >= 8) {
    std::memcpy(d, s, 8);
    std::memcpy(d + n - 8, s + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(d, s, 4);
    std::memcpy(d + n - 4, s + n - 4, 4);
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = s[i];
  }
}

}  // namespace

void im2col_u8(const uint8_t* x, const Conv2dShapeU8& s, uint8_t zero_point, uint8_t* cols) {
  // x: (N, H, W, C), cols: (N * OH * OW, KH * KW * C)
  // The reference's result, faster: without dilation the kernel_w taps of one
  // kernel row are kernel_w * C consecutive input bytes (NHWC), copied as one
  // run when the row lies inside the input; padded taps as in the reference.
  s.validate("im2col_u8");
  check_pointer(x, "im2col_u8", "x");
  check_pointer(cols, "im2col_u8", "cols");
  const int64_t OH = s.out_h(), OW = s.out_w(), C = s.in_channels, KW = s.kernel_w;
  // Every field in a local: the byte stores below may alias anything, so
  // the compiler would otherwise reload `s` on every iteration.
  const int64_t batch = s.batch, H = s.in_h, W = s.in_w, KH = s.kernel_h, sh = s.stride_h, sw = s.stride_w;
  const int64_t ph = s.pad_h, pw = s.pad_w, dh = s.dilation_h, dw = s.dilation_w, patch = s.patch_size();
  const int64_t run = KW * C;
  uint8_t* row = cols;
  for (int64_t n = 0; n < batch; ++n) {
    const uint8_t* xn = x + n * H * W * C;
    for (int64_t oy = 0; oy < OH; ++oy) {
      for (int64_t ox = 0; ox < OW; ++ox) {
        uint8_t* dst = row;
        const int64_t ix0 = ox * sw - pw;
        const bool inside_w = dw == 1 && ix0 >= 0 && ix0 + KW <= W;
        for (int64_t kh = 0; kh < KH; ++kh) {
          const int64_t iy = oy * sh - ph + kh * dh;
          if (iy < 0 || iy >= H) {
            std::memset(dst, zero_point, static_cast<size_t>(run));  // real 0 is z_x, not the byte 0
          } else if (inside_w) {
            copy_run(dst, xn + (iy * W + ix0) * C, run);
          } else {
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t ix = ix0 + kw * dw;
              if (ix < 0 || ix >= W)
                std::memset(dst + kw * C, zero_point, static_cast<size_t>(C));
              else
                copy_run(dst + kw * C, xn + (iy * W + ix) * C, C);
            }
          }
          dst += run;
        }
        row += patch;
      }
    }
  }
}

bool conv_uses_padded_rows(int64_t C, int64_t KH, int64_t KW, int64_t dilation_w) {
  const int64_t row = KW * C, row4 = (row + 3) / 4 * 4;
  return dilation_w == 1 && KH > 1 && row % 4 != 0 && KH * row4 <= (KH * row + 3) / 4 * 4 + 4;
}

void conv_weight_to_ohwi_padded_rows(const int8_t* w_oihw, int64_t OC, int64_t C, int64_t KH, int64_t KW,
                                     int8_t* w) {
  const int64_t row4 = (KW * C + 3) / 4 * 4;
  std::fill(w, w + OC * KH * row4, int8_t{0});
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t kh = 0; kh < KH; ++kh)
        for (int64_t kw = 0; kw < KW; ++kw)
          w[(o * KH + kh) * row4 + kw * C + c] = w_oihw[((o * C + c) * KH + kh) * KW + kw];
}

void im2col_u8_padded_rows(const uint8_t* x, const Conv2dShapeU8& s, uint8_t zero_point, uint8_t* cols) {
  // x: (N, H, W, C), cols: (N * OH * OW, KH * round_up(KW * C, 4))
  const char* who = "im2col_u8_padded_rows";
  s.validate(who);
  check_pointer(x, who, "x");
  check_pointer(cols, who, "cols");
  require(conv_uses_padded_rows(s.in_channels, s.kernel_h, s.kernel_w, s.dilation_w), who,
          "this shape does not use kernel rows padded to 4 (conv_uses_padded_rows)");
  const int64_t C = s.in_channels, row4 = (s.kernel_w * C + 3) / 4 * 4;
  const int64_t Hp = s.in_h + 2 * s.pad_h, Wp = s.in_w + 2 * s.pad_w, OH = s.out_h(), OW = s.out_w();
  // The input with its padding written out as zero_point (real 0), plus 4
  // bytes so that reading whole groups past the last run stays inside.
  thread_local detail::CacheAlignedVector<uint8_t> padded;
  const size_t bytes = static_cast<size_t>(s.batch * Hp * Wp * C + 4);
  if (padded.size() < bytes) padded.resize(bytes);
  uint8_t* p = padded.data();
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t py = 0; py < Hp; ++py) {
      uint8_t* dst = p + (n * Hp + py) * Wp * C;
      const int64_t iy = py - s.pad_h;
      if (iy < 0 || iy >= s.in_h) {
        std::memset(dst, zero_point, static_cast<size_t>(Wp * C));
        continue;
      }
      std::memset(dst, zero_point, static_cast<size_t>(s.pad_w * C));
      std::memcpy(dst + s.pad_w * C, x + (n * s.in_h + iy) * s.in_w * C, static_cast<size_t>(s.in_w * C));
      std::memset(dst + (s.pad_w + s.in_w) * C, zero_point, static_cast<size_t>(s.pad_w * C));
    }
  std::memset(p + s.batch * Hp * Wp * C, zero_point, 4);
  // Every field in a local: the byte stores below may alias anything, so
  // the compiler would otherwise reload `s` on every iteration.
  const int64_t batch = s.batch, KH = s.kernel_h, step_x = s.stride_w * C, step_y = s.stride_h * Wp * C;
  const int64_t step_kh = s.dilation_h * Wp * C, row_bytes = KH * row4;
  uint8_t* row = cols;
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t oy = 0; oy < OH; ++oy) {
      const uint8_t* src = p + n * Hp * Wp * C + oy * step_y;
      for (int64_t ox = 0; ox < OW; ++ox, src += step_x, row += row_bytes) {
        if (row4 == 4) {
          for (int64_t kh = 0; kh < KH; ++kh) std::memcpy(row + kh * 4, src + kh * step_kh, 4);
        } else {
          for (int64_t kh = 0; kh < KH; ++kh) copy_run(row + kh * row4, src + kh * step_kh, row4);
        }
      }
    }
}

void conv2d_u8i8_requant_reference(const uint8_t* x, const Conv2dShapeU8& s, int32_t zx, const int8_t* w_ohwi,
                                   const int32_t* bias_q, const FixedPointMultiplier* multipliers, int32_t zy,
                                   int32_t y_min, int32_t y_max, uint8_t* y) {
  // x: (N, H, W, C), w: (OC, KH, KW, C), y: (N, OH, OW, OC)
  const char* who = "conv2d_u8i8_requant_reference";
  s.validate(who);
  check_pointer(x, who, "x");
  check_pointer(w_ohwi, who, "w");
  check_pointer(multipliers, who, "multipliers");
  check_pointer(y, who, "y");
  check_clamp(who, zy, y_min, y_max);
  const int64_t OH = s.out_h(), OW = s.out_w(), C = s.in_channels;
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox)
        for (int64_t o = 0; o < s.out_channels; ++o) {
          int32_t acc = bias_q == nullptr ? 0 : bias_q[o];
          for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
            const int64_t iy = oy * s.stride_h - s.pad_h + kh * s.dilation_h;
            if (iy < 0 || iy >= s.in_h) continue;  // padding: (z_x - z_x) * w = 0
            for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
              const int64_t ix = ox * s.stride_w - s.pad_w + kw * s.dilation_w;
              if (ix < 0 || ix >= s.in_w) continue;
              const uint8_t* xp = x + ((n * s.in_h + iy) * s.in_w + ix) * C;
              const int8_t* wp = w_ohwi + ((o * s.kernel_h + kh) * s.kernel_w + kw) * C;
              for (int64_t c = 0; c < C; ++c) acc += (int32_t{xp[c]} - zx) * int32_t{wp[c]};
            }
          }
          y[((n * OH + oy) * OW + ox) * s.out_channels + o] =
              static_cast<uint8_t>(requantize(acc, multipliers[o], zy, y_min, y_max));
        }
}

void conv2d_u8i8_requant(const uint8_t* x, const Conv2dShapeU8& s, int32_t zx, int32_t x_quant_max,
                         const PackedWeightsI8& W, const int32_t* bias_q, const FixedPointMultiplier* multipliers,
                         int32_t zy, int32_t y_min, int32_t y_max, uint8_t* y, int threads) {
  const char* who = "conv2d_u8i8_requant";
  s.validate(who);
  check_pointer(x, who, "x");
  check_pointer(y, who, "y");
  const bool padded_rows = conv_uses_padded_rows(s.in_channels, s.kernel_h, s.kernel_w, s.dilation_w) &&
                           W.K() == s.kernel_h * ((s.kernel_w * s.in_channels + 3) / 4 * 4);
  if (W.N() != s.out_channels || (W.K() != s.patch_size() && !padded_rows)) {
    std::ostringstream m;
    m << who << ": the packed weights are (" << W.N() << ", " << W.K() << "), the shape needs (" << s.out_channels
      << ", " << s.patch_size() << ")";
    fail(m.str());
  }
  if (zx < 0 || zx > x_quant_max) {
    std::ostringstream m;
    m << who << ": the input zero point " << zx << " is outside [0, " << x_quant_max << "]";
    fail(m.str());
  }
  const int64_t M = s.batch * s.out_h() * s.out_w();
  const int64_t K = W.K();
  const bool pointwise = !padded_rows && s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 &&
                         s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
  if (pointwise) {
    // The NHWC input already is the (N*H*W, C) matrix of the GEMM.
    gemm_u8i8_requant(x, M, K, zx, x_quant_max, W, bias_q, multipliers, zy, y_min, y_max, y, s.out_channels, threads);
    return;
  }
  thread_local detail::CacheAlignedVector<uint8_t> scratch;
  if (scratch.size() < static_cast<size_t>(M * K)) scratch.resize(static_cast<size_t>(M * K));
  if (padded_rows)
    im2col_u8_padded_rows(x, s, static_cast<uint8_t>(zx), scratch.data());
  else
    im2col_u8(x, s, static_cast<uint8_t>(zx), scratch.data());
  gemm_u8i8_requant(scratch.data(), M, K, zx, x_quant_max, W, bias_q, multipliers, zy, y_min, y_max, y,
                    s.out_channels, threads);
}

// ---------------------------------------------------------------------------
// Depthwise 3x3.

namespace detail {

void depthwise3x3_channels_reference(const uint8_t* x, const Depthwise3x3ShapeU8& s, int32_t zx, const int8_t* taps,
                                     const int32_t* bias_q, const FixedPointMultiplier* multipliers, int32_t zy,
                                     int32_t y_min, int32_t y_max, uint8_t* y, int64_t c_begin, int64_t c_end) {
  // x: (N, H, W, C), taps: (9, C), y: (N, OH, OW, C)
  const int64_t OH = s.out_h(), OW = s.out_w(), C = s.channels;
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox) {
        uint8_t* yp = y + ((n * OH + oy) * OW + ox) * C;
        for (int64_t c = c_begin; c < c_end; ++c) {
          int32_t acc = bias_q == nullptr ? 0 : bias_q[c];
          for (int64_t kh = 0; kh < 3; ++kh) {
            const int64_t iy = oy * s.stride - s.pad + kh;
            if (iy < 0 || iy >= s.in_h) continue;  // padding: (z_x - z_x) * w = 0
            for (int64_t kw = 0; kw < 3; ++kw) {
              const int64_t ix = ox * s.stride - s.pad + kw;
              if (ix < 0 || ix >= s.in_w) continue;
              acc += (int32_t{x[((n * s.in_h + iy) * s.in_w + ix) * C + c]} - zx) * int32_t{taps[(kh * 3 + kw) * C + c]};
            }
          }
          yp[c] = static_cast<uint8_t>(requantize(acc, multipliers[c], zy, y_min, y_max));
        }
      }
}

}  // namespace detail

namespace {
void check_depthwise(const char* who, const uint8_t* x, const Depthwise3x3ShapeU8& s, int32_t zx, const int8_t* taps,
                     const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min, int32_t y_max,
                     const uint8_t* y) {
  s.validate(who);
  check_pointer(x, who, "x");
  check_pointer(taps, who, "taps");
  check_pointer(multipliers, who, "multipliers");
  check_pointer(y, who, "y");
  check_clamp(who, zy, y_min, y_max);
  if (zx < 0 || zx > 255) {
    std::ostringstream m;
    m << who << ": the input zero point " << zx << " is outside [0, 255]";
    fail(m.str());
  }
}
}  // namespace

void depthwise3x3_u8i8_requant_reference(const uint8_t* x, const Depthwise3x3ShapeU8& s, int32_t zx,
                                         const int8_t* taps, const int32_t* bias_q,
                                         const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min,
                                         int32_t y_max, uint8_t* y) {
  check_depthwise("depthwise3x3_u8i8_requant_reference", x, s, zx, taps, multipliers, zy, y_min, y_max, y);
  detail::depthwise3x3_channels_reference(x, s, zx, taps, bias_q, multipliers, zy, y_min, y_max, y, 0, s.channels);
}

const char* depthwise_kernel_name() {
  if (int8_kernel() == Int8Kernel::reference || !cpu_has_avx2()) return "reference";
  return cpu_has_avx512() ? "avx512" : "avx2";
}

void depthwise3x3_u8i8_requant(const uint8_t* x, const Depthwise3x3ShapeU8& s, int32_t zx, const int8_t* taps,
                               const int32_t* bias_q, const FixedPointMultiplier* multipliers, int32_t zy,
                               int32_t y_min, int32_t y_max, uint8_t* y) {
  check_depthwise("depthwise3x3_u8i8_requant", x, s, zx, taps, multipliers, zy, y_min, y_max, y);
  const std::string kernel = depthwise_kernel_name();
  if (kernel == "avx512") {
    detail::depthwise3x3_avx512(x, s, zx, taps, bias_q, multipliers, zy, y_min, y_max, y);
  } else if (kernel == "avx2") {
    detail::depthwise3x3_avx2(x, s, zx, taps, bias_q, multipliers, zy, y_min, y_max, y);
  } else {
    detail::depthwise3x3_channels_reference(x, s, zx, taps, bias_q, multipliers, zy, y_min, y_max, y, 0, s.channels);
  }
}

// ---------------------------------------------------------------------------
// Quantized add.

QuantizedAddParams QuantizedAddParams::make(double sa, int32_t za, double sb, int32_t zb, double sy, int32_t zy,
                                            int32_t y_min, int32_t y_max) {
  const char* who = "QuantizedAddParams::make";
  for (double s : {sa, sb, sy}) {
    if (!(s > 0.0) || !std::isfinite(s)) {
      std::ostringstream m;
      m << who << ": every scale must be positive and finite, got " << s;
      fail(m.str());
    }
  }
  for (int32_t z : {za, zb}) {
    if (z < 0 || z > 255) {
      std::ostringstream m;
      m << who << ": an input zero point " << z << " is outside [0, 255]";
      fail(m.str());
    }
  }
  check_clamp(who, zy, y_min, y_max);
  if (sa / sy >= 64.0 || sb / sy >= 64.0) {
    std::ostringstream m;
    m << who << ": an input scale is 64 or more times the output scale (sa / sy = " << sa / sy
      << ", sb / sy = " << sb / sy << "); the output range cannot hold the sum";
    fail(m.str());
  }
  QuantizedAddParams p;
  p.za = za;
  p.zb = zb;
  p.zy = zy;
  p.ma = quantize_multiplier(sa / sy);
  p.mb = quantize_multiplier(sb / sy);
  p.out = quantize_multiplier(std::ldexp(1.0, -kAddLeftShift));  // exact: a power of two
  p.y_min = y_min;
  p.y_max = y_max;
  return p;
}

void add_u8_requant(const uint8_t* a, const uint8_t* b, int64_t count, const QuantizedAddParams& p, uint8_t* y) {
  if (count < 0) fail("add_u8_requant: count must be >= 0");
  if (count == 0) return;
  check_pointer(a, "add_u8_requant", "a");
  check_pointer(b, "add_u8_requant", "b");
  check_pointer(y, "add_u8_requant", "y");
  for (int64_t i = 0; i < count; ++i) y[i] = static_cast<uint8_t>(quantized_add_one(a[i], b[i], p));
}

// ---------------------------------------------------------------------------
// Pooling.

void max_pool2d_u8_reference(const uint8_t* x, const Pool2dShapeU8& s, uint8_t* y) {
  // x: (N, H, W, C), y: (N, OH, OW, C)
  s.validate("max_pool2d_u8_reference");
  check_pointer(x, "max_pool2d_u8_reference", "x");
  check_pointer(y, "max_pool2d_u8_reference", "y");
  const int64_t OH = s.out_h(), OW = s.out_w(), C = s.channels;
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox) {
        uint8_t* yp = y + ((n * OH + oy) * OW + ox) * C;
        std::fill(yp, yp + C, uint8_t{0});
        // validate() keeps pad <= kernel / 2, so every window holds at least one input tap.
        for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
          const int64_t iy = oy * s.stride_h - s.pad_h + kh;
          if (iy < 0 || iy >= s.in_h) continue;
          for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
            const int64_t ix = ox * s.stride_w - s.pad_w + kw;
            if (ix < 0 || ix >= s.in_w) continue;
            const uint8_t* xp = x + ((n * s.in_h + iy) * s.in_w + ix) * C;
            for (int64_t c = 0; c < C; ++c) yp[c] = std::max(yp[c], xp[c]);
          }
        }
      }
}

void max_pool2d_u8(const uint8_t* x, const Pool2dShapeU8& s, uint8_t* y) {
  // x: (N, H, W, C), y: (N, OH, OW, C)
  // The reference's result: the window's first tap inside the input is
  // copied, the others folded in with an unsigned byte maximum, 16 channels
  // per SSE2 instruction (x86-64's baseline), the rest one by one.
  s.validate("max_pool2d_u8");
  check_pointer(x, "max_pool2d_u8", "x");
  check_pointer(y, "max_pool2d_u8", "y");
  const int64_t OH = s.out_h(), OW = s.out_w(), C = s.channels;
  // Every field in a local: the byte stores below may alias anything.
  const int64_t batch = s.batch, H = s.in_h, W = s.in_w, KH = s.kernel_h, KW = s.kernel_w;
  const int64_t sh = s.stride_h, sw = s.stride_w, ph = s.pad_h, pw = s.pad_w;
#if defined(__SSE2__)
  const int64_t C16 = C / 16 * 16;
#else
  const int64_t C16 = 0;
#endif
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t oy = 0; oy < OH; ++oy) {
      // validate() keeps pad <= kernel / 2, so every window holds at least one input tap.
      const int64_t y0 = std::max<int64_t>(0, oy * sh - ph);
      const int64_t y1 = std::min(H, oy * sh - ph + KH);
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t x0 = std::max<int64_t>(0, ox * sw - pw);
        const int64_t x1 = std::min(W, ox * sw - pw + KW);
        uint8_t* yp = y + ((n * OH + oy) * OW + ox) * C;
        const uint8_t* xn = x + n * H * W * C;
        const uint8_t* first = xn + (y0 * W + x0) * C;
#if defined(__SSE2__)
        for (int64_t c = 0; c < C16; c += 16) {
          __m128i m = _mm_loadu_si128(reinterpret_cast<const __m128i*>(first + c));
          for (int64_t iy = y0; iy < y1; ++iy)
            for (int64_t ix = x0; ix < x1; ++ix)
              m = _mm_max_epu8(m, _mm_loadu_si128(reinterpret_cast<const __m128i*>(xn + (iy * W + ix) * C + c)));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(yp + c), m);
        }
#endif
        for (int64_t c = C16; c < C; ++c) {
          uint8_t m = first[c];
          for (int64_t iy = y0; iy < y1; ++iy)
            for (int64_t ix = x0; ix < x1; ++ix) m = std::max(m, xn[(iy * W + ix) * C + c]);
          yp[c] = m;
        }
      }
    }
}

namespace {
// Round half up of sum / count for sum >= 0, count >= 1: the average of u8
// values is in [0, 255], so the result fits.
inline uint8_t rounded_average(int64_t sum, int64_t count) { return static_cast<uint8_t>((sum + count / 2) / count); }
}  // namespace

void avg_pool2d_u8(const uint8_t* x, const Pool2dShapeU8& s, int32_t zero_point, bool count_include_pad, uint8_t* y) {
  // x: (N, H, W, C), y: (N, OH, OW, C)
  s.validate("avg_pool2d_u8");
  check_pointer(x, "avg_pool2d_u8", "x");
  check_pointer(y, "avg_pool2d_u8", "y");
  if (zero_point < 0 || zero_point > 255) fail("avg_pool2d_u8: the zero point is outside [0, 255]");
  const int64_t OH = s.out_h(), OW = s.out_w(), C = s.channels;
  std::vector<int64_t> sums(static_cast<size_t>(C));
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox) {
        std::fill(sums.begin(), sums.end(), 0);
        int64_t inside = 0, padded = 0;
        for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
          const int64_t iy = oy * s.stride_h - s.pad_h + kh;
          for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
            const int64_t ix = ox * s.stride_w - s.pad_w + kw;
            // PyTorch counts padding taps only inside the padded input (a window
            // overhanging its far edge through stride does not count the overhang).
            if (iy < -s.pad_h || iy >= s.in_h + s.pad_h || ix < -s.pad_w || ix >= s.in_w + s.pad_w) continue;
            if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) {
              ++padded;
              continue;
            }
            ++inside;
            const uint8_t* xp = x + ((n * s.in_h + iy) * s.in_w + ix) * C;
            for (int64_t c = 0; c < C; ++c) sums[static_cast<size_t>(c)] += xp[c];
          }
        }
        const int64_t count = count_include_pad ? inside + padded : inside;
        const int64_t pad_sum = count_include_pad ? padded * zero_point : 0;
        uint8_t* yp = y + ((n * OH + oy) * OW + ox) * C;
        for (int64_t c = 0; c < C; ++c) yp[c] = rounded_average(sums[static_cast<size_t>(c)] + pad_sum, count);
      }
}

void adaptive_avg_pool2d_u8(const uint8_t* x, int64_t batch, int64_t in_h, int64_t in_w, int64_t channels,
                            int64_t out_h, int64_t out_w, uint8_t* y) {
  // x: (N, H, W, C), y: (N, OH, OW, C)
  const char* who = "adaptive_avg_pool2d_u8";
  require(batch >= 1 && in_h >= 1 && in_w >= 1 && channels >= 1, who,
          "batch, height, width and channels must be >= 1");
  require(out_h >= 1 && out_w >= 1, who, "the output size must be >= 1");
  check_pointer(x, who, "x");
  check_pointer(y, who, "y");
  const int64_t C = channels;
  std::vector<int64_t> sums(static_cast<size_t>(C));
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t oy = 0; oy < out_h; ++oy) {
      const int64_t y0 = oy * in_h / out_h, y1 = ((oy + 1) * in_h + out_h - 1) / out_h;
      for (int64_t ox = 0; ox < out_w; ++ox) {
        const int64_t x0 = ox * in_w / out_w, x1 = ((ox + 1) * in_w + out_w - 1) / out_w;
        std::fill(sums.begin(), sums.end(), 0);
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) {
            const uint8_t* xp = x + ((n * in_h + iy) * in_w + ix) * C;
            for (int64_t c = 0; c < C; ++c) sums[static_cast<size_t>(c)] += xp[c];
          }
        const int64_t count = (y1 - y0) * (x1 - x0);
        uint8_t* yp = y + ((n * out_h + oy) * out_w + ox) * C;
        for (int64_t c = 0; c < C; ++c) yp[c] = rounded_average(sums[static_cast<size_t>(c)], count);
      }
    }
}

}  // namespace tq
