// The x86-64-v3 requirement, checked before anything else runs: CPUID/XGETBV detection of the
// instruction sets (Intel SDM vol. 2A "CPUID", AMD APM vol. 3) and a start-up guard that refuses
// a CPU without AVX2/FMA/F16C/BMI2 with one line instead of dying on SIGILL.
//
// This file is compiled WITHOUT the project's -mavx2 -mfma -mf16c -mbmi2 (CMakeLists.txt gives it
// -mno-* options), so it is the one part of the binary that is safe on any x86-64 CPU. It must
// stay self-contained: no inline functions shared with other files (their one linked copy could
// be an AVX2 one), no C++ library, only CPUID, XGETBV, write() and _exit().
#include "startup/cpu_guard.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <unistd.h>

#if defined(__AVX__) || defined(__AVX2__) || defined(__FMA__) || defined(__F16C__) || defined(__BMI2__)
#error "cpu_guard.cpp must be compiled for the x86-64 baseline (see CMakeLists.txt)"
#endif

namespace frugal {
namespace {

// XCR0 says which register states the OS saves on context switches; without it the wide
// registers cannot be used even when CPUID lists the instructions.
unsigned long long read_xcr0() {
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

}  // namespace

CpuLevel detect_cpu_level() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return CpuLevel::kBaseline;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
  if (!osxsave || !avx) return CpuLevel::kBaseline;
  const unsigned long long xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;    // SSE + AVX state
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!ymm_state || __get_cpuid_max(0, nullptr) < 7) return CpuLevel::kBaseline;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5), bmi2 = b & (1u << 8);
  const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30),
             avx512vl = b & (1u << 31);
  const bool avx512vnni = c & (1u << 11);
  if (!(avx2 && fma && f16c && bmi2)) return CpuLevel::kBaseline;
  if (!(zmm_state && avx512f && avx512dq && avx512bw && avx512vl)) return CpuLevel::kX86_64_V3;
  return avx512vnni ? CpuLevel::kAvx512Vnni : CpuLevel::kAvx512;
}

namespace {

// Priority 101, the first one available to programs: it runs before every C++ static
// initializer of the binary (default priority), which are compiled for x86-64-v3 and may already
// use AVX2. A failed check exits without running any of them (no exit handlers, no flush).
__attribute__((constructor(101))) void require_x86_64_v3() {
  if (detect_cpu_level() != CpuLevel::kBaseline) return;
  static const char kMessage[] =
      "frugal: error: this CPU lacks AVX2/FMA/F16C (x86-64-v3), which this build of frugal requires\n";
  ssize_t ignored = write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  (void)ignored;
  _exit(1);
}

}  // namespace
}  // namespace frugal

#else
namespace frugal {
CpuLevel detect_cpu_level() { return CpuLevel::kBaseline; }
}  // namespace frugal
#endif
