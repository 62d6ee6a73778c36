// The kernel ISA level from CPU detection (startup/cpu_guard.cpp) and the FRUGAL_ISA override.
#include "kernels/cpu_features.h"

#include <atomic>
#include <csetjmp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

const char* amx_reason();

std::atomic<int>& active_slot() {
  // The AMX probe runs here too, at the first kernel dispatch, usually before any worker thread
  // exists: its temporary SIGILL/SIGSEGV handlers are process-wide.
  static std::atomic<int> slot{(static_cast<void>(amx_reason()), static_cast<int>(initial_isa()))};
  return slot;
}

// ---- AMX detection (Intel SDM vol. 1 ch. 18 "Intel AMX"; Linux Documentation/arch/x86/xstate.rst).

sigjmp_buf g_amx_probe_jump;
void amx_probe_trap(int) { siglongjmp(g_amx_probe_jump, 1); }

// nullptr when AMX int8 tiles work in this process, else the reason they do not.
const char* probe_amx() {
#if defined(__x86_64__) && defined(__linux__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return "no OSXSAVE";
  if (__get_cpuid_max(0, nullptr) < 7) return "no CPUID leaf 7";
  __cpuid_count(7, 0, a, b, c, d);
  if (!(d & (1u << 24)) || !(d & (1u << 25))) return "CPU lacks AMX-TILE/AMX-INT8";
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  (void)hi;
  // XCR0 bit 17 XTILECFG, bit 18 XTILEDATA: the OS saves the tile state on context switches.
  if ((lo & (3u << 17)) != (3u << 17)) return "tile state not enabled by the OS (XCR0 bits 17/18)";
  constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return "kernel refused tile data permission";
  unsigned long long permitted = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &permitted) != 0 || !(permitted & (1ull << kXfeatureXtiledata))) {
    return "tile data state not permitted";
  }
  // Some hosts list AMX and grant the permission, yet the first tile instruction traps (#UD
  // -> SIGILL, or #GP -> SIGSEGV): run one under temporary handlers that jump back here, then
  // restore the previous handlers. Palette 1, tile 0 with 16 rows of 64 bytes (SDM 18.2).
  struct sigaction trap {}, old_ill {}, old_segv {};
  trap.sa_handler = amx_probe_trap;
  sigemptyset(&trap.sa_mask);
  sigaction(SIGILL, &trap, &old_ill);
  sigaction(SIGSEGV, &trap, &old_segv);
  alignas(64) unsigned char config[64];
  std::memset(config, 0, sizeof config);
  config[0] = 1;
  config[16] = 64;
  config[48] = 16;
  volatile bool ran = false;
  if (sigsetjmp(g_amx_probe_jump, 1) == 0) {
    __asm__ volatile("ldtilecfg %0" ::"m"(config));
    __asm__ volatile("tilezero %%tmm0" ::);
    __asm__ volatile("tilerelease" ::);
    ran = true;
  }
  sigaction(SIGILL, &old_ill, nullptr);
  sigaction(SIGSEGV, &old_segv, nullptr);
  return ran ? nullptr : "the first tile instruction trapped";
#else
  return "not an x86-64 Linux build";
#endif
}

const char* amx_reason() {
  static const char* const reason = probe_amx();
  return reason;
}

bool amx_env_off() {
  const char* env = std::getenv("FRUGAL_AMX");
  return env != nullptr && (std::strcmp(env, "off") == 0 || std::strcmp(env, "0") == 0);
}

std::atomic<bool>& amx_enabled_slot() {
  static std::atomic<bool> slot{!amx_env_off()};
  return slot;
}

}  // namespace

bool amx_supported() { return amx_reason() == nullptr; }

const char* amx_unavailable_reason() { return amx_supported() ? "" : amx_reason(); }

bool amx_active() {
  return amx_enabled_slot().load(std::memory_order_relaxed) && active_isa() == Isa::kAvx512Vnni && amx_supported();
}

bool set_amx_enabled(bool enabled) {
  amx_enabled_slot().store(enabled, std::memory_order_relaxed);
  return amx_active();
}

const char* amx_status() {
  if (amx_active()) return "on";
  if (!amx_supported()) {
    static const std::string text = std::string("unavailable: ") + amx_reason();
    return text.c_str();
  }
  if (!amx_enabled_slot().load(std::memory_order_relaxed)) return amx_env_off() ? "off (FRUGAL_AMX=off)" : "off";
  return "off (needs the avx512vnni kernels)";
}

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
