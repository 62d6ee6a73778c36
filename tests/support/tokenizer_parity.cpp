// Token-id parity with llama-tokenize (see tokenizer_parity.h).
#include "support/tokenizer_parity.h"

#include <gtest/gtest.h>

#include <fstream>

#include "support/test_support.h"

namespace frugal::testing {

// The tokenizer cases compared with llama-tokenize (also listed in the closing note).
const std::vector<std::string>& tokenizer_cases() {
  static const std::vector<std::string> cases = {
    "Hello world",
    "The café in Zürich serves crème brûlée; naïve façade, Ångström, señor.",
    "日本語のテキストと中文文本，还有한국어 문장。",
    "Привет, как дела? Съешь же ещё этих мягких французских булок.",
    "مرحبا بالعالم، كيف حالك؟",
    "Family: 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tone 👍🏽, heart ❤️‍🔥",
    "def f(x):\n    if x > 0:\n\treturn x ** 2\n    return -x  # comment\n",
    "Numbers: 1234567890 3.14159 -42 1,000,000 2024-11-28 0x1F",
    "I don't think you'll see it; they're here, we've gone, she'd say I'm OK. DON'T",
    "runs   of    spaces     and\t\ttabs\n\n\nand newlines\r\n end  ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after a special token<|im_end|>",
    " leading space and trailing space ",
    "Mixed: Straße ΑΒΓ αβγ ﬁ ℃ № ½ ẞ",
    "URLs like https://example.com/a?b=c&d=e#f and e-mail a.b@c.org",
    "",
  };
  return cases;
}



void expect_same_ids_as_llama_tokenize(const Tokenizer& tokenizer, const std::string& model_path) {
  const std::string dir = temp_dir();
  const auto& cases = tokenizer_cases();
  int compared = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string& text = cases[i];
    std::vector<int32_t> ids = tokenizer.encode(text, true, true);
    if (text.empty()) {
      // llama-tokenize cannot read an empty file: the empty text gives just BOS, if the model adds one.
      EXPECT_EQ(ids, tokenizer.vocab().add_bos ? std::vector<int32_t>{tokenizer.bos()} : std::vector<int32_t>{});
      continue;
    }
    const std::string path = dir + "/case" + std::to_string(i) + ".txt";
    std::ofstream(path, std::ios::binary) << text;
    const auto r = run_command(shell_quote(peer_tool("llama-tokenize")) + " -m " + shell_quote(model_path) + " -f " +
                               shell_quote(path) + " --ids --log-disable");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_NE(r.out.rfind('['), std::string::npos) << r.out;
    std::string expected = r.out.substr(r.out.rfind('['));
    expected = expected.substr(0, expected.find(']') + 1);
    std::string ours = "[";
    for (size_t k = 0; k < ids.size(); ++k) ours += (k ? ", " : "") + std::to_string(ids[k]);
    ours += "]";
    EXPECT_EQ(ours, expected) << "text: " << text;
    // Round trip: the pieces give the text back (the BOS the tokenizer added aside).
    if (tokenizer.vocab().add_bos && !ids.empty() && ids[0] == tokenizer.bos()) ids.erase(ids.begin());
    EXPECT_EQ(tokenizer.decode(ids, true), text);
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(cases.size()) - 1);
}

}  // namespace frugal::testing
