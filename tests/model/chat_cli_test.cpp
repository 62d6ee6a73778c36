// Model test of `frugal run --chat` and plain `run` as a user meets them: tests/chat/drive_chat.py
// drives the binary through a pty and pipes on a tiny random model (slash commands, a conversation
// past the context, Ctrl-C mid-reply and at the prompt, --stop).
#include <gtest/gtest.h>

#include <fstream>

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

// `frugal template`: the tiny model's own template, a --template-file, and one-line errors naming
// what and where for a bad conversation file or a broken template.
TEST(TemplateCommand, RendersAndReportsErrors) {
  const std::string dir = testing::temp_dir();
  const std::string model = dir + "/tiny.gguf";
  ASSERT_TRUE(testing::write_tiny_model(model, {}).is_ok());
  std::ofstream(dir + "/chat.json") << R"([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])";
  std::ofstream(dir + "/bad.json") << "[{\"role\": \"user\",\n  \"content\": }]";
  std::ofstream(dir + "/t.jinja") << "{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}]{% endfor %}"
                                  << "{% if add_generation_prompt %}>{% endif %}";
  std::ofstream(dir + "/broken.jinja") << "ok\n{% for m in messages %}{{ m.role + }}{% endfor %}";
  const std::string frugal = "timeout 60 " + testing::shell_quote(testing::frugal_binary()) + " template -m " + testing::shell_quote(model);
  auto r = testing::run_command(frugal + " --messages " + testing::shell_quote(dir + "/chat.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n");
  r = testing::run_command(frugal + " --template-file " + testing::shell_quote(dir + "/t.jinja") + " --messages " +
                           testing::shell_quote(dir + "/chat.json") + " --add-generation-prompt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<|endoftext|>[USER][ASSISTANT]>");
  r = testing::run_command(frugal + " --messages " + testing::shell_quote(dir + "/bad.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("JSON line 2 column 14"), std::string::npos) << r.err;
  r = testing::run_command(frugal + " --template-file " + testing::shell_quote(dir + "/broken.jinja") + " --messages " +
                           testing::shell_quote(dir + "/chat.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 2, column 36: unexpected '}}'"), std::string::npos) << r.err;
  r = testing::run_command(frugal);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--messages"), std::string::npos) << r.err;
  r = testing::run_command(frugal + " --messages " + testing::shell_quote(dir + "/missing.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot open"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace frugal
