// CPUID detection of the instruction-set level, shared by the start-up guard (cpu_guard.cpp,
// which refuses CPUs below x86-64-v3) and kernels/cpu_features (which picks the kernel tables).
#pragma once

namespace frugal {

enum class CpuLevel {
  kBaseline = 0,    // below x86-64-v3: this build cannot run (the guard exits at start-up)
  kX86_64_V3 = 1,   // AVX2 + FMA + F16C + BMI2, with the OS saving YMM state
  kAvx512 = 2,      // + AVX512 F/BW/VL/DQ with ZMM state saved
  kAvx512Vnni = 3,  // + AVX512-VNNI
};

// CPUID + XGETBV, cheap enough to call more than once (callers cache it).
CpuLevel detect_cpu_level();

}  // namespace frugal
