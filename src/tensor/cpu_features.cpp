// cpu_features.cpp — cpuid, xgetbv and the Linux AMX permission request.
// Bit positions: Intel SDM vol. 2A, CPUID leaf 1 and leaf 7; XCR0 in vol. 1
// ch. 13; ARCH_REQ_XCOMP_PERM in the Linux kernel's x86 arch_prctl interface.
#include "tensor/cpu_features.h"

#include <cstdint>
#include <cstring>
#include <stdexcept>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace tq {

namespace {

#if defined(__x86_64__) || defined(__i386__)

struct Regs {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Regs cpuid(uint32_t leaf, uint32_t subleaf) {
  Regs r;
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
  return r;
}

bool bit(uint32_t value, int n) { return (value >> n) & 1u; }

// XCR0, the state components the OS saves; only valid when OSXSAVE is set.
uint64_t read_xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t{hi} << 32) | lo;
}

// Linux (5.16+) hands out the AMX tile data state only to processes that ask.
bool request_amx_permission() {
#if defined(__linux__) && defined(__x86_64__)
  constexpr long kArchReqXcompPerm = 0x1023;  // ARCH_REQ_XCOMP_PERM
  constexpr long kXfeatureXtiledata = 18;     // XFEATURE_XTILEDATA
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

CpuFeatures detect() {
  CpuFeatures f;
  const uint32_t max_leaf = cpuid(0, 0).eax;
  if (max_leaf < 1) return f;
  const Regs l1 = cpuid(1, 0);
  const bool osxsave = bit(l1.ecx, 27), avx = bit(l1.ecx, 28), fma = bit(l1.ecx, 12);
  const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;              // SSE + AVX state
  const bool os_zmm = os_ymm && (xcr0 & 0xE0) == 0xE0;  // opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_tiles = (xcr0 & 0x60000) == 0x60000;    // XTILECFG (17) + XTILEDATA (18)
  if (max_leaf >= 7) {
    const Regs l7 = cpuid(7, 0);
    const Regs l7s1 = l7.eax >= 1 ? cpuid(7, 1) : Regs{};
    f.avx2 = avx && fma && os_ymm && bit(l7.ebx, 5);
    f.avx512 = f.avx2 && os_zmm && bit(l7.ebx, 16) && bit(l7.ebx, 17) && bit(l7.ebx, 30) && bit(l7.ebx, 31);
    f.avx512_vnni = f.avx512 && bit(l7.ecx, 11);
    f.avx_vnni = f.avx2 && bit(l7s1.eax, 4);
    f.amx_int8 = os_tiles && bit(l7.edx, 24) && bit(l7.edx, 25) && f.avx512;
    f.amx_permitted = f.amx_int8 && request_amx_permission();
  }
  if (cpuid(0x80000000u, 0).eax >= 0x80000004u) {
    char brand[49] = {};
    for (uint32_t i = 0; i < 3; ++i) {
      const Regs r = cpuid(0x80000002u + i, 0);
      std::memcpy(brand + 16 * i, &r, 16);
    }
    f.brand = brand;
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
    while (!f.brand.empty() && f.brand.front() == ' ') f.brand.erase(f.brand.begin());
  }
  return f;
}

#else

CpuFeatures detect() { return {}; }

#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

std::string cpu_feature_summary() {
  const CpuFeatures& f = cpu_features();
  std::string s;
  auto add = [&](bool has, const char* name) {
    if (!has) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2, "avx2");
  add(f.avx512, "avx512");
  add(f.avx512_vnni, "avx512_vnni");
  add(f.avx_vnni, "avx_vnni");
  add(f.amx_permitted, "amx_int8");
  add(f.amx_int8 && !f.amx_permitted, "amx_int8 (refused by the OS)");
  return s.empty() ? "baseline x86-64 only" : s;
}

SimdLevel best_simd_level() {
  const CpuFeatures& f = cpu_features();
  return f.avx512 ? SimdLevel::avx512 : f.avx2 ? SimdLevel::avx2 : SimdLevel::scalar;
}

const char* to_string(SimdLevel level) {
  switch (level) {
    case SimdLevel::scalar: return "scalar";
    case SimdLevel::avx2: return "avx2";
    case SimdLevel::avx512: return "avx512";
  }
  return "?";
}

void require_simd_level(SimdLevel level, const char* who) {
  const SimdLevel best = best_simd_level();
  if (static_cast<int>(level) > static_cast<int>(best))
    throw std::runtime_error(std::string(who) + ": " + to_string(level) + " code was asked for, but this CPU offers at most " +
                             to_string(best));
}

}  // namespace tq
