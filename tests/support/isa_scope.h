// Running a test on every instruction set the CPU supports (the kernel twin rule in DESIGN.md).
#pragma once

#include <vector>

#include "kernels/cpu_features.h"

namespace frugal::testing {

// Scalar up to the best level this CPU supports.
inline std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (int i = 0; i <= static_cast<int>(best_supported_isa()); ++i) out.push_back(static_cast<Isa>(i));
  return out;
}

// Forces an ISA for the scope of a test section.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) : saved_(active_isa()) { set_active_isa(isa); }
  ~ScopedIsa() { set_active_isa(saved_); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  Isa saved_;
};

}  // namespace frugal::testing
