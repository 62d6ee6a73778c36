// Instruction-set detection and the one run-time choice of kernel ISA (CPUID once at start-up;
// FRUGAL_ISA=scalar|avx2|avx512|avx512vnni may force a lower level). The build itself requires
// x86-64-v3 (startup/cpu_guard.cpp refuses anything less), so kScalar selects the scalar
// reference kernels on an AVX2 machine; it does not make the binary run on older CPUs.
#pragma once

#include <string_view>

namespace frugal {

// Ordered: each level implies the ones before it.
enum class Isa {
  kScalar = 0,      // portable C++ (the reference twins of every kernel)
  kAvx2 = 1,        // AVX2 + FMA + F16C (x86-64-v3)
  kAvx512 = 2,      // AVX512 F + BW + VL + DQ
  kAvx512Vnni = 3,  // kAvx512 + AVX512-VNNI (vpdpbusd)
};

// The best level this CPU and OS support (detected once).
Isa best_supported_isa();
// The level kernels use: best_supported_isa(), lowered by FRUGAL_ISA or set_active_isa().
Isa active_isa();
// Forces a level for this process (tests and benchmarks iterate over the levels with it). A level
// above best_supported_isa() is clamped to it; returns the level actually selected.
Isa set_active_isa(Isa isa);

const char* isa_name(Isa isa);  // "scalar", "avx2", "avx512", "avx512vnni"
// Parses a name as isa_name prints it; false for unknown names.
bool parse_isa(std::string_view name, Isa* isa);
// Name of active_isa(), for apps to print.
inline const char* active_isa_name() { return isa_name(active_isa()); }

// AMX int8 tiles (Intel AMX-TILE + AMX-INT8, used by the prefill kernels of matmul_amx.cpp).
// True only if CPUID lists them, the OS enables the tile state in XCR0 (bits 17/18), Linux grants
// this process the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM) and a probe LDTILECFG +
// TILEZERO + TILERELEASE runs without trapping (run once, under a temporary SIGILL/SIGSEGV
// handler, so a host that lists AMX but traps on it costs nothing but the answer "no").
bool amx_supported();
// Why amx_supported() is false ("" when it is true), for `frugal info`.
const char* amx_unavailable_reason();
// Whether the matmul driver uses AMX now: amx_supported(), not disabled by FRUGAL_AMX=off or
// set_amx_enabled(false), and the active ISA is avx512vnni (the AMX kernels reproduce that
// table's results bit for bit; a forced lower ISA turns AMX off too).
bool amx_active();
// Enables or disables AMX for this process (tests and benchmarks); returns amx_active().
bool set_amx_enabled(bool enabled);
// "on" when amx_active(), else "off (FRUGAL_AMX=off)", "off", or "unavailable: <reason>".
const char* amx_status();

}  // namespace frugal
