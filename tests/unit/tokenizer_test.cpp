// Unit tests of the tokenizers on small hand-made vocabularies: byte-level BPE (GPT-2 style),
// SentencePiece BPE with byte fallback, special tokens, decode round trips and create() errors.
#include "io/tokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace frugal {
namespace {

// GPT-2's byte-to-unicode mapping, written out again here so the test does not trust the code
// under test: printable Latin-1 stands for itself, the rest gets U+0100, U+0101, ... in order.
std::string byte_char(int byte) {
  const bool printable =
      (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
  int code_point = byte;
  if (!printable) {
    int n = 0;
    for (int b = 0; b < byte; ++b) {
      const bool p = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      if (!p) ++n;
    }
    code_point = 256 + n;
  }
  std::string out;
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
  return out;
}

TEST(ByteToUnicode, MatchesGpt2) {
  EXPECT_EQ(byte_char(' '), "\xC4\xA0");   // Ġ U+0120
  EXPECT_EQ(byte_char('\n'), "\xC4\x8A");  // Ċ U+010A
  EXPECT_EQ(byte_char('\t'), "\xC4\x89");  // ĉ U+0109
  EXPECT_EQ(byte_char('a'), "a");
}

// A vocabulary with all 256 byte tokens (id == byte value), a few merges and special tokens.
struct TinyBpe {
  VocabData data;
  TokenId add(const std::string& text, TokenType type = TokenType::kNormal) {
    data.tokens.push_back(text);
    data.types.push_back(type);
    return static_cast<TokenId>(data.tokens.size() - 1);
  }
  TokenId id(const std::string& text) const {
    for (size_t i = 0; i < data.tokens.size(); ++i) {
      if (data.tokens[i] == text) return static_cast<TokenId>(i);
    }
    ADD_FAILURE() << "no token " << text;
    return -1;
  }
  // Adds the merge "left right" and its result as a token.
  void merge(const std::string& left, const std::string& right) {
    data.merges.push_back(left + " " + right);
    add(left + right);
  }
};

const std::string kSpace = "\xC4\xA0";    // Ġ
const std::string kNewline = "\xC4\x8A";  // Ċ

TinyBpe make_tiny_bpe(const std::string& pre) {
  TinyBpe v;
  v.data.model = "gpt2";
  v.data.pre = pre;
  for (int b = 0; b < 256; ++b) v.add(byte_char(b));
  v.merge("h", "e");              // he
  v.merge(kSpace, "t");           // Ġt
  v.merge(kSpace + "t", "he");    // Ġthe
  v.merge("l", "l");              // ll
  v.merge("'", "ll");             // 'll
  v.merge(kSpace, "w");           // Ġw
  v.merge("o", "r");              // or
  v.merge(kSpace + "w", "or");    // Ġwor
  v.merge(kSpace + "wor", "l");   // Ġworl
  v.merge(kSpace + "worl", "d");  // Ġworld
  v.merge(kNewline, kNewline);    // ĊĊ
  v.merge(kSpace, kSpace);        // ĠĠ
  v.merge("1", "2");              // 12
  v.add(kSpace + "xyz");          // a token no merge produces
  v.data.eos_id = v.add("<|endoftext|>", TokenType::kControl);
  v.add("<|im_start|>", TokenType::kControl);
  v.add("<|im_end|>", TokenType::kControl);
  v.add("<tool>", TokenType::kUserDefined);
  v.add("XYZ", TokenType::kControl);
  v.add("WX", TokenType::kControl);
  v.data.bos_id = v.data.eos_id;
  return v;
}

std::unique_ptr<Tokenizer> create_or_die(VocabData data) {
  auto result = Tokenizer::create(std::move(data));
  EXPECT_TRUE(result.is_ok()) << result.status().message();
  if (!result.is_ok()) return nullptr;
  return std::move(result).value();
}

std::vector<TokenId> bytes_of(const std::string& text) {
  std::vector<TokenId> ids;
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

TEST(ByteLevelBpe, MergesByRank) {
  TinyBpe v = make_tiny_bpe("gpt-2");
  auto tok = create_or_die(v.data);
  ASSERT_NE(tok, nullptr);
  // "the": "h e" (rank 0) applies, there is no "t he" merge.
  EXPECT_EQ(tok->encode("the", false, false), (std::vector<TokenId>{'t', v.id("he")}));
  // " the": "h e" first, then "Ġ t", then "Ġt he".
  EXPECT_EQ(tok->encode(" the", false, false), (std::vector<TokenId>{v.id(kSpace + "the")}));
  EXPECT_EQ(tok->encode("the world", false, false),
            (std::vector<TokenId>{'t', v.id("he"), v.id(kSpace + "world")}));
}

TEST(ByteLevelBpe, Gpt2PreTokenizer) {
  TinyBpe v = make_tiny_bpe("gpt-2");
  auto tok = create_or_die(v.data);
  ASSERT_NE(tok, nullptr);
  // Contractions are their own words: "I" + "'ll".
  EXPECT_EQ(tok->encode("I'll", false, false), (std::vector<TokenId>{'I', v.id("'ll")}));
  // GPT-2 splits "\n\n" before a letter into two words, so the ĊĊ merge does not apply.
  EXPECT_EQ(tok->encode("a\n\nb", false, false), (std::vector<TokenId>{'a', '\n', '\n', 'b'}));
  // Runs of spaces: all but the last space form a word, the last one goes with the next word.
  EXPECT_EQ(tok->encode("a   b", false, false),
            (std::vector<TokenId>{'a', v.id(kSpace + kSpace), ' ', 'b'}));
  // Trailing spaces stay together.
  EXPECT_EQ(tok->encode("x  ", false, false), (std::vector<TokenId>{'x', v.id(kSpace + kSpace)}));
  // Digits stay in one word: "123" -> "12" "3".
  EXPECT_EQ(tok->encode("123", false, false), (std::vector<TokenId>{v.id("12"), '3'}));
  EXPECT_EQ(tok->encode("", true, true), (std::vector<TokenId>{}));
}

TEST(ByteLevelBpe, PreTokenizerFamilies) {
  {
    // SmolLM: every digit on its own, so no "12".
    auto tok = create_or_die(make_tiny_bpe("smollm").data);
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->encode("123", false, false), (std::vector<TokenId>{'1', '2', '3'}));
    EXPECT_EQ(tok->encode(" 12", false, false), (std::vector<TokenId>{' ', '1', '2'}));
  }
  {
    // Llama 3: digits in groups of three, "\n\n" is one word, a word that is a token is taken
    // whole (ignore_merges) even though no merge makes "Ġxyz".
    TinyBpe v = make_tiny_bpe("llama-bpe");
    auto tok = create_or_die(v.data);
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->encode("1234", false, false), (std::vector<TokenId>{v.id("12"), '3', '4'}));
    EXPECT_EQ(tok->encode("a\n\nb", false, false),
              (std::vector<TokenId>{'a', v.id(kNewline + kNewline), 'b'}));
    EXPECT_EQ(tok->encode(" xyz", false, false), (std::vector<TokenId>{v.id(kSpace + "xyz")}));
  }
  {
    // GPT-2 has no ignore_merges: " xyz" is built by merges only.
    auto tok = create_or_die(make_tiny_bpe("gpt-2").data);
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->encode(" xyz", false, false), (std::vector<TokenId>{' ', 'x', 'y', 'z'}));
  }
  {
    // Qwen2: single digits, but letters take one leading non-letter (here the apostrophe
    // contraction comes first).
    TinyBpe v = make_tiny_bpe("qwen2");
    auto tok = create_or_die(v.data);
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->encode("123", false, false), (std::vector<TokenId>{'1', '2', '3'}));
    EXPECT_EQ(tok->encode("I'LL", false, false), bytes_of("I'LL"));
  }
}

TEST(ByteLevelBpe, UnknownPreFallsBackToGpt2WithWarning) {
  testing::internal::CaptureStderr();
  auto tok = create_or_die(make_tiny_bpe("no-such-pre").data);
  const std::string warning = testing::internal::GetCapturedStderr();
  ASSERT_NE(tok, nullptr);
  EXPECT_NE(warning.find("no-such-pre"), std::string::npos) << warning;
  EXPECT_EQ(tok->encode("123", false, false).size(), 2u);  // GPT-2: "12" "3"
}

TEST(ByteLevelBpe, SpecialTokens) {
  TinyBpe v = make_tiny_bpe("smollm");
  auto tok = create_or_die(v.data);
  ASSERT_NE(tok, nullptr);
  const TokenId start = v.id("<|im_start|>");
  const TokenId end = v.id("<|im_end|>");
  EXPECT_EQ(tok->encode("<|im_start|>user\nhi<|im_end|>", false, true),
            (std::vector<TokenId>{start, 'u', 's', 'e', 'r', '\n', 'h', 'i', end}));
  // Without parse_special the control tokens are plain text...
  const std::string text = "<|im_start|>hi";
  const std::vector<TokenId> plain = tok->encode(text, false, false);
  for (TokenId id : plain) EXPECT_LT(id, 256);
  EXPECT_EQ(tok->decode(plain), text);
  // ...but user-defined tokens are always cut out.
  EXPECT_EQ(tok->encode("a<tool>b", false, false),
            (std::vector<TokenId>{'a', v.id("<tool>"), 'b'}));
  // Longer special tokens are cut out first, wherever they are (llama.cpp's rule).
  EXPECT_EQ(tok->encode("WXYZ", false, true), (std::vector<TokenId>{'W', v.id("XYZ")}));
  EXPECT_EQ(tok->encode("<|im_start|><|im_start|>", false, true),
            (std::vector<TokenId>{start, start}));
  // A half special token is text.
  EXPECT_EQ(tok->encode("<|im_start", false, true), tok->encode("<|im_start", false, false));
}

TEST(ByteLevelBpe, AddsBosAndEos) {
  TinyBpe v = make_tiny_bpe("gpt-2");
  v.data.add_bos = true;
  v.data.add_eos = true;
  auto tok = create_or_die(v.data);
  ASSERT_NE(tok, nullptr);
  const TokenId eot = v.id("<|endoftext|>");
  EXPECT_EQ(tok->encode("a", true, false), (std::vector<TokenId>{eot, 'a', eot}));
  EXPECT_EQ(tok->encode("a", false, false), (std::vector<TokenId>{'a'}));
  EXPECT_EQ(tok->encode("", true, false), (std::vector<TokenId>{eot, eot}));
}

TEST(ByteLevelBpe, PiecesUndoTheByteMapping) {
  TinyBpe v = make_tiny_bpe("gpt-2");
  auto tok = create_or_die(v.data);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->token_to_piece(' '), " ");
  EXPECT_EQ(tok->token_to_piece('\n'), "\n");
  EXPECT_EQ(tok->token_to_piece(0xC3), "\xC3");
  EXPECT_EQ(tok->token_to_piece(v.id(kSpace + "world")), " world");
  EXPECT_EQ(tok->token_to_piece(v.id("<|im_end|>")), "");
  EXPECT_EQ(tok->token_to_piece(v.id("<|im_end|>"), true), "<|im_end|>");
  EXPECT_EQ(tok->token_to_piece(v.id("<tool>")), "<tool>");
  EXPECT_EQ(tok->token_to_piece(-1), "");
  EXPECT_EQ(tok->token_to_piece(tok->vocab_size()), "");
  EXPECT_EQ(tok->decode(tok->encode("<|im_start|>x", false, true), true), "<|im_start|>x");
  EXPECT_EQ(tok->decode(tok->encode("<|im_start|>x", false, true), false), "x");
}

TEST(ByteLevelBpe, RoundTripsAnyUtf8) {
  for (const char* pre : {"gpt-2", "smollm", "llama3", "qwen2", "default"}) {
    auto tok = create_or_die(make_tiny_bpe(pre).data);
    ASSERT_NE(tok, nullptr);
    const std::vector<std::string> texts = {
        "Hello world, don't I'll we're 1234567890",
        "Héllo café naïve — Ångström, e\xCC\x81",    // precomposed and combining accents
        "日本語のテキスト。中文测试，你好！한국어",  // CJK
        "Привет, мир! Как дела?",                    // Cyrillic
        "مرحبا بالعالم",                             // Arabic
        "family \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 "
        "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",  // emoji with ZWJ and skin tone
        "def f(x):\n\treturn x  *  2\n\n\n    indented\r\n",
        "     leading and trailing     ",
        "\t\t\t\n \n\u00a0\u3000\u2003x",
        "$$$ !!! ??? ... <|not special|> 'S 'll",
        std::string("nul\0byte", 8),
        "\x01\x02\x7f control bytes",
    };
    for (const std::string& text : texts) {
      EXPECT_EQ(tok->decode(tok->encode(text, false, false)), text) << pre << ": " << text;
      EXPECT_EQ(tok->decode(tok->encode(text, true, true), true), text) << pre << ": " << text;
    }
  }
}

TEST(ByteLevelBpe, InvalidUtf8BecomesReplacementCharacters) {
  auto tok = create_or_die(make_tiny_bpe("gpt-2").data);
  ASSERT_NE(tok, nullptr);
  // As in llama.cpp: each byte that is not part of a valid sequence becomes U+FFFD.
  EXPECT_EQ(tok->decode(tok->encode("a\xFF"
                                    "b\xC3",
                                    false, false)),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  EXPECT_EQ(tok->decode(tok->encode("\xE6\x97", false, false)), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

// Found by fuzz/tokenizer_fuzzer.cpp on SmolLM2's vocabulary, which has no token for a few
// control bytes (0x04, 0x1D, ...) and names <|endoftext|> as its unknown token: such a byte is
// dropped, as llama.cpp drops it, never replaced by the unknown token.
TEST(ByteLevelBpe, ByteWithoutATokenIsDropped) {
  TinyBpe v = make_tiny_bpe("smollm");
  v.data.tokens[0x1D] = "<unused_1d>";
  v.data.types[0x1D] = TokenType::kUnused;
  v.data.unknown_id = v.data.eos_id;
  auto tok = create_or_die(v.data);
  ASSERT_NE(tok, nullptr);
  // The fuzzer's input: "\0l]<en\\Zfnr" 0x1D "\0"x7 "o>lo w28ld" (tests/../fuzz/regressions).
  const std::string text = std::string("\0l]<en\\Zfnr\x1d", 12) + std::string(7, '\0') + "o>lo w28ld";
  std::string without = text;
  without.erase(11, 1);
  const std::vector<TokenId> ids = tok->encode(text, false, true);
  for (TokenId id : ids) EXPECT_NE(id, v.data.eos_id);
  EXPECT_EQ(ids, tok->encode(without, false, true));
  EXPECT_EQ(tok->decode(ids, true), without);
  EXPECT_EQ(tok->encode("a\x1d" "b", false, false), (std::vector<TokenId>{'a', 'b'}));
}

TEST(ByteLevelBpe, LongRunsAreFast) {
  auto tok = create_or_die(make_tiny_bpe("llama3").data);
  ASSERT_NE(tok, nullptr);
  std::string text(200000, ' ');
  text += std::string(100000, '!') + std::string(100000, '\n') + std::string(100000, 'l');
  // Quadratic merging would take minutes here.
  EXPECT_EQ(tok->decode(tok->encode(text, false, false)), text);
}

TEST(ByteLevelBpe, EncodeIsThreadSafe) {
  auto tok = create_or_die(make_tiny_bpe("smollm").data);
  ASSERT_NE(tok, nullptr);
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the world <|im_start|>I'll 12345 café\n";
  const std::vector<TokenId> expected = tok->encode(text, true, true);
  std::vector<std::vector<TokenId>> results(4);
  std::vector<std::thread> threads;
  for (auto& result : results) {
    threads.emplace_back([&] { result = tok->encode(text, true, true); });
  }
  for (auto& t : threads) t.join();
  for (const auto& result : results) EXPECT_EQ(result, expected);
}

TEST(Tokenizer, EndOfGenerationAndFindToken) {
  TinyBpe v = make_tiny_bpe("gpt-2");
  v.data.eos_id = 'a';  // an odd choice, to see that the metadata is followed
  v.data.eot_id = 'b';
  auto tok = create_or_die(v.data);
  ASSERT_NE(tok, nullptr);
  EXPECT_TRUE(tok->is_end_of_generation('a'));
  EXPECT_TRUE(tok->is_end_of_generation('b'));
  EXPECT_TRUE(tok->is_end_of_generation(v.id("<|im_end|>")));  // known end-of-turn texts
  EXPECT_TRUE(tok->is_end_of_generation(v.id("<|endoftext|>")));
  EXPECT_FALSE(tok->is_end_of_generation(v.id("<|im_start|>")));
  EXPECT_FALSE(tok->is_end_of_generation('c'));
  EXPECT_FALSE(tok->is_end_of_generation(-1));
  EXPECT_FALSE(tok->is_end_of_generation(1 << 20));
  EXPECT_EQ(tok->find_token(kSpace + "the"), v.id(kSpace + "the"));
  EXPECT_EQ(tok->find_token("<|im_start|>"), v.id("<|im_start|>"));
  EXPECT_EQ(tok->find_token("nope"), -1);
  EXPECT_EQ(tok->find_token(""), -1);
  EXPECT_EQ(tok->vocab_size(), static_cast<int32_t>(v.data.tokens.size()));
}

// SentencePiece: "<unk>", "<s>", "</s>", 256 byte tokens, then scored pieces.
VocabData make_tiny_spm(bool byte_fallback) {
  VocabData d;
  d.model = "llama";
  d.add_space_prefix = true;
  d.add_bos = true;
  d.bos_id = 1;
  d.eos_id = 2;
  d.unknown_id = 0;
  auto add = [&](const std::string& text, float score, TokenType type) {
    d.tokens.push_back(text);
    d.scores.push_back(score);
    d.types.push_back(type);
  };
  add("<unk>", 0, TokenType::kUnknown);
  add("<s>", 0, TokenType::kControl);
  add("</s>", 0, TokenType::kControl);
  if (byte_fallback) {
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      add(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, TokenType::kByte);
    }
  }
  const std::string s = "\xE2\x96\x81";  // ▁
  for (const char* c : {"h", "e", "l", "o", "w", "r", "d", "a", "b", "c"})
    add(c, -10, TokenType::kNormal);
  add(s, -10, TokenType::kNormal);
  add("ll", -1, TokenType::kNormal);
  add("he", -2, TokenType::kNormal);
  add("llo", -3, TokenType::kNormal);
  add(s + "he", -4, TokenType::kNormal);
  add(s + "h", -5, TokenType::kNormal);
  add(s + "hello", -6, TokenType::kNormal);
  add("ab", -7, TokenType::kNormal);
  add("bc", -7, TokenType::kNormal);
  add("<unused0>", 0, TokenType::kUnused);
  return d;
}

TokenId spm_id(const Tokenizer& tok, const std::string& text) {
  const TokenId id = tok.find_token(text);
  EXPECT_GE(id, 0) << text;
  return id;
}

TEST(SentencePieceBpe, MergesByScore) {
  auto tok = create_or_die(make_tiny_spm(true));
  ASSERT_NE(tok, nullptr);
  const std::string s = "\xE2\x96\x81";
  // ll (-1), he (-2), llo (-3), ▁he (-4), then ▁hello (-6).
  EXPECT_EQ(tok->encode("hello", false, false), (std::vector<TokenId>{spm_id(*tok, s + "hello")}));
  EXPECT_EQ(tok->encode("hello", true, false),
            (std::vector<TokenId>{1, spm_id(*tok, s + "hello")}));
  // Equal scores: the leftmost pair first, "ab" + "c" rather than "a" + "bc".
  EXPECT_EQ(tok->encode("abc", false, false),
            (std::vector<TokenId>{spm_id(*tok, s), spm_id(*tok, "ab"), spm_id(*tok, "c")}));
  // Spaces become "▁".
  EXPECT_EQ(tok->encode("hello hello", false, false),
            (std::vector<TokenId>{spm_id(*tok, s + "hello"), spm_id(*tok, s + "hello")}));
}

TEST(SentencePieceBpe, ByteFallbackAndUnknown) {
  const std::string s = "\xE2\x96\x81";
  {
    auto tok = create_or_die(make_tiny_spm(true));
    ASSERT_NE(tok, nullptr);
    // "é" is not a piece: its two UTF-8 bytes become <0xC3> <0xA9> (byte ids are 3 + byte).
    EXPECT_EQ(tok->encode("\xC3\xA9", false, false),
              (std::vector<TokenId>{spm_id(*tok, s), 3 + 0xC3, 3 + 0xA9}));
    EXPECT_EQ(tok->token_to_piece(3 + 0xC3), "\xC3");
    for (const std::string text : {"hello wörld", "日本語", "a\tb\n\nc  d", "\xF0\x9F\x91\x8D"}) {
      EXPECT_EQ(tok->decode(tok->encode(text, true, false)), text);
    }
  }
  {
    // Without byte tokens an unknown character becomes <unk>.
    auto tok = create_or_die(make_tiny_spm(false));
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->encode("h\xC3\xA9", false, false),
              (std::vector<TokenId>{spm_id(*tok, s + "h"), 0}));
  }
}

TEST(SentencePieceBpe, SpecialTokensAndPieces) {
  auto tok = create_or_die(make_tiny_spm(true));
  ASSERT_NE(tok, nullptr);
  const std::string s = "\xE2\x96\x81";
  // Text after a special token gets the space prefix again (llama.cpp does the same).
  EXPECT_EQ(tok->encode("hello</s>hello", false, true),
            (std::vector<TokenId>{spm_id(*tok, s + "hello"), 2, spm_id(*tok, s + "hello")}));
  EXPECT_EQ(tok->token_to_piece(spm_id(*tok, s + "hello")), " hello");
  EXPECT_EQ(tok->token_to_piece(1), "");
  EXPECT_EQ(tok->token_to_piece(1, true), "<s>");
  EXPECT_EQ(tok->token_to_piece(spm_id(*tok, "<unused0>"), true), "");
  // decode drops the space that add_space_prefix put in front.
  EXPECT_EQ(tok->decode({1, spm_id(*tok, s + "hello"), spm_id(*tok, s + "hello")}), "hello hello");
  EXPECT_TRUE(tok->is_end_of_generation(2));
  EXPECT_FALSE(tok->is_end_of_generation(1));
}

TEST(SentencePieceBpe, NoSpacePrefix) {
  VocabData d = make_tiny_spm(true);
  d.add_space_prefix = false;  // as in Gemma
  auto tok = create_or_die(d);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->encode("hello", false, false),
            (std::vector<TokenId>{spm_id(*tok, "he"), spm_id(*tok, "llo")}));
  EXPECT_EQ(tok->decode(tok->encode(" hello", false, false)), " hello");
}

std::string create_error(VocabData data) {
  auto result = Tokenizer::create(std::move(data));
  EXPECT_FALSE(result.is_ok());
  return result.is_ok() ? "" : result.status().message();
}

bool contains(const std::string& message, const std::string& part) {
  return message.find(part) != std::string::npos;
}

TEST(TokenizerCreate, RejectsBadVocabularies) {
  {
    VocabData d = make_tiny_bpe("gpt-2").data;
    d.model = "bert";
    EXPECT_PRED2(contains, create_error(d), "unsupported tokenizer model 'bert'");
  }
  {
    VocabData d;
    d.model = "gpt2";
    EXPECT_PRED2(contains, create_error(d), "empty");
  }
  {
    VocabData d = make_tiny_bpe("gpt-2").data;
    d.merges.push_back("a zz");
    EXPECT_PRED2(contains, create_error(d), "'zz', which is not a token");
    EXPECT_PRED2(contains, create_error(d), "tokenizer.ggml.merges[13]");
  }
  {
    VocabData d = make_tiny_bpe("gpt-2").data;
    d.merges.push_back("abc");
    EXPECT_PRED2(contains, create_error(d), "not of the form");
  }
  {
    VocabData d = make_tiny_bpe("gpt-2").data;
    d.merges.push_back("q q");  // "qq" is not a token
    EXPECT_PRED2(contains, create_error(d), "makes 'qq', which is not a token");
  }
  {
    VocabData d = make_tiny_bpe("gpt-2").data;
    d.scores.assign(3, 0.0f);
    EXPECT_PRED2(contains, create_error(d), "tokenizer.ggml.scores has 3 entries");
  }
  {
    VocabData d = make_tiny_bpe("gpt-2").data;
    d.types.pop_back();
    EXPECT_PRED2(contains, create_error(d), "tokenizer.ggml.token_type");
  }
  {
    VocabData d = make_tiny_bpe("gpt-2").data;
    d.bos_id = 100000;
    EXPECT_PRED2(contains, create_error(d), "bos token id 100000 is outside the vocabulary");
  }
  {
    VocabData d = make_tiny_bpe("gpt-2").data;
    d.bos_id = -1;
    d.add_bos = true;
    EXPECT_PRED2(contains, create_error(d), "no BOS token id");
  }
  {
    VocabData d = make_tiny_spm(true);
    d.scores.clear();
    EXPECT_PRED2(contains, create_error(d), "tokenizer.ggml.scores");
  }
}

// A copy (clone) must own everything it reads: it used to share a lookup table that pointed into
// the original's token list, so after the original was destroyed the copy read freed memory.
// Another tokenizer is created right after the original is freed, so that its storage most
// likely takes the freed place and a copy still reading there gets visibly wrong answers (under
// AddressSanitizer the read itself is the failure).
TEST(Tokenizer, CopyOutlivesTheOriginal) {
  const std::vector<std::string> texts = {"the world'll hello 12", " <|im_start|>hi\n\n<|im_end|>", "abc  héllo wörld"};
  for (const bool sentencepiece : {false, true}) {
    SCOPED_TRACE(sentencepiece ? "sentencepiece" : "byte-level");
    VocabData data = sentencepiece ? make_tiny_spm(true) : make_tiny_bpe("gpt-2").data;
    auto original = create_or_die(data);
    ASSERT_NE(original, nullptr);
    std::vector<std::vector<TokenId>> encoded;
    std::vector<std::string> decoded;
    for (const auto& text : texts) {
      encoded.push_back(original->encode(text, true, true));
      decoded.push_back(original->decode(encoded.back(), true));
    }
    std::unique_ptr<Tokenizer> copy = original->clone();
    original.reset();
    VocabData other = data;
    for (auto& token : other.tokens) token = "~" + token + "~";
    other.merges.clear();
    auto replacement = create_or_die(other);
    ASSERT_NE(replacement, nullptr);
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(copy->encode(texts[i], true, true), encoded[i]) << texts[i];
      EXPECT_EQ(copy->decode(encoded[i], true), decoded[i]) << texts[i];
    }
    for (size_t id = 0; id < data.tokens.size(); ++id) {
      if (data.tokens[id].empty()) continue;
      // Of two equal texts the later id wins, so compare texts rather than ids.
      const TokenId found = copy->find_token(data.tokens[id]);
      ASSERT_GE(found, 0) << data.tokens[id];
      EXPECT_EQ(data.tokens[found], data.tokens[id]);
    }
  }
}

// A byte-typed token that is not "<0xXX>" (hostile or broken file) is not a byte piece; it used to
// reach std::stoi, which threw std::invalid_argument out of Tokenizer::create.
TEST(Tokenizer, MalformedByteTokenDoesNotThrow) {
  for (const bool sentencepiece : {false, true}) {
    VocabData data = sentencepiece ? make_tiny_spm(true) : make_tiny_bpe("gpt-2").data;
    data.tokens.push_back("<0xZZ>");
    data.types.push_back(TokenType::kByte);
    if (!data.scores.empty()) data.scores.push_back(-100.0f);
    std::unique_ptr<Tokenizer> tok;
    ASSERT_NO_THROW(tok = create_or_die(data));
    ASSERT_NE(tok, nullptr);
    EXPECT_NE(tok->token_to_piece(static_cast<TokenId>(data.tokens.size() - 1)).size(), 1u);
  }
}

}  // namespace
}  // namespace frugal
