// Pieces shared by the tokenizer kinds: the vocabulary index, special-token splitting, UTF-8
// helpers and the factories of the two tokenizer kinds (byte-level BPE, SentencePiece BPE).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "io/tokenizer.h"

#include "io/utf8.h"

namespace frugal::detail {

// One piece of the input after special tokens were cut out: either a special token or a range
// [begin, end) of raw text that still has to be tokenized.
struct Fragment {
  TokenId special = -1;  // >= 0: this fragment is that token
  size_t begin = 0;
  size_t end = 0;
};

// Finds special tokens (control, user-defined, unknown) in raw text. The result is the one
// llama.cpp's tokenizer_st_partition gives: longer tokens are cut out first, everywhere in the
// text, then shorter ones in what is left; each token takes its occurrences left to right.
// A trie over the token texts finds all candidate occurrences in one pass, so the cost does not
// grow with the number of special tokens (Gemma has thousands).
class SpecialTokenSplitter {
 public:
  void build(const std::vector<std::string>& tokens, const std::vector<TokenType>& types);
  // Appends the fragments of `text` to `out`. Without `parse_special` only user-defined tokens
  // are cut out (as llama.cpp and Hugging Face tokenizers do); control and unknown tokens are then
  // tokenized as plain text.
  void split(std::string_view text, bool parse_special, std::vector<Fragment>& out) const;

 private:
  struct Special {
    TokenId id;
    uint32_t length;
    bool always;  // user-defined: cut out even when parse_special is false
  };
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // byte -> node index
    int32_t special = -1;                               // index into specials_ (its priority)
  };
  int32_t child(int32_t node, uint8_t byte) const;

  std::vector<Special> specials_;  // sorted: longest first, then lowest id
  std::vector<Node> nodes_;        // nodes_[0] is the root
  std::array<int32_t, 256> root_children_{};
};

// Token text -> id: an open-addressing hash table (linear probing) over the token strings, which
// it does not copy. Lookups sit in the inner loops of both BPE kinds and of loading, where a
// node-based std::unordered_map spends most of its time on cache misses. The index keeps no
// pointer to the texts: every lookup is given them, so a tokenizer copy that shares the index
// compares against its own token list, never the (possibly destroyed) original's.
class TokenTextIndex {
 public:
  // Of two equal texts the later id wins (as in llama.cpp); empty texts are not indexed.
  void build(const std::vector<std::string>& texts);
  // `texts` must be the list the index was built from (or an equal copy).
  TokenId find(std::string_view text, const std::vector<std::string>& texts) const;

 private:
  struct Slot {
    uint32_t tag;  // low bits of the hash, to skip most string compares
    TokenId id;    // -1: empty slot
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// Lookup tables every tokenizer kind needs; built once, shared read-only.
struct VocabIndex {
  TokenTextIndex ids;                      // token text -> id
  std::vector<TokenType> types;            // one per token, never empty
  std::vector<uint8_t> end_of_generation;  // one per token
  SpecialTokenSplitter specials;
};

// Builds the index from validated data (SentencePiece vocabularies without token types get their
// "<0xXX>" pieces typed as bytes; known end-of-turn texts are typed as control).
std::shared_ptr<const VocabIndex> build_vocab_index(const VocabData& data);

// Length of the UTF-8 sequence that starts with `lead` (1 for stray continuation bytes), as the
// SentencePiece tokenizer splits its input.
inline size_t utf8_sequence_length(uint8_t lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}
// The byte a "<0xXX>" piece (SentencePiece byte fallback) stands for, or -1 for any other text
// (a hostile "<0xZZ>" must not reach std::stoi, which throws).
int byte_token_value(std::string_view text);
using ::frugal::append_utf8;  // io/utf8.h
// Copies `text` with every byte that is not part of a well-formed UTF-8 sequence replaced by
// U+FFFD, as llama.cpp does before pre-tokenizing; returns false (and leaves `out` alone) when
// `text` is already valid.
bool replace_invalid_utf8(std::string_view text, std::string& out);

// Factories for the tokenizer kinds (io/tokenizer_bpe.cpp, io/tokenizer_spm.cpp). They check what
// is specific to their kind (merges, scores) and return an error message on bad data.
Result<std::unique_ptr<Tokenizer>> create_byte_level_bpe(VocabData data);
Result<std::unique_ptr<Tokenizer>> create_sentencepiece_bpe(VocabData data);

}  // namespace frugal::detail
