// Real-model tests of chat templates: SmolLM2's own tokenizer.chat_template renders through the
// Jinja interpreter (its default system prompt included), `frugal run --chat` uses it and says so;
// the Gemma 3 file (a base model, no template) gets the built-in format and a warning, and the
// Gemma 3 IT template renders with the model's BOS exactly once in the tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "support/test_support.h"

namespace frugal {
namespace {

using testing::run_command;
using testing::shell_quote;

std::string gemma_path() {
  if (const char* m = std::getenv("FRUGAL_GEMMA_MODEL"); m != nullptr && *m) return m;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/frugal/models/gemma-3-270m-q4_k_m.gguf";
}

TEST(ChatTemplateReal, SmolLm2RendersItsOwnTemplateWithTheDefaultSystemPrompt) {
  auto model = Model::load(testing::real_model_path());
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  const ChatTemplate& t = (*model)->chat_template();
  ASSERT_TRUE(t.has_source());
  std::string used;
  auto out = t.apply({{"user", "What is 2 + 2?"}}, true, &used);
  ASSERT_TRUE(out.is_ok());
  EXPECT_EQ(used, "model template");
  EXPECT_EQ(*out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n");
  // A system message of the user's replaces the default one.
  out = t.apply({{"system", "Answer in French."}, {"user", "Hi"}, {"assistant", "Salut"}, {"user", "Ok"}}, true, &used);
  ASSERT_TRUE(out.is_ok());
  EXPECT_EQ(*out,
            "<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            "Salut<|im_end|>\n<|im_start|>user\nOk<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateReal, TemplateCommandAndChatUseTheModelTemplate) {
  const std::string dir = testing::temp_dir();
  const std::string messages = dir + "/messages.json";
  std::ofstream(messages) << R"([{"role": "user", "content": "Hi"}])";
  const std::string frugal = shell_quote(testing::frugal_binary());
  auto r = run_command("timeout 60 " + frugal + " template -m " + shell_quote(testing::real_model_path()) + " --messages " +
                       shell_quote(messages) + " --add-generation-prompt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // Parenthesised: run_command redirects the whole command's stdin from /dev/null.
  r = run_command("(printf 'Hi\\n/exit\\n' | timeout 60 " + frugal + " run -m " + shell_quote(testing::real_model_path()) +
                  " --chat -n 8 --temp 0 -t 2)");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("chat template: the model's own"), std::string::npos) << r.err;
  EXPECT_FALSE(r.out.empty());
}

TEST(ChatTemplateReal, PlainRunSaysWhenNothingIsGenerated) {
  // A finished assistant turn: SmolLM2 ends the text at once (greedy <|im_end|>).
  const std::string prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help you today?";
  auto r = run_command("timeout 60 " + shell_quote(testing::frugal_binary()) + " run -m " + shell_quote(testing::real_model_path()) +
                       " -p " + shell_quote(prompt) + " -n 8 --temp 0 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, prompt);
  EXPECT_NE(r.err.find("nothing generated"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("generation: 0 tokens"), std::string::npos) << r.err;
}

TEST(ChatTemplateReal, GemmaBaseModelWarnsAndGemma3TemplateRendersWithOneBos) {
  ASSERT_TRUE(testing::file_exists(gemma_path())) << gemma_path() << " missing: scripts/fetch_model.sh gemma3";
  auto model = Model::load(gemma_path());
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  const ChatTemplate& t = (*model)->chat_template();
  EXPECT_FALSE(t.has_source());
  std::string used;
  auto fallback = t.apply({{"user", "Hi"}}, true, &used);
  ASSERT_TRUE(fallback.is_ok());
  EXPECT_EQ(*fallback, "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_NE(used.find("built-in gemma"), std::string::npos) << used;

  const std::string frugal = shell_quote(testing::frugal_binary());
  auto r = run_command("(printf 'Hi\\n' | timeout 60 " + frugal + " run -m " + shell_quote(gemma_path()) + " --chat -n 4 --temp 0 -t 2)");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: the model has no chat template"), std::string::npos) << r.err;

  // The Gemma 3 IT template (tests/jinja/templates) with this model's <bos>: one BOS token.
  ChatTemplate it = t;
  const std::string path = std::string(FRUGAL_SOURCE_DIR) + "/tests/jinja/templates/google-gemma-3-it.jinja";
  auto source = run_command("cat " + shell_quote(path));
  ASSERT_EQ(source.exit_code, 0);
  it.source = source.out;
  auto out = it.apply({{"system", "Be brief."}, {"user", "Hi"}}, true, &used);
  ASSERT_TRUE(out.is_ok());
  EXPECT_EQ(used, "model template");
  EXPECT_EQ(*out, t.bos_token + "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
  const Tokenizer& tok = (*model)->tokenizer();
  const bool starts_with_bos = out->rfind(t.bos_token, 0) == 0;
  const std::vector<int32_t> ids = tok.encode(*out, !starts_with_bos, true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], tok.bos());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.bos()), 1);
}

}  // namespace
}  // namespace frugal
