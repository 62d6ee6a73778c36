// Tokenizers built from GGUF metadata (tokenizer.ggml.*): byte-level BPE with a GPT-2 style
// pre-tokenizer (SmolLM2, Llama 3, …) and SentencePiece-style BPE over scores (Llama 2, Gemma).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace frugal {

using TokenId = int32_t;

// GGUF token types (tokenizer.ggml.token_type), as in llama.cpp's llama_token_type.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Everything the tokenizer needs, read from GGUF metadata by io/gguf_vocab.cpp.
struct VocabData {
  std::string model;                  // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama"
  std::string pre;                    // tokenizer.ggml.pre: pre-tokenizer name, e.g. "smollm"
  std::vector<std::string> tokens;    // tokenizer.ggml.tokens
  std::vector<float> scores;          // tokenizer.ggml.scores (may be empty for gpt2)
  std::vector<TokenType> types;       // tokenizer.ggml.token_type (may be empty)
  std::vector<std::string> merges;    // tokenizer.ggml.merges, "left right" (gpt2 only)
  TokenId bos_id = -1;
  TokenId eos_id = -1;
  TokenId eot_id = -1;                // end of turn (e.g. <|im_end|>, <end_of_turn>), -1 if none
  TokenId unknown_id = -1;
  TokenId padding_id = -1;
  bool add_bos = false;               // tokenizer.ggml.add_bos_token (default depends on model)
  bool add_eos = false;
  bool add_space_prefix = false;      // tokenizer.ggml.add_space_prefix (SentencePiece)
};

namespace detail {
struct VocabIndex;  // lookup tables shared by every tokenizer kind (io/tokenizer_internal.h)
}  // namespace detail

class Tokenizer {
 public:
  // Checks the data (known model kind, consistent sizes, merges that name real tokens).
  static Result<std::unique_ptr<Tokenizer>> create(VocabData data);
  virtual ~Tokenizer() = default;
  // An independent copy (it shares only immutable tables that hold no pointers into this object,
  // so it may outlive the original).
  virtual std::unique_ptr<Tokenizer> clone() const = 0;

  // Text to ids. `add_special` adds BOS/EOS as the metadata asks; `parse_special` turns text
  // like "<|im_start|>" into its control token instead of tokenizing the characters.
  virtual std::vector<TokenId> encode(std::string_view text, bool add_special,
                                      bool parse_special) const = 0;
  // The bytes one token stands for (byte tokens give their byte, "Ġ"-mapped bytes are undone;
  // control tokens give their text only when `render_special`).
  virtual std::string token_to_piece(TokenId id, bool render_special = false) const = 0;
  // Concatenated pieces of a sequence.
  std::string decode(const std::vector<TokenId>& ids, bool render_special = false) const;

  const VocabData& vocab() const { return data_; }
  int32_t vocab_size() const { return static_cast<int32_t>(data_.tokens.size()); }
  TokenId bos() const { return data_.bos_id; }
  TokenId eos() const { return data_.eos_id; }
  // True for ids that end a generation (EOS, end-of-turn).
  bool is_end_of_generation(TokenId id) const;
  // Id of a token given by its exact text, or -1.
  TokenId find_token(std::string_view text) const;

 protected:
  // `data` must already be validated; the index is built from data_ by the constructor.
  explicit Tokenizer(VocabData data);
  // Copies only through clone() (no slicing); assignment is not needed.
  Tokenizer(const Tokenizer&) = default;
  Tokenizer& operator=(const Tokenizer&) = delete;
  VocabData data_;
  std::shared_ptr<const detail::VocabIndex> index_;
};

}  // namespace frugal
