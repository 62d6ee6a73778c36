// Model test of `frugal run --chat` and plain `run` as a user meets them: tests/chat/drive_chat.py
// drives the binary through a pty and pipes on a tiny random model (slash commands, a conversation
// past the context, Ctrl-C mid-reply and at the prompt, --stop); speculative decoding in both.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

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

// Speculative decoding in `frugal run` as plain runs are used: a --chat conversation over two turns
// (the second reusing the first's cache) prints exactly plain greedy's replies with every kind of
// drafter, and -p stops at a --stop string as plain decoding does.
TEST(ChatCli, SpeculativeChatAndStopStringsMatchPlainDecoding) {
  const std::string dir = testing::temp_dir();
  const std::string model = dir + "/tiny.gguf";
  ASSERT_TRUE(testing::write_tiny_model(model, {}).is_ok());
  std::ofstream(dir + "/turns.txt") << "Hello there\nTell me more about it\n/exit\n";
  const std::string run = "timeout 120 " + testing::shell_quote(testing::frugal_binary()) + " run -m " + testing::shell_quote(model) +
                          " -t 1 --temp 0 -n 24";
  // run_command gives the command /dev/null as stdin: the turns come through a pipe.
  const std::string chat = "(cat " + testing::shell_quote(dir + "/turns.txt") + " | " + run + " --chat";
  const auto plain = testing::run_command(chat + ")");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_FALSE(plain.out.empty()) << plain.err;
  for (const std::string& drafter : std::vector<std::string>{"--lookup", "--draft-self 1 --draft-fixed", "--draft-self 1",
                                                             "--draft " + testing::shell_quote(model) + " --draft-fixed"}) {
    const auto r = testing::run_command(chat + " " + drafter + ")");
    ASSERT_EQ(r.exit_code, 0) << drafter << ": " << r.err;
    EXPECT_EQ(r.out, plain.out) << drafter;
    EXPECT_NE(r.err.find("speculative"), std::string::npos) << r.err;
  }

  // -p with a stop string taken from the middle of plain greedy's continuation.
  const std::string prompt_run = run + " --no-display-prompt -p " + testing::shell_quote("Once upon a time");
  const auto full = testing::run_command(prompt_run);
  ASSERT_EQ(full.exit_code, 0) << full.err;
  std::string stop;
  for (size_t at = full.out.size() / 2; at + 2 <= full.out.size() && stop.empty(); ++at) {
    const std::string candidate = full.out.substr(at, 2);
    if (candidate.find('\0') == std::string::npos && candidate.find('\n') == std::string::npos &&
        full.out.find(candidate) == at) {
      stop = candidate;
    }
  }
  if (stop.empty()) GTEST_SKIP() << "no usable stop string in the tiny model's output";
  const std::string expected = full.out.substr(0, full.out.find(stop));
  for (const std::string& drafter : std::vector<std::string>{"", " --lookup", " --draft-self 1 --draft-fixed"}) {
    const auto r = testing::run_command(prompt_run + " --stop " + testing::shell_quote(stop) + drafter);
    ASSERT_EQ(r.exit_code, 0) << drafter << ": " << r.err;
    EXPECT_EQ(r.out, expected) << "drafter '" << drafter << "', stop '" << stop << "'";
  }
  const auto refused = testing::run_command(prompt_run + " --lookup --ignore-eos");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("--ignore-eos"), std::string::npos) << refused.err;
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
