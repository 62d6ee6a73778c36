// Tokenizer::create (checks the vocabulary, picks the kind), the parts shared by every kind:
// vocabulary index, special-token splitting, decode, end-of-generation ids, UTF-8 helpers.
#include "io/tokenizer.h"

#include <algorithm>
#include <functional>
#include <string>
#include <utility>

#include "io/tokenizer_internal.h"

namespace frugal {
namespace detail {

namespace {

// Token texts that end a generation even when the metadata names only one of them (llama.cpp
// keeps the same list, because GGUF files rarely record every end-of-turn marker).
constexpr std::string_view kEndOfGenerationTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>",         "<end_of_turn>",      "<|endoftext|>",
    "<|eom_id|>", "<EOT>",      "<|end_of_text|>", "<end_of_utterance>",
};

bool is_end_of_generation_text(std::string_view text) {
  for (std::string_view t : kEndOfGenerationTexts) {
    if (text == t) return true;
  }
  return false;
}

// SentencePiece byte-fallback pieces look like "<0x0A>".
bool looks_like_byte_token(std::string_view text) {
  auto hex = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
  };
  return text.size() == 6 && text.substr(0, 3) == "<0x" && hex(text[3]) && hex(text[4]) &&
         text[5] == '>';
}

}  // namespace

int32_t SpecialTokenSplitter::child(int32_t node, uint8_t byte) const {
  if (node == 0) return root_children_[byte];
  for (const auto& [b, next] : nodes_[node].children) {
    if (b == byte) return next;
  }
  return -1;
}

void SpecialTokenSplitter::build(const std::vector<std::string>& tokens,
                                 const std::vector<TokenType>& types) {
  specials_.clear();
  for (size_t id = 0; id < tokens.size(); ++id) {
    const TokenType type = types[id];
    if (tokens[id].empty()) continue;
    if (type != TokenType::kControl && type != TokenType::kUserDefined &&
        type != TokenType::kUnknown) {
      continue;
    }
    specials_.push_back({static_cast<TokenId>(id), static_cast<uint32_t>(tokens[id].size()),
                         type == TokenType::kUserDefined});
  }
  std::sort(specials_.begin(), specials_.end(), [](const Special& a, const Special& b) {
    return a.length != b.length ? a.length > b.length : a.id < b.id;
  });
  nodes_.assign(1, Node{});
  root_children_.fill(-1);
  for (size_t s = 0; s < specials_.size(); ++s) {
    const std::string& text = tokens[specials_[s].id];
    int32_t node = 0;
    for (unsigned char byte : text) {
      int32_t next = child(node, byte);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_.push_back(Node{});
        if (node == 0) {
          root_children_[byte] = next;
        } else {
          nodes_[node].children.emplace_back(byte, next);
        }
      }
      node = next;
    }
    // Two tokens with the same text: the first one in priority order wins.
    if (nodes_[node].special < 0) nodes_[node].special = static_cast<int32_t>(s);
  }
}

void SpecialTokenSplitter::split(std::string_view text, bool parse_special,
                                 std::vector<Fragment>& out) const {
  // Every occurrence of every special token, as (priority, position).
  std::vector<std::pair<int32_t, size_t>> candidates;
  if (!specials_.empty()) {
    for (size_t pos = 0; pos < text.size(); ++pos) {
      int32_t node = root_children_[static_cast<uint8_t>(text[pos])];
      size_t depth = 1;
      while (node >= 0) {
        const int32_t s = nodes_[node].special;
        if (s >= 0 && (parse_special || specials_[s].always)) candidates.emplace_back(s, pos);
        if (pos + depth >= text.size()) break;
        node = child(node, static_cast<uint8_t>(text[pos + depth]));
        ++depth;
      }
    }
  }
  if (candidates.empty()) {
    if (!text.empty()) out.push_back({-1, 0, text.size()});
    return;
  }
  std::sort(candidates.begin(), candidates.end());

  // Longest (then lowest id) first; a token takes an occurrence when it lies wholly in text no
  // earlier token took and does not overlap its own previous occurrence.
  std::vector<uint8_t> taken(text.size(), 0);
  std::vector<std::pair<size_t, int32_t>> accepted;  // (position, index into specials_)
  int32_t current = -1;
  size_t own_end = 0;
  for (const auto& [s, pos] : candidates) {
    if (s != current) {
      current = s;
      own_end = 0;
    }
    const size_t length = specials_[s].length;
    if (pos < own_end) continue;
    if (std::any_of(taken.begin() + pos, taken.begin() + pos + length,
                    [](uint8_t t) { return t != 0; })) {
      continue;
    }
    std::fill(taken.begin() + pos, taken.begin() + pos + length, 1);
    accepted.emplace_back(pos, s);
    own_end = pos + length;
  }
  std::sort(accepted.begin(), accepted.end());

  size_t cursor = 0;
  for (const auto& [pos, s] : accepted) {
    if (pos > cursor) out.push_back({-1, cursor, pos});
    cursor = pos + specials_[s].length;
    out.push_back({specials_[s].id, pos, cursor});
  }
  if (cursor < text.size()) out.push_back({-1, cursor, text.size()});
}

void TokenTextIndex::build(const std::vector<std::string>& texts) {
  size_t capacity = 16;
  while (capacity < texts.size() * 2) capacity *= 2;  // load factor <= 1/2
  slots_.assign(capacity, Slot{0, -1});
  mask_ = capacity - 1;
  for (size_t id = 0; id < texts.size(); ++id) {
    const std::string& text = texts[id];
    if (text.empty()) continue;
    const size_t hash = std::hash<std::string_view>{}(text);
    for (size_t slot = hash & mask_;; slot = (slot + 1) & mask_) {
      Slot& s = slots_[slot];
      if (s.id < 0) {
        s = Slot{static_cast<uint32_t>(hash), static_cast<TokenId>(id)};
        break;
      }
      if (s.tag == static_cast<uint32_t>(hash) && texts[s.id] == text) {
        s.id = static_cast<TokenId>(id);
        break;
      }
    }
  }
}

TokenId TokenTextIndex::find(std::string_view text, const std::vector<std::string>& texts) const {
  if (slots_.empty()) return -1;
  const size_t hash = std::hash<std::string_view>{}(text);
  for (size_t slot = hash & mask_;; slot = (slot + 1) & mask_) {
    const Slot& s = slots_[slot];
    if (s.id < 0) return -1;
    if (s.tag == static_cast<uint32_t>(hash) && texts[s.id] == text) return s.id;
  }
}

std::shared_ptr<const VocabIndex> build_vocab_index(const VocabData& data) {
  auto index = std::make_shared<VocabIndex>();
  const size_t n = data.tokens.size();
  index->ids.build(data.tokens);
  index->types.resize(n, TokenType::kNormal);
  index->end_of_generation.assign(n, 0);
  const bool sentencepiece = data.model == "llama";
  for (size_t id = 0; id < n; ++id) {
    const std::string& text = data.tokens[id];
    if (!data.types.empty()) {
      const auto raw = static_cast<int32_t>(data.types[id]);
      // Values GGUF does not define are treated as undefined (llama.cpp does the same).
      index->types[id] = raw >= 0 && raw <= static_cast<int32_t>(TokenType::kByte)
                             ? data.types[id]
                             : TokenType::kUndefined;
    } else if (sentencepiece && looks_like_byte_token(text)) {
      index->types[id] = TokenType::kByte;
    }
    if (is_end_of_generation_text(text)) {
      index->end_of_generation[id] = 1;
      // A marker like "<|im_end|>" must be matched as a special token even if the file forgot to
      // mark it as control.
      if (index->types[id] != TokenType::kControl && index->types[id] != TokenType::kUserDefined) {
        index->types[id] = TokenType::kControl;
      }
    }
  }
  for (TokenId id : {data.eos_id, data.eot_id}) {
    if (id >= 0 && static_cast<size_t>(id) < n) index->end_of_generation[id] = 1;
  }
  index->specials.build(data.tokens, index->types);
  return index;
}

int byte_token_value(std::string_view text) {
  if (!looks_like_byte_token(text)) return -1;
  auto hex = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  return hex(text[3]) * 16 + hex(text[4]);
}

namespace {

// Length of the well-formed UTF-8 sequence at text[pos] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0 if there is none.
size_t valid_sequence_length(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) return 1;
  size_t length;
  uint8_t low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (pos + length > text.size()) return 0;
  if (byte(pos + 1) < low || byte(pos + 1) > high) return 0;
  for (size_t i = 2; i < length; ++i) {
    if ((byte(pos + i) & 0xC0) != 0x80) return 0;
  }
  return length;
}

}  // namespace

bool replace_invalid_utf8(std::string_view text, std::string& out) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t length = valid_sequence_length(text, pos);
    if (length == 0) break;
    pos += length;
  }
  if (pos == text.size()) return false;
  out.assign(text.substr(0, pos));
  while (pos < text.size()) {
    const size_t length = valid_sequence_length(text, pos);
    if (length == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER, one per bad byte
      ++pos;
    } else {
      out.append(text.substr(pos, length));
      pos += length;
    }
  }
  return true;
}

}  // namespace detail

Tokenizer::Tokenizer(VocabData data)
    : data_(std::move(data)), index_(detail::build_vocab_index(data_)) {}

Result<std::unique_ptr<Tokenizer>> Tokenizer::create(VocabData data) {
  const bool byte_level = data.model == "gpt2";
  const bool sentencepiece = data.model == "llama";
  if (!byte_level && !sentencepiece) {
    return Status::error("unsupported tokenizer model '" + data.model +
                         "' (tokenizer.ggml.model; supported: 'gpt2' byte-level BPE, 'llama' "
                         "SentencePiece)");
  }
  const size_t n = data.tokens.size();
  if (n == 0)
    return Status::error("the vocabulary is empty (tokenizer.ggml.tokens has no entries)");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return Status::error("the vocabulary has " + std::to_string(n) +
                         " tokens, more than token ids hold");
  }
  if (!data.scores.empty() && data.scores.size() != n) {
    return Status::error("tokenizer.ggml.scores has " + std::to_string(data.scores.size()) +
                         " entries but tokenizer.ggml.tokens has " + std::to_string(n));
  }
  if (!data.types.empty() && data.types.size() != n) {
    return Status::error("tokenizer.ggml.token_type has " + std::to_string(data.types.size()) +
                         " entries but tokenizer.ggml.tokens has " + std::to_string(n));
  }
  const std::pair<const char*, TokenId> ids[] = {{"bos", data.bos_id},
                                                 {"eos", data.eos_id},
                                                 {"eot", data.eot_id},
                                                 {"unknown", data.unknown_id},
                                                 {"padding", data.padding_id}};
  for (const auto& [name, id] : ids) {
    if (id < -1 || (id >= 0 && static_cast<size_t>(id) >= n)) {
      return Status::error(std::string(name) + " token id " + std::to_string(id) +
                           " is outside the vocabulary of " + std::to_string(n) + " tokens");
    }
  }
  if (data.add_bos && data.bos_id < 0) {
    return Status::error("tokenizer.ggml.add_bos_token is set but there is no BOS token id");
  }
  if (data.add_eos && data.eos_id < 0) {
    return Status::error("tokenizer.ggml.add_eos_token is set but there is no EOS token id");
  }
  if (byte_level) return detail::create_byte_level_bpe(std::move(data));
  return detail::create_sentencepiece_bpe(std::move(data));
}

std::string Tokenizer::decode(const std::vector<TokenId>& ids, bool render_special) const {
  std::string out;
  // SentencePiece added a "▁" in front of the text (add_space_prefix); drop that one space again
  // so that decode(encode(text)) == text, as SentencePiece's own decoder does.
  bool strip_space = data_.model == "llama" && data_.add_space_prefix;
  for (TokenId id : ids) {
    std::string piece = token_to_piece(id, render_special);
    if (strip_space && !piece.empty()) {
      const bool from_text =
          id >= 0 && id < vocab_size() &&
          (index_->types[id] == TokenType::kNormal || index_->types[id] == TokenType::kByte);
      if (from_text && piece[0] == ' ') piece.erase(0, 1);
      strip_space = false;
    }
    out += piece;
  }
  return out;
}

bool Tokenizer::is_end_of_generation(TokenId id) const {
  return id >= 0 && id < vocab_size() && index_->end_of_generation[id] != 0;
}

TokenId Tokenizer::find_token(std::string_view text) const { return index_->ids.find(text, data_.tokens); }

}  // namespace frugal
