// cpu_features.h — which x86 instruction sets this CPU has AND the operating
// system lets a program use. Every kernel switch in tinyqat (the int8 GEMM,
// the QAT elementwise loops, the activation quantizer) asks here, so they all
// agree on what the machine can do. Read once, at first use.
//
// An instruction set counts only when both sides allow it:
//   - the CPU reports it (cpuid), and
//   - the OS saves its registers on a context switch (xgetbv reads XCR0:
//     YMM state for AVX/AVX2, opmask + ZMM state for AVX-512, tile
//     configuration + tile data for AMX), and, for AMX on Linux, the
//     process has asked for the tile data state (arch_prctl
//     ARCH_REQ_XCOMP_PERM) and the kernel granted it.
#pragma once

#include <string>

namespace tq {

struct CpuFeatures {
  bool avx2 = false;        // AVX2 + FMA, OS saves YMM state
  bool avx512 = false;      // AVX-512 F + BW + VL + DQ, OS saves ZMM and opmask state
  bool avx512_vnni = false; // avx512 and AVX512_VNNI (vpdpbusd on zmm)
  bool avx_vnni = false;    // avx2 and AVX-VNNI (VEX-encoded vpdpbusd on ymm)
  bool amx_int8 = false;    // AMX-TILE + AMX-INT8 reported and OS tile state enabled in XCR0
  bool amx_permitted = false;  // amx_int8 and Linux granted the tile data permission
  std::string brand;        // e.g. "AMD EPYC 9R45 96-Core Processor"
};

// The features of this CPU (cached; the AMX permission request is made on the
// first call, once per process).
const CpuFeatures& cpu_features();

// One line for logs and benchmarks: "avx2 avx512 avx512_vnni avx_vnni", with
// "amx_int8 (refused by the OS)" where that applies.
std::string cpu_feature_summary();

// The widest elementwise vector code a loop may use.
enum class SimdLevel { scalar, avx2, avx512 };
SimdLevel best_simd_level();  // avx512 > avx2 > scalar, by cpu_features()
const char* to_string(SimdLevel level);
// Throws std::runtime_error naming the level when this CPU cannot run it.
void require_simd_level(SimdLevel level, const char* who);

}  // namespace tq
