// check_memory: refuses when the anonymous KV cache + workspace cannot fit, warns when only the
// mapped weights do not, and says nothing when everything fits (issue 14).
#include <gtest/gtest.h>

#include <cstdlib>

#include "runtime/memory_check.h"

namespace frugal {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

TEST(MemoryCheck, FitsWarnsOrRefuses) {
  MemoryNeed need;
  need.weights = 2 * kGiB;
  need.kv_cache = kGiB / 2;
  need.workspace = kGiB / 4;
  auto fits = check_memory(need, 4 * kGiB, 4096);
  ASSERT_TRUE(fits.is_ok());
  EXPECT_EQ(*fits, "");
  auto warns = check_memory(need, 2 * kGiB, 4096);
  ASSERT_TRUE(warns.is_ok());
  EXPECT_NE(warns->find("2.00 GiB"), std::string::npos) << *warns;
  EXPECT_NE(warns->find("memory-mapped"), std::string::npos) << *warns;
  auto refuses = check_memory(need, kGiB / 2, 4096);
  ASSERT_FALSE(refuses.is_ok());
  EXPECT_NE(refuses.status().message().find("-c 4096"), std::string::npos) << refuses.status().message();
  EXPECT_NE(refuses.status().message().find("0.75 GiB"), std::string::npos) << refuses.status().message();
}

TEST(MemoryCheck, AvailableMemoryOverride) {
  ASSERT_EQ(0, setenv("FRUGAL_AVAILABLE_MEMORY", "12345", 1));
  EXPECT_EQ(available_memory(), std::optional<uint64_t>(12345));
  ASSERT_EQ(0, unsetenv("FRUGAL_AVAILABLE_MEMORY"));
  const auto real = available_memory();
  ASSERT_TRUE(real.has_value());  // Linux always has /proc/meminfo
  EXPECT_GT(*real, uint64_t{0});
}

}  // namespace
}  // namespace frugal
