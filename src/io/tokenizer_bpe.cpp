// Byte-level BPE (tokenizer.ggml.model "gpt2": GPT-2, SmolLM2, Llama 3, Qwen2): regex
// pre-tokenizer, GPT-2 byte-to-unicode mapping, merges applied by rank.
//
// Byte pair encoding for subwords: Sennrich et al. 2016, "Neural Machine Translation of Rare
// Words with Subword Units". Byte-level variant: Radford et al. 2019 (GPT-2), where every byte of
// the UTF-8 text is first mapped to a printable code point, so the vocabulary covers any input.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/tokenizer_internal.h"
#include "io/tokenizer_pretokenizer.h"

namespace frugal::detail {
namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
// themselves, the other 68 bytes (controls, space, 0x7F-0xA0, soft hyphen) take code points from
// U+0100 up, in byte order. So space is "Ġ" (U+0120) and newline "Ċ" (U+010A).
std::array<uint32_t, 256> byte_to_code_point_table() {
  std::array<uint32_t, 256> table{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    table[b] = printable ? b : next++;
  }
  return table;
}

// Decodes one UTF-8 code point at text[pos] (text is a token, assumed well formed); advances pos.
uint32_t next_code_point(std::string_view text, size_t& pos) {
  const auto lead = static_cast<uint8_t>(text[pos]);
  const size_t length = std::min(utf8_sequence_length(lead), text.size() - pos);
  uint32_t cp = length == 1 ? lead : lead & (0x7F >> length);
  for (size_t i = 1; i < length; ++i) cp = (cp << 6) | (static_cast<uint8_t>(text[pos + i]) & 0x3F);
  pos += length;
  return cp;
}

uint64_t pair_key(TokenId left, TokenId right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

std::string quoted(std::string_view text) {
  constexpr size_t kMax = 40;
  std::string out = "'";
  out += text.substr(0, kMax);
  if (text.size() > kMax) out += "...";
  return out + "'";
}

class ByteLevelBpeTokenizer final : public Tokenizer {
 public:
  explicit ByteLevelBpeTokenizer(VocabData data) : Tokenizer(std::move(data)) {}

  Status initialize() {
    bool ignore_merges = false;
    FRUGAL_ASSIGN_OR_RETURN(pre_tokenizer_,
                            RegexPreTokenizer::for_pre_name(data_.pre, &ignore_merges));
    ignore_merges_ = ignore_merges;

    const std::array<uint32_t, 256> code_points = byte_to_code_point_table();
    std::vector<int16_t> code_point_to_byte(kMappedCodePoints, -1);
    for (uint32_t b = 0; b < 256; ++b) {
      byte_chars_[b].clear();
      append_utf8(byte_chars_[b], code_points[b]);
      code_point_to_byte[code_points[b]] = static_cast<int16_t>(b);
      byte_tokens_[b] = find_token(byte_chars_[b]);
    }

    merges_.reserve(data_.merges.size());
    std::string merged;
    for (size_t i = 0; i < data_.merges.size(); ++i) {
      const std::string& merge = data_.merges[i];
      const auto where = [&] {
        return "tokenizer.ggml.merges[" + std::to_string(i) + "] " + quoted(merge);
      };
      // The separator is the first space after the first byte (a left part is never empty).
      const size_t space = merge.find(' ', 1);
      if (space == std::string::npos) {
        return Status::error(where() + " is not of the form 'left right'");
      }
      const std::string_view left(merge.data(), space);
      const std::string_view right(merge.data() + space + 1, merge.size() - space - 1);
      const TokenId left_id = find_token(left);
      const TokenId right_id = find_token(right);
      if (left_id < 0)
        return Status::error(where() + " names " + quoted(left) + ", which is not a token");
      if (right_id < 0) {
        return Status::error(where() + " names " + quoted(right) + ", which is not a token");
      }
      merged.assign(left);
      merged.append(right);
      const TokenId merged_id = find_token(merged);
      if (merged_id < 0) {
        return Status::error(where() + " makes " + quoted(merged) + ", which is not a token");
      }
      // A repeated pair keeps its first (best) rank.
      merges_.try_emplace(pair_key(left_id, right_id), Merge{static_cast<int32_t>(i), merged_id});
    }

    // What each token stands for: normal tokens are undone through the byte mapping; code points
    // outside the mapping (none in real vocabularies) are kept as UTF-8.
    pieces_.resize(data_.tokens.size());
    for (size_t id = 0; id < data_.tokens.size(); ++id) {
      const std::string& text = data_.tokens[id];
      const TokenType type = index_->types[id];
      if (type == TokenType::kNormal) {
        std::string bytes;
        for (size_t pos = 0; pos < text.size();) {
          const size_t start = pos;
          const uint32_t cp = next_code_point(text, pos);
          if (cp < kMappedCodePoints && code_point_to_byte[cp] >= 0) {
            bytes += static_cast<char>(code_point_to_byte[cp]);
          } else {
            bytes.append(text, start, pos - start);
          }
        }
        pieces_[id] = std::move(bytes);
      } else if (type == TokenType::kByte && byte_token_value(text) >= 0) {
        pieces_[id] = std::string(1, static_cast<char>(byte_token_value(text)));
      } else if (type == TokenType::kUserDefined || type == TokenType::kControl ||
                 type == TokenType::kUnknown) {
        pieces_[id] = text;
      }
      // Unused and undefined tokens stand for nothing (as in llama.cpp).
    }
    return Status::ok();
  }

  std::unique_ptr<Tokenizer> clone() const override { return std::make_unique<ByteLevelBpeTokenizer>(*this); }

  std::vector<TokenId> encode(std::string_view text, bool add_special,
                              bool parse_special) const override {
    std::vector<TokenId> out;
    if (add_special && data_.add_bos) out.push_back(data_.bos_id);
    std::vector<Fragment> fragments;
    index_->specials.split(text, parse_special, fragments);
    Workspace work;
    for (const Fragment& fragment : fragments) {
      if (fragment.special >= 0) {
        out.push_back(fragment.special);
      } else {
        encode_text(text.substr(fragment.begin, fragment.end - fragment.begin), work, out);
      }
    }
    if (add_special && data_.add_eos) out.push_back(data_.eos_id);
    return out;
  }

  std::string token_to_piece(TokenId id, bool render_special) const override {
    if (id < 0 || id >= vocab_size()) return {};
    const TokenType type = index_->types[id];
    if ((type == TokenType::kControl || type == TokenType::kUnknown) && !render_special) return {};
    return pieces_[id];
  }

 private:
  struct Merge {
    int32_t rank;
    TokenId result;
  };
  struct Symbol {
    TokenId id;  // -1: a byte the vocabulary has no token for
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t right;
    TokenId left_id;
    TokenId right_id;
    TokenId result;
  };
  // Heap order: the lowest rank first; among equal ranks the leftmost pair (as Hugging Face's
  // BPE and llama.cpp do).
  struct LowerPriority {
    bool operator()(const Candidate& a, const Candidate& b) const {
      return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
    }
  };
  struct Workspace {
    std::string valid_text;
    std::string encoded_word;
    std::vector<std::pair<size_t, size_t>> words;
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
    // Words repeat a lot in running text; the ids of a word do not depend on its context.
    std::unordered_map<std::string, std::vector<TokenId>> cache;
  };

  void encode_text(std::string_view raw, Workspace& work, std::vector<TokenId>& out) const {
    // The regex engine needs well-formed UTF-8; bad bytes become U+FFFD as in llama.cpp.
    const std::string_view text =
        replace_invalid_utf8(raw, work.valid_text) ? std::string_view(work.valid_text) : raw;
    work.words.clear();
    pre_tokenizer_.split(text, work.words);
    for (const auto& [begin, end] : work.words) {
      const std::string_view word = text.substr(begin, end - begin);
      if (word.size() > kMaxCachedWordBytes) {
        encode_word(word, work, out);
        continue;
      }
      const auto cached = work.cache.find(std::string(word));
      if (cached != work.cache.end()) {
        out.insert(out.end(), cached->second.begin(), cached->second.end());
        continue;
      }
      const size_t first = out.size();
      encode_word(word, work, out);
      if (work.cache.size() < kMaxCachedWords) {
        work.cache.emplace(std::string(word), std::vector<TokenId>(out.begin() + first, out.end()));
      }
    }
  }

  void push_candidate(int32_t left, int32_t right, Workspace& work) const {
    if (left < 0 || right < 0) return;
    const TokenId left_id = work.symbols[left].id;
    const TokenId right_id = work.symbols[right].id;
    if (left_id < 0 || right_id < 0) return;
    const auto it = merges_.find(pair_key(left_id, right_id));
    if (it == merges_.end()) return;
    work.heap.push_back({it->second.rank, left, right, left_id, right_id, it->second.result});
    std::push_heap(work.heap.begin(), work.heap.end(), LowerPriority{});
  }

  // A byte without a token is dropped, as llama.cpp's BPE tokenizer does, even when the metadata
  // names an unknown token: SmolLM2's is <|endoftext|> (id 0), and a stray control byte such as
  // 0x1D in a prompt must not end the document. Found by fuzz/tokenizer_fuzzer.cpp.
  void emit(TokenId id, std::vector<TokenId>& out) const {
    if (id >= 0) out.push_back(id);
  }

  void encode_word(std::string_view word, Workspace& work, std::vector<TokenId>& out) const {
    if (ignore_merges_) {
      work.encoded_word.clear();
      for (unsigned char b : word) work.encoded_word += byte_chars_[b];
      const TokenId whole = find_token(work.encoded_word);
      if (whole >= 0) {
        out.push_back(whole);
        return;
      }
    }
    auto& symbols = work.symbols;
    symbols.clear();
    for (size_t i = 0; i < word.size(); ++i) {
      const auto index = static_cast<int32_t>(i);
      symbols.push_back({byte_tokens_[static_cast<uint8_t>(word[i])], index - 1,
                         i + 1 < word.size() ? index + 1 : -1, true});
    }
    work.heap.clear();
    for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i)
      push_candidate(i - 1, i, work);

    while (!work.heap.empty()) {
      std::pop_heap(work.heap.begin(), work.heap.end(), LowerPriority{});
      const Candidate c = work.heap.back();
      work.heap.pop_back();
      Symbol& left = symbols[c.left];
      Symbol& right = symbols[c.right];
      // Skip pairs that went stale: one side was merged away or has changed since.
      if (!left.alive || !right.alive || left.next != c.right || left.id != c.left_id ||
          right.id != c.right_id) {
        continue;
      }
      left.id = c.result;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = c.left;
      right.alive = false;
      push_candidate(left.prev, c.left, work);
      push_candidate(c.left, left.next, work);
    }
    for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next)
      emit(symbols[i].id, out);
  }

  static constexpr uint32_t kMappedCodePoints = 256 + 68;  // the byte mapping stays below this
  static constexpr size_t kMaxCachedWordBytes = 64;
  static constexpr size_t kMaxCachedWords = 1 << 16;

  RegexPreTokenizer pre_tokenizer_;
  bool ignore_merges_ = false;
  std::array<std::string, 256> byte_chars_;  // the mapped code point of each byte, as UTF-8
  std::array<TokenId, 256> byte_tokens_{};   // the token of each single byte, or -1
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<std::string> pieces_;
};

}  // namespace

Result<std::unique_ptr<Tokenizer>> create_byte_level_bpe(VocabData data) {
  auto tokenizer = std::make_unique<ByteLevelBpeTokenizer>(std::move(data));
  FRUGAL_RETURN_IF_ERROR(tokenizer->initialize());
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace frugal::detail
