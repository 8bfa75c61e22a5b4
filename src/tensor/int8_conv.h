// int8_conv.h — integer-only kernels of quantized convolutional networks:
// convolution (im2col on u8 + the int8 GEMM of int8_gemm.h), a direct 3x3
// depthwise convolution, the quantized residual add, and pooling on u8.
// Math: docs/quantized_cnn.md.
//
// Layout: every activation here is u8 NHWC (batch, height, width, channels),
// channels contiguous. That is the layout the GEMM writes (one row per output
// pixel, one column per output channel), so a convolution's output is the next
// convolution's input without a transpose, and a 1x1 convolution needs no
// im2col at all. The NCHW <-> NHWC transposes are here too.
//
// A tap of a convolution that falls in the padding is the real value 0,
// i.e. the quantized value z_x (not the byte 0): its term (z_x - z_x) * w is
// 0. im2col writes z_x there; the direct kernels skip those taps. Both give
// the same accumulator, hence bit-identical outputs.
//
// Each fast kernel has a plain scalar twin named *_reference; they agree bit
// for bit. The public entry points dispatch like the GEMM (set_int8_kernel):
// the reference kernel when asked for or when the CPU lacks AVX2, else the
// AVX-512 kernel when the CPU has AVX-512 F/BW, else AVX2.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/int8_gemm.h"
#include "tensor/requantize.h"

namespace tq {

// ---------------------------------------------------------------------------
// Shapes.

// A 2-D convolution of a u8 NHWC input (batch, in_h, in_w, in_channels) with
// groups = 1, producing (batch, out_h, out_w, out_channels).
struct Conv2dShapeU8 {
  int64_t batch = 1, in_h = 1, in_w = 1, in_channels = 1, out_channels = 1;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;

  int64_t out_h() const { return (in_h + 2 * pad_h - dilation_h * (kernel_h - 1) - 1) / stride_h + 1; }
  int64_t out_w() const { return (in_w + 2 * pad_w - dilation_w * (kernel_w - 1) - 1) / stride_w + 1; }
  int64_t patch_size() const { return kernel_h * kernel_w * in_channels; }  // K of the GEMM
  // Throws std::invalid_argument naming `who` and the bad field.
  void validate(const char* who) const;
};

// A 3x3 depthwise convolution (groups = channels, one filter per channel) of
// a u8 NHWC input (batch, in_h, in_w, channels), stride 1 or 2, the same
// padding on every side.
struct Depthwise3x3ShapeU8 {
  int64_t batch = 1, in_h = 1, in_w = 1, channels = 1;
  int64_t stride = 1;
  int64_t pad = 1;

  int64_t out_h() const { return (in_h + 2 * pad - 3) / stride + 1; }
  int64_t out_w() const { return (in_w + 2 * pad - 3) / stride + 1; }
  void validate(const char* who) const;
};

// A pooling window over a u8 NHWC input (batch, in_h, in_w, channels).
struct Pool2dShapeU8 {
  int64_t batch = 1, in_h = 1, in_w = 1, channels = 1;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;

  int64_t out_h() const { return (in_h + 2 * pad_h - kernel_h) / stride_h + 1; }
  int64_t out_w() const { return (in_w + 2 * pad_w - kernel_w) / stride_w + 1; }
  void validate(const char* who) const;
};

// ---------------------------------------------------------------------------
// Layout helpers.

// (N, C, H, W) -> (N, H, W, C) and back, any element of one byte: 16 x 16
// blocks in SSE2 registers; the _reference twins are the plain loops (the
// same bytes).
void nchw_to_nhwc_u8(const uint8_t* x, int64_t N, int64_t C, int64_t H, int64_t W, uint8_t* y);
void nhwc_to_nchw_u8(const uint8_t* x, int64_t N, int64_t H, int64_t W, int64_t C, uint8_t* y);
void nchw_to_nhwc_u8_reference(const uint8_t* x, int64_t N, int64_t C, int64_t H, int64_t W, uint8_t* y);
void nhwc_to_nchw_u8_reference(const uint8_t* x, int64_t N, int64_t H, int64_t W, int64_t C, uint8_t* y);

// A convolution weight (OC, C, KH, KW) (PyTorch's layout) reordered to
// (OC, KH, KW, C): row oc is then the GEMM row matching im2col's column order.
void conv_weight_to_ohwi(const int8_t* w_oihw, int64_t OC, int64_t C, int64_t KH, int64_t KW, int8_t* w_ohwi);

// A depthwise weight (C, 1, 3, 3) reordered tap-major (9, C):
// taps[(kh * 3 + kw) * C + c] = w[c][0][kh][kw]. Channels are contiguous, so one
// vector load gives one tap of consecutive channels.
void depthwise_weight_to_taps(const int8_t* w_c133, int64_t C, int8_t* taps);

// ---------------------------------------------------------------------------
// Convolution (groups = 1): im2col + gemm_u8i8_requant.

// cols: (batch * out_h * out_w, patch_size) u8; row (n, oy, ox), column
// (kh * kernel_w + kw) * in_channels + c holds x[n][iy][ix][c], or zero_point
// where (iy, ix) falls in the padding.
// im2col_u8 copies each kernel row's taps as one run of bytes where it can;
// im2col_u8_reference is the plain tap-by-tap twin (the same bytes).
void im2col_u8(const uint8_t* x, const Conv2dShapeU8& shape, uint8_t zero_point, uint8_t* cols);
void im2col_u8_reference(const uint8_t* x, const Conv2dShapeU8& shape, uint8_t zero_point, uint8_t* cols);

// Kernel rows padded to whole k groups: when kernel_w * C is not a multiple
// of 4 (a first layer with 1 input channel: 3 bytes per kernel row), each
// kernel row of the GEMM's K is padded with zero weights to a multiple of 4
// (K = kernel_h * round_up(kernel_w * C, 4)). im2col then moves every kernel
// row as whole 4-byte groups from a zero-point-padded copy of the input, and
// the GEMM has no partial last group. The padded taps have weight 0, so the
// accumulator is the same integer. Used where it costs at most one k group
// more than the plain layout (and dilation is 1).
bool conv_uses_padded_rows(int64_t in_channels, int64_t kernel_h, int64_t kernel_w, int64_t dilation_w);
// OIHW -> (OC, KH, round_up(KW * C, 4)): OHWI rows with zeros after each kernel row.
void conv_weight_to_ohwi_padded_rows(const int8_t* w_oihw, int64_t OC, int64_t C, int64_t KH, int64_t KW,
                                     int8_t* w_ohwi_padded);
// im2col in that layout: row (n, oy, ox), column kh * round_up(KW * C, 4) + kw * C + c
// holds x[n][iy][ix][c] (or zero_point in the padding); the last
// round_up(KW * C, 4) - KW * C bytes of each kernel row hold whatever input
// bytes follow (they meet zero weights). Needs conv_uses_padded_rows(...).
void im2col_u8_padded_rows(const uint8_t* x, const Conv2dShapeU8& shape, uint8_t zero_point, uint8_t* cols);

// y[n][oy][ox][oc] = clamp(zy + round(acc * M_oc), y_min, y_max) with
//   acc = bias_q[oc] + sum over taps inside the input of (x - zx) * w[oc][kh][kw][c].
// W: packed (out_channels, patch_size) from an OHWI weight (conv_weight_to_ohwi),
// or (out_channels, kernel_h * round_up(kernel_w * C, 4)) from
// conv_weight_to_ohwi_padded_rows where conv_uses_padded_rows.
// bias_q may be null. A 1x1 convolution with stride 1 and no padding runs
// the GEMM on x itself; others go through im2col into a scratch buffer kept
// per thread.
void conv2d_u8i8_requant(const uint8_t* x, const Conv2dShapeU8& shape, int32_t zx, int32_t x_quant_max,
                         const PackedWeightsI8& W, const int32_t* bias_q, const FixedPointMultiplier* multipliers,
                         int32_t zy, int32_t y_min, int32_t y_max, uint8_t* y, int threads = 0);

// The scalar twin: the formula above as nested loops over the OHWI weight.
void conv2d_u8i8_requant_reference(const uint8_t* x, const Conv2dShapeU8& shape, int32_t zx, const int8_t* w_ohwi,
                                   const int32_t* bias_q, const FixedPointMultiplier* multipliers, int32_t zy,
                                   int32_t y_min, int32_t y_max, uint8_t* y);

// ---------------------------------------------------------------------------
// Depthwise 3x3, direct (no im2col): channels in SIMD lanes.

// y[n][oy][ox][c] = clamp(zy + round(acc * M_c), y_min, y_max) with
//   acc = bias_q[c] + sum over the 9 taps inside the input of (x - zx) * taps[t][c].
// taps: (9, channels) from depthwise_weight_to_taps; bias_q may be null.
void depthwise3x3_u8i8_requant(const uint8_t* x, const Depthwise3x3ShapeU8& shape, int32_t zx, const int8_t* taps,
                               const int32_t* bias_q, const FixedPointMultiplier* multipliers, int32_t zy,
                               int32_t y_min, int32_t y_max, uint8_t* y);
void depthwise3x3_u8i8_requant_reference(const uint8_t* x, const Depthwise3x3ShapeU8& shape, int32_t zx,
                                         const int8_t* taps, const int32_t* bias_q,
                                         const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min,
                                         int32_t y_max, uint8_t* y);

// ---------------------------------------------------------------------------
// Quantized add: a (scale sa, zero point za) + b (sb, zb) -> y (sy, zy).
//
// Real value: y = sa (a - za) + sb (b - zb). Each input is moved onto the
// output grid with its own fixed-point multiplier, with kAddLeftShift extra
// bits (L = kAddLeftShift = 16) so that the two partial results keep their
// fractions until the one final rounding (docs/quantized_cnn.md §4):
//   t_a = round((a - za) * 2^L * sa / sy),  t_b = round((b - zb) * 2^L * sb / sy)
//   y   = clamp(zy + round((t_a + t_b) * 2^-L), y_min, y_max)
// Every rounding is half away from zero (multiply_by_quantized_multiplier).
// |a - za| <= 255 and sa / sy, sb / sy < 2^6, so |t_a|, |t_b| < 2^30 and
// their sum fits in int32.
struct QuantizedAddParams {
  static constexpr int kAddLeftShift = 16;
  int32_t za = 0, zb = 0, zy = 0;
  FixedPointMultiplier ma, mb;  // sa / sy and sb / sy
  FixedPointMultiplier out;     // 2^-L
  int32_t y_min = 0, y_max = 255;

  // Offline, floats allowed. Throws std::invalid_argument on a scale that is
  // not positive and finite, or on sa / sy or sb / sy >= 64 (the sum
  // could then overflow int32).
  static QuantizedAddParams make(double sa, int32_t za, double sb, int32_t zb, double sy, int32_t zy,
                                 int32_t y_min = 0, int32_t y_max = 255);
};

// Elementwise over count values; a, b, y may alias.
void add_u8_requant(const uint8_t* a, const uint8_t* b, int64_t count, const QuantizedAddParams& p, uint8_t* y);

// One value of the add, integer-only (the definition the kernel follows).
inline int32_t quantized_add_one(int32_t a, int32_t b, const QuantizedAddParams& p) {
  const int32_t ta = multiply_by_quantized_multiplier((a - p.za) * (1 << QuantizedAddParams::kAddLeftShift), p.ma);
  const int32_t tb = multiply_by_quantized_multiplier((b - p.zb) * (1 << QuantizedAddParams::kAddLeftShift), p.mb);
  return requantize(ta + tb, p.out, p.zy, p.y_min, p.y_max);
}

// ---------------------------------------------------------------------------
// Pooling on u8 NHWC. The output keeps the input's (scale, zero point).

// Max over the window; taps in the padding are ignored (PyTorch pads max
// pooling with -inf). Exact: max commutes with the monotone dequantization.
// max_pool2d_u8 takes 16 channels per SSE2 instruction; the _reference twin
// is the plain loop (the same bytes).
void max_pool2d_u8(const uint8_t* x, const Pool2dShapeU8& shape, uint8_t* y);
void max_pool2d_u8_reference(const uint8_t* x, const Pool2dShapeU8& shape, uint8_t* y);

// Average over the window, rounded half up (the values are >= 0, so half
// away from zero): y = floor((sum + count / 2) / count) in integers.
// count_include_pad: taps in the padding count, with the value zero_point
// (real 0), as in PyTorch's default; else count is the taps inside the input.
void avg_pool2d_u8(const uint8_t* x, const Pool2dShapeU8& shape, int32_t zero_point, bool count_include_pad,
                   uint8_t* y);

// PyTorch's adaptive average pooling: output cell (i, j) averages rows
// [floor(i H / OH), ceil((i + 1) H / OH)) and the same for columns, rounded
// as avg_pool2d_u8. Input (batch, in_h, in_w, channels), output (batch, out_h, out_w, channels).
void adaptive_avg_pool2d_u8(const uint8_t* x, int64_t batch, int64_t in_h, int64_t in_w, int64_t channels,
                            int64_t out_h, int64_t out_w, uint8_t* y);

// Which depthwise kernel the dispatch picks now: "reference", "avx2" or "avx512".
const char* depthwise_kernel_name();
bool cpu_has_avx512();

namespace detail {
// The reference depthwise kernel on channels [c_begin, c_end) only (the
// SIMD kernels call it for the channels left past the last whole vector).
void depthwise3x3_channels_reference(const uint8_t* x, const Depthwise3x3ShapeU8& shape, int32_t zx,
                                     const int8_t* taps, const int32_t* bias_q,
                                     const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min,
                                     int32_t y_max, uint8_t* y, int64_t c_begin, int64_t c_end);
// The SIMD kernels (int8_conv_avx2.cpp, int8_conv_avx512.cpp): same arguments
// and result as depthwise3x3_u8i8_requant_reference.
void depthwise3x3_avx2(const uint8_t* x, const Depthwise3x3ShapeU8& shape, int32_t zx, const int8_t* taps,
                       const int32_t* bias_q, const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min,
                       int32_t y_max, uint8_t* y);
void depthwise3x3_avx512(const uint8_t* x, const Depthwise3x3ShapeU8& shape, int32_t zx, const int8_t* taps,
                         const int32_t* bias_q, const FixedPointMultiplier* multipliers, int32_t zy, int32_t y_min,
                         int32_t y_max, uint8_t* y);
}  // namespace detail

}  // namespace tq
