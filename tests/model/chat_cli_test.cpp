// Model test of `frugal run --chat` and plain `run` as a user meets them: tests/chat/drive_chat.py
// drives the binary through a pty and pipes on a tiny random model (slash commands, a conversation
// past the context, Ctrl-C mid-reply and at the prompt, --stop).
#include <gtest/gtest.h>

#include "support/test_support.h"

namespace frugal {
namespace {

TEST(ChatCli, CommandsLongConversationCtrlCAndStop) {
  if (testing::run_command("python3 -c 'import pty'").exit_code != 0) GTEST_SKIP() << "python3 is not available";
  const std::string model = testing::temp_dir() + "/tiny.gguf";
  ASSERT_TRUE(testing::write_tiny_model(model, {}).is_ok());
  const auto r = testing::run_command("timeout 300 python3 " + testing::shell_quote(std::string(FRUGAL_SOURCE_DIR) + "/tests/chat/drive_chat.py") +
                                      " " + testing::shell_quote(testing::frugal_binary()) + " " + testing::shell_quote(model));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("all chat checks passed"), std::string::npos) << r.out << r.err;
}

}  // namespace
}  // namespace frugal
