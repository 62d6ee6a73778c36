// The kernel ISA level from CPU detection (startup/cpu_guard.cpp) and the FRUGAL_ISA override.
#include "kernels/cpu_features.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "startup/cpu_guard.h"

namespace frugal {
namespace {

// The detection itself lives in startup/cpu_guard.cpp, the one file built for the x86-64
// baseline, which also refuses CPUs below x86-64-v3 before any other code runs.
Isa detect() {
  switch (detect_cpu_level()) {
    case CpuLevel::kAvx512Vnni: return Isa::kAvx512Vnni;
    case CpuLevel::kAvx512: return Isa::kAvx512;
    case CpuLevel::kX86_64_V3: return Isa::kAvx2;
    case CpuLevel::kBaseline: break;
  }
  return Isa::kScalar;
}

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
