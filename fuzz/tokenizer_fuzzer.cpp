// libFuzzer target: arbitrary bytes through the tokenizers' encode and decode.
//
// Input layout: byte 0 picks the tokenizer (modulo how many there are) and the flags, the rest is
// the text to encode, or (flag bit 5) a sequence of little-endian int32 ids to decode, any value.
// Tokenizers: small byte-level BPE vocabularies under several pre-tokenizers and small
// SentencePiece ones, built here like the unit tests build them, plus the real vocabularies of
// $FRUGAL_MODEL and $FRUGAL_GEMMA_MODEL when those name GGUF files.
//
// Properties beyond "no crash, no sanitizer report, no hang": every id is inside the vocabulary,
// and decoding gives the text back where the format promises it (valid UTF-8; for SentencePiece
// with byte fallback, text without the "▁" meta symbol that SentencePiece itself maps to a space).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_vocab.h"
#include "io/tokenizer.h"
#include "io/utf8.h"

namespace {

using frugal::append_utf8;

using frugal::TokenId;
using frugal::TokenType;
using frugal::VocabData;

struct Entry {
  std::string name;
  std::unique_ptr<frugal::Tokenizer> tokenizer;
};
std::vector<Entry>* g_tokenizers = nullptr;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "tokenizer_fuzzer: %s\n", what.c_str());
  std::abort();
}

// GPT-2's byte-to-unicode table (printable bytes stand for themselves, the rest U+0100 onwards).
std::string byte_char(int byte) {
  static std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      append_utf8(t[b], printable ? b : next++);
    }
    return t;
  }();
  return table[static_cast<size_t>(byte)];
}

VocabData tiny_bpe(const std::string& pre) {
  VocabData d;
  d.model = "gpt2";
  d.pre = pre;
  auto add = [&](const std::string& text, TokenType type) {
    d.tokens.push_back(text);
    d.types.push_back(type);
    return static_cast<TokenId>(d.tokens.size() - 1);
  };
  for (int b = 0; b < 256; ++b) add(byte_char(b), TokenType::kNormal);
  const std::string space = byte_char(' '), newline = byte_char('\n');
  const std::pair<std::string, std::string> merges[] = {
      {"h", "e"}, {space, "t"}, {space + "t", "he"}, {"l", "l"}, {"'", "ll"}, {space, "w"}, {"o", "r"},
      {space + "w", "or"}, {newline, newline}, {space, space}, {"1", "2"}, {"Ã", "©"}, {"e", "r"}};
  for (const auto& [left, right] : merges) {
    d.merges.push_back(left + " " + right);
    add(left + right, TokenType::kNormal);
  }
  add(space + "xyz", TokenType::kNormal);
  d.eos_id = add("<|endoftext|>", TokenType::kControl);
  d.bos_id = d.eos_id;
  add("<|im_start|>", TokenType::kControl);
  d.eot_id = add("<|im_end|>", TokenType::kControl);
  add("<tool>", TokenType::kUserDefined);
  add("<", TokenType::kUserDefined);  // a user-defined token that is a prefix of the others
  return d;
}

VocabData tiny_spm(bool byte_fallback, bool space_prefix) {
  VocabData d;
  d.model = "llama";
  d.add_space_prefix = space_prefix;
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
    for (int b = 0; b < 256; ++b) add(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, TokenType::kByte);
  }
  const std::string s = "\xE2\x96\x81";  // ▁
  for (const char* c : {"h", "e", "l", "o", "w", "r", "d", "a", "b", "c", " ", "\xC3\xA9"}) add(c, -10, TokenType::kNormal);
  add(s, -10, TokenType::kNormal);
  add("ll", -1, TokenType::kNormal);
  add("he", -2, TokenType::kNormal);
  add("llo", -3, TokenType::kNormal);
  add(s + "he", -4, TokenType::kNormal);
  add(s + "h", -5, TokenType::kNormal);
  add(s + "hello", -6, TokenType::kNormal);
  add("ab", -7, TokenType::kNormal);
  add("bc", -7, TokenType::kNormal);
  add(s + s, -8, TokenType::kNormal);
  add("<unused0>", 0, TokenType::kUnused);
  add("<start_of_turn>", 0, TokenType::kUserDefined);
  return d;
}

void add_tokenizer(const std::string& name, VocabData data) {
  auto tok = frugal::Tokenizer::create(std::move(data));
  if (!tok) fail("cannot build the " + name + " tokenizer: " + tok.status().message());
  g_tokenizers->push_back({name, std::move(tok).value()});
}

void add_real_tokenizer(const char* variable) {
  const char* path = std::getenv(variable);
  if (path == nullptr || *path == '\0') return;
  auto file = frugal::GgufFile::open(path);
  if (!file) fail(std::string("$") + variable + ": " + file.status().message());
  auto tok = frugal::load_tokenizer(*file.value());
  if (!tok) fail(std::string("$") + variable + ": " + tok.status().message());
  g_tokenizers->push_back({path, std::move(tok).value()});
}

// Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): the text the
// tokenizers promise to give back unchanged.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; min = 0x10000; }
    else return false;
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_tokenizers = new std::vector<Entry>();
  for (const char* pre : {"smollm", "llama3", "gpt-2", "qwen2", "default"}) add_tokenizer(std::string("bpe-") + pre, tiny_bpe(pre));
  add_tokenizer("spm-bytes", tiny_spm(true, true));
  add_tokenizer("spm-unknown", tiny_spm(false, true));
  add_tokenizer("spm-no-prefix", tiny_spm(true, false));
  add_real_tokenizer("FRUGAL_MODEL");
  add_real_tokenizer("FRUGAL_GEMMA_MODEL");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t selector = data[0];
  const Entry& entry = (*g_tokenizers)[(selector & 0x0F) % g_tokenizers->size()];
  const frugal::Tokenizer& tok = *entry.tokenizer;
  const bool add_special = (selector & 0x10) != 0;
  const bool parse_special = (selector & 0x40) != 0;
  const bool render_special = (selector & 0x80) != 0;
  const int32_t n_vocab = tok.vocab_size();

  if ((selector & 0x20) != 0) {
    // Decode ids that no encoder produced: out of range, negative, control tokens anywhere.
    std::vector<TokenId> ids((size - 1) / 4);
    if (!ids.empty()) std::memcpy(ids.data(), data + 1, ids.size() * 4);
    (void)tok.decode(ids, render_special);
    for (TokenId id : ids) (void)tok.is_end_of_generation(id);
    return 0;
  }

  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::vector<TokenId> ids = tok.encode(text, add_special, parse_special);
  for (TokenId id : ids) {
    if (id < 0 || id >= n_vocab) fail(entry.name + ": encode gave id " + std::to_string(id));
  }
  const std::string decoded = tok.decode(ids, parse_special || render_special);
  if (!valid_utf8(text)) return 0;
  const VocabData& v = tok.vocab();
  if (v.model == "gpt2") {
    // Byte-level BPE gives back every byte the vocabulary has a token for (SmolLM2's lacks a few
    // control bytes, which are dropped as llama.cpp drops them); special tokens (parsed or added)
    // render as their text.
    std::string expected;
    for (char c : text) {
      if (tok.find_token(byte_char(static_cast<unsigned char>(c))) >= 0) expected += c;
    }
    if (add_special && v.add_bos && v.bos_id >= 0) expected = (parse_special || render_special ? v.tokens[v.bos_id] : "") + expected;
    if (add_special && v.add_eos && v.eos_id >= 0) expected += parse_special || render_special ? v.tokens[v.eos_id] : "";
    if (decoded != expected) fail(entry.name + ": decode(encode(text)) differs from the text");
  } else {
    const bool byte_fallback = tok.find_token("<0x00>") >= 0;
    const bool meta_symbol = text.find("\xE2\x96\x81") != std::string::npos;
    // User-defined tokens are cut out of the text even without parse_special, and the text after
    // one gets the space prefix again (llama.cpp does the same), so it does not round-trip.
    bool user_defined = false;
    for (size_t i = 0; v.add_space_prefix && !user_defined && i < v.types.size(); ++i) {
      user_defined = v.types[i] == TokenType::kUserDefined && text.find(v.tokens[i]) != std::string::npos;
    }
    // Special tokens render as nothing here, and the added BOS/EOS with them.
    if (byte_fallback && !meta_symbol && !user_defined && !parse_special && !render_special && decoded != text) {
      fail(entry.name + ": decode(encode(text)) differs from the text");
    }
  }
  return 0;
}
