// CPUID/XGETBV detection of AVX2/AVX512/VNNI (Intel SDM vol. 2A "CPUID", AMD APM vol. 3) and the
// FRUGAL_ISA override.
#include "kernels/cpu_features.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define FRUGAL_X86 1
#endif

namespace frugal {
namespace {

#if defined(FRUGAL_X86)
// XCR0 says which register states the OS saves on context switches; without it the wide
// registers cannot be used even when CPUID lists the instructions.
uint64_t read_xcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

Isa detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::kScalar;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
  if (!osxsave || !avx) return Isa::kScalar;
  const uint64_t xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;     // SSE + AVX state
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;   // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!ymm_state || __get_cpuid_max(0, nullptr) < 7) return Isa::kScalar;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5);
  const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30),
             avx512vl = b & (1u << 31);
  const bool avx512vnni = c & (1u << 11);
  if (!(avx2 && fma && f16c)) return Isa::kScalar;
  if (!(zmm_state && avx512f && avx512dq && avx512bw && avx512vl)) return Isa::kAvx2;
  return avx512vnni ? Isa::kAvx512Vnni : Isa::kAvx512;
}
#else
Isa detect() { return Isa::kScalar; }
#endif

// The environment override, applied once: a lower level is honoured, a higher one is refused
// with one line on stderr.
Isa initial_isa() {
  const Isa best = best_supported_isa();
  const char* env = std::getenv("FRUGAL_ISA");
  if (env == nullptr || *env == '\0') return best;
  Isa wanted;
  if (!parse_isa(env, &wanted)) {
    std::fprintf(stderr, "frugal: FRUGAL_ISA=%s is not one of scalar|avx2|avx512|avx512vnni; using %s\n", env,
                 isa_name(best));
    return best;
  }
  if (static_cast<int>(wanted) > static_cast<int>(best)) {
    std::fprintf(stderr, "frugal: FRUGAL_ISA=%s is not supported by this CPU; using %s\n", env, isa_name(best));
    return best;
  }
  return wanted;
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

Isa best_supported_isa() {
  static const Isa best = detect();
  return best;
}

Isa active_isa() { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

Isa set_active_isa(Isa isa) {
  const Isa best = best_supported_isa();
  const Isa chosen = static_cast<int>(isa) > static_cast<int>(best) ? best : isa;
  active_slot().store(static_cast<int>(chosen), std::memory_order_relaxed);
  return chosen;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

bool parse_isa(std::string_view name, Isa* isa) {
  for (Isa candidate : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni}) {
    if (name == isa_name(candidate)) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

}  // namespace frugal
