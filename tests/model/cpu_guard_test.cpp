// The x86-64-v3 requirement (src/startup/cpu_guard.cpp) tested on emulated CPUs: under
// qemu-x86_64 (Debian's qemu-user) a pre-AVX CPU model must get the one refusal line and exit
// code 1 instead of SIGILL, and an x86-64-v3 model must run. Skipped where qemu-x86_64 is not
// installed (scripts/setup.sh installs it on Debian).
#include <gtest/gtest.h>

#include <algorithm>

#include "support/test_support.h"

namespace frugal {
namespace {

using testing::run_command;
using testing::shell_quote;

bool have_qemu() { return run_command("command -v qemu-x86_64").exit_code == 0; }

// `frugal info MODEL` on the emulated CPU model `cpu`.
testing::CommandResult run_on_cpu(const std::string& cpu, const std::string& model) {
  return run_command("timeout 300 qemu-x86_64 -cpu " + cpu + " " + shell_quote(testing::frugal_binary()) + " info " +
                     shell_quote(model));
}

class CpuGuard : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(__SANITIZE_ADDRESS__)
    // An ASan binary reserves terabytes of shadow memory at start-up, which qemu-user's address
    // space cannot hold: the emulated process is killed before main. The Release build runs these.
    GTEST_SKIP() << "qemu-user cannot host an AddressSanitizer binary";
#endif
    if (!have_qemu()) GTEST_SKIP() << "qemu-x86_64 not installed (apt-get install qemu-user)";
    model_ = testing::temp_dir() + "/tiny.gguf";
    const Status written = testing::write_tiny_model(model_, {});
    ASSERT_TRUE(written.is_ok()) << written.message();
  }
  std::string model_;
};

// Nehalem (SSE4.2, no AVX) and Sandy Bridge (AVX but no AVX2/FMA/F16C) are below x86-64-v3.
TEST_F(CpuGuard, RefusesCpusBelowX86_64_V3WithOneLine) {
  for (const char* cpu : {"Nehalem", "SandyBridge"}) {
    const auto r = run_on_cpu(cpu, model_);
    EXPECT_EQ(r.exit_code, 1) << cpu << " (132 would be SIGILL)\nstderr: " << r.err;
    EXPECT_EQ(r.out, "") << cpu;
    // qemu may warn about CPUID bits it cannot emulate; frugal's own output is the last line.
    const std::string line =
        "frugal: error: this CPU lacks AVX2/FMA/F16C (x86-64-v3), which this build of frugal requires\n";
    ASSERT_GE(r.err.size(), line.size()) << cpu << ": " << r.err;
    EXPECT_EQ(r.err.substr(r.err.size() - line.size()), line) << cpu;
    // Every line before it is qemu's: frugal printed exactly one.
    size_t at = 0;
    for (size_t end; (end = r.err.find('\n', at)) != std::string::npos && end + 1 < r.err.size(); at = end + 1) {
      EXPECT_EQ(r.err.compare(at, 5, "qemu-"), 0) << cpu << ": unexpected line " << r.err.substr(at, end - at);
    }
  }
}

// qemu's "max" model has AVX2/FMA/F16C/BMI2 but no AVX-512: the binary runs and picks avx2.
TEST_F(CpuGuard, RunsOnX86_64_V3) {
  const auto r = run_on_cpu("max", model_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("kernels:         avx2 (best on this CPU: avx2"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace frugal
