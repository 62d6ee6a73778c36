// SentencePiece-style BPE (tokenizer.ggml.model "llama": Llama 2, Gemma): spaces become "▁",
// pieces are merged by vocabulary score, unknown characters fall back to <0xXX> byte tokens.
//
// SentencePiece: Kudo & Richardson 2018, "SentencePiece: A simple and language independent
// subword tokenizer and detokenizer for Neural Text Processing". Its BPE mode starts from single
// characters and repeatedly merges the adjacent pair whose concatenation is the vocabulary piece
// with the highest score (the scores are the merge order of training); llama.cpp's
// llm_tokenizer_spm does the same, and this file follows its behaviour.
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "io/tokenizer_internal.h"

namespace frugal::detail {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK "▁"

class SentencePieceBpeTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceBpeTokenizer(VocabData data) : Tokenizer(std::move(data)) {}

  Status initialize() {
    byte_tokens_.fill(-1);
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const std::string name = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
      byte_tokens_[b] = find_token(name);
    }
    // Every pair of adjacent characters inside some token. Where the text has a pair that is in no
    // token, no merge can ever join across it (every merged symbol is a token), so the text can
    // be cut there and each part merged on its own with the same result; this keeps the heaps
    // small (in Llama's vocabulary "▁" starts pieces, so the parts are about words).
    for (const std::string& text : data_.tokens) {
      size_t previous = std::string::npos;
      for (size_t pos = 0; pos < text.size();) {
        const size_t length =
            std::min(utf8_sequence_length(static_cast<uint8_t>(text[pos])), text.size() - pos);
        if (previous != std::string::npos) {
          token_char_pairs_.insert(
              pair_hash(std::string_view(text).substr(previous, pos + length - previous)));
        }
        previous = pos;
        pos += length;
      }
    }
    pieces_.resize(data_.tokens.size());
    for (size_t id = 0; id < data_.tokens.size(); ++id) {
      const std::string& text = data_.tokens[id];
      switch (index_->types[id]) {
        case TokenType::kNormal: {
          std::string piece;
          for (size_t pos = 0; pos < text.size();) {
            if (text.compare(pos, kSpaceMarker.size(), kSpaceMarker) == 0) {
              piece += ' ';
              pos += kSpaceMarker.size();
            } else {
              piece += text[pos++];
            }
          }
          pieces_[id] = std::move(piece);
          break;
        }
        case TokenType::kByte:
          if (byte_token_value(text) >= 0) {
            pieces_[id] = std::string(1, static_cast<char>(byte_token_value(text)));
          } else {
            pieces_[id] = text;
          }
          break;
        case TokenType::kControl:
        case TokenType::kUnknown:
        case TokenType::kUserDefined:
          pieces_[id] = text;
          break;
        default:
          break;  // unused and undefined tokens stand for nothing (as in llama.cpp)
      }
    }
    return Status::ok();
  }

  std::unique_ptr<Tokenizer> clone() const override { return std::make_unique<SentencePieceBpeTokenizer>(*this); }

  std::vector<TokenId> encode(std::string_view text, bool add_special,
                              bool parse_special) const override {
    std::vector<TokenId> out;
    if (add_special && data_.add_bos) out.push_back(data_.bos_id);
    std::vector<Fragment> fragments;
    index_->specials.split(text, parse_special, fragments);
    Workspace work;
    // SentencePiece's dummy prefix: a space in front of the text, and (as llama.cpp does) in
    // front of every piece of text that follows a special token.
    bool after_special = true;
    for (const Fragment& fragment : fragments) {
      if (fragment.special >= 0) {
        out.push_back(fragment.special);
        after_special = true;
        continue;
      }
      work.text.clear();
      if (data_.add_space_prefix && after_special) work.text += kSpaceMarker;
      for (size_t i = fragment.begin; i < fragment.end; ++i) {
        if (text[i] == ' ') {
          work.text += kSpaceMarker;
        } else {
          work.text += text[i];
        }
      }
      encode_pieces(work, out);
      after_special = false;
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
  struct Symbol {
    uint32_t begin;   // byte offset in the escaped text
    uint32_t length;  // 0: merged into its left neighbour
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    float score;
    int32_t left;
    int32_t right;
    uint32_t length;  // bytes of left + right when the pair was found
  };
  // Heap order: the highest score first; among equal scores the leftmost pair.
  struct LowerPriority {
    bool operator()(const Candidate& a, const Candidate& b) const {
      return a.score != b.score ? a.score < b.score : a.left > b.left;
    }
  };
  struct Workspace {
    std::string text;
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
  };

  // FNV-1a. A collision only makes a cut look impossible, which is safe.
  static uint64_t pair_hash(std::string_view bytes) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (char c : bytes) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
    return h;
  }

  float score(TokenId id) const { return data_.scores.empty() ? 0.0f : data_.scores[id]; }

  void push_candidate(int32_t left, int32_t right, Workspace& work) const {
    if (left < 0 || right < 0) return;
    const Symbol& l = work.symbols[left];
    const Symbol& r = work.symbols[right];
    const TokenId id = find_token(std::string_view(work.text).substr(l.begin, l.length + r.length));
    if (id < 0) return;
    work.heap.push_back({score(id), left, right, l.length + r.length});
    std::push_heap(work.heap.begin(), work.heap.end(), LowerPriority{});
  }

  // A final symbol that is no token (a character the vocabulary lacks): its bytes as <0xXX>
  // tokens when the vocabulary has them all (byte fallback), otherwise the unknown token.
  void emit(std::string_view piece, std::vector<TokenId>& out) const {
    const TokenId id = find_token(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    const bool all_bytes = std::all_of(piece.begin(), piece.end(), [&](char c) {
      return byte_tokens_[static_cast<uint8_t>(c)] >= 0;
    });
    if (all_bytes) {
      for (char c : piece) out.push_back(byte_tokens_[static_cast<uint8_t>(c)]);
    } else if (data_.unknown_id >= 0) {
      out.push_back(data_.unknown_id);
    }
  }

  void encode_pieces(Workspace& work, std::vector<TokenId>& out) const {
    const std::string_view text = work.text;
    auto& symbols = work.symbols;
    symbols.clear();
    for (size_t pos = 0; pos < text.size();) {
      const size_t length =
          std::min(utf8_sequence_length(static_cast<uint8_t>(text[pos])), text.size() - pos);
      symbols.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(length), -1, -1});
      pos += length;
    }
    const auto count = static_cast<int32_t>(symbols.size());
    for (int32_t begin = 0; begin < count;) {
      // The part runs to the next pair of characters that no token contains.
      int32_t end = begin + 1;
      while (end < count) {
        const Symbol& l = symbols[end - 1];
        const Symbol& r = symbols[end];
        if (!token_char_pairs_.contains(pair_hash(text.substr(l.begin, l.length + r.length))))
          break;
        ++end;
      }
      merge_part(begin, end, work);
      for (int32_t i = begin; i >= 0; i = symbols[i].next) {
        emit(text.substr(symbols[i].begin, symbols[i].length), out);
      }
      begin = end;
    }
  }

  // Merges symbols [begin, end) by score until no adjacent pair forms a token.
  void merge_part(int32_t begin, int32_t end, Workspace& work) const {
    auto& symbols = work.symbols;
    for (int32_t i = begin; i < end; ++i) {
      symbols[i].prev = i > begin ? i - 1 : -1;
      symbols[i].next = i + 1 < end ? i + 1 : -1;
    }
    work.heap.clear();
    for (int32_t i = begin + 1; i < end; ++i) push_candidate(i - 1, i, work);
    while (!work.heap.empty()) {
      std::pop_heap(work.heap.begin(), work.heap.end(), LowerPriority{});
      const Candidate c = work.heap.back();
      work.heap.pop_back();
      Symbol& left = symbols[c.left];
      Symbol& right = symbols[c.right];
      // Symbols only grow to the right, so unchanged lengths mean the pair is still current.
      if (left.length == 0 || right.length == 0 || left.length + right.length != c.length) continue;
      left.length += right.length;
      right.length = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = c.left;
      push_candidate(left.prev, c.left, work);
      push_candidate(c.left, left.next, work);
    }
  }

  std::array<TokenId, 256> byte_tokens_{};
  std::unordered_set<uint64_t> token_char_pairs_;  // pair_hash of adjacent characters in tokens
  std::vector<std::string> pieces_;
};

}  // namespace

Result<std::unique_ptr<Tokenizer>> create_sentencepiece_bpe(VocabData data) {
  if (data.scores.empty()) {
    return Status::error(
        "a SentencePiece ('llama') vocabulary needs tokenizer.ggml.scores, which is missing");
  }
  auto tokenizer = std::make_unique<SentencePieceBpeTokenizer>(std::move(data));
  FRUGAL_RETURN_IF_ERROR(tokenizer->initialize());
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace frugal::detail
