// read_vocab: tokenizer.ggml.* keys to VocabData, with llama.cpp's defaults where keys are absent.
#include "io/gguf_vocab.h"

#include <cstdint>
#include <iterator>
#include <utility>

namespace frugal {

Result<VocabData> read_vocab(const GgufFile& file) {
  VocabData v;
  FRUGAL_ASSIGN_OR_RETURN(v.model, file.get_string("tokenizer.ggml.model"));
  v.pre = file.get_string_or("tokenizer.ggml.pre", "default");
  const GgufValue* tokens = file.find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->type != GgufType::kArray || tokens->element_type != GgufType::kString) {
    return Status::error("missing or malformed tokenizer.ggml.tokens (array of strings)");
  }
  v.tokens = tokens->strings;
  // Optional arrays must still have the right kind: a scores or token_type array of strings used
  // to read as absent, and a value past int32 made the conversion to TokenType undefined.
  if (const GgufValue* scores = file.find("tokenizer.ggml.scores")) {
    if (scores->type != GgufType::kArray || scores->element_type == GgufType::kString ||
        scores->element_type == GgufType::kArray) {
      return Status::error("tokenizer.ggml.scores must be an array of numbers");
    }
    for (double s : scores->numbers) v.scores.push_back(static_cast<float>(s));
  }
  if (const GgufValue* types = file.find("tokenizer.ggml.token_type")) {
    GgufValue probe;
    probe.type = types->element_type;
    if (types->type != GgufType::kArray || !probe.is_integer()) {
      return Status::error("tokenizer.ggml.token_type must be an array of integers");
    }
    for (double t : types->numbers) {
      if (!(t >= INT32_MIN && t <= INT32_MAX)) {
        return Status::error("tokenizer.ggml.token_type must be an array of integers (it holds " + std::to_string(t) + ")");
      }
      v.types.push_back(static_cast<TokenType>(static_cast<int32_t>(t)));
    }
  }
  if (const GgufValue* merges = file.find("tokenizer.ggml.merges")) {
    if (merges->type != GgufType::kArray || merges->element_type != GgufType::kString) {
      return Status::error("tokenizer.ggml.merges must be an array of strings");
    }
    v.merges = merges->strings;
  }
  const bool spm = v.model == "llama";
  // Special ids are range-checked as read (int64), before they are cut to 32-bit token ids: a
  // 2^32 + 5 would otherwise pass as 5.
  const auto n = static_cast<int64_t>(v.tokens.size());
  const std::pair<const char*, TokenId*> ids[] = {{"bos", &v.bos_id},
                                                  {"eos", &v.eos_id},
                                                  {"eot", &v.eot_id},
                                                  {"unknown", &v.unknown_id},
                                                  {"padding", &v.padding_id}};
  const int64_t defaults[] = {spm ? 1 : -1, spm ? 2 : -1, -1, spm ? 0 : -1, -1};
  for (size_t i = 0; i < std::size(ids); ++i) {
    const std::string key = std::string("tokenizer.ggml.") + ids[i].first + "_token_id";
    const int64_t id = file.get_int_or(key, defaults[i]);
    if (id < -1 || id >= n) {
      return Status::error(key + " " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(n) + " tokens");
    }
    *ids[i].second = static_cast<TokenId>(id);
  }
  // Without the key, llama.cpp adds BOS for SentencePiece vocabularies and for Llama 3's.
  const bool llama3 = v.pre == "llama3" || v.pre == "llama-v3" || v.pre == "llama-bpe";
  v.add_bos = file.get_bool_or("tokenizer.ggml.add_bos_token", spm || llama3);
  v.add_eos = file.get_bool_or("tokenizer.ggml.add_eos_token", false);
  v.add_space_prefix = file.get_bool_or("tokenizer.ggml.add_space_prefix", spm);
  // End-of-turn markers that metadata often leaves implicit.
  if (v.eot_id < 0) {
    for (TokenId i = 0; i < static_cast<TokenId>(n); ++i) {
      if (v.tokens[i] == "<|im_end|>" || v.tokens[i] == "<end_of_turn>" || v.tokens[i] == "<|eot_id|>") {
        v.eot_id = i;
        break;
      }
    }
  }
  return v;
}

Result<std::unique_ptr<Tokenizer>> load_tokenizer(const GgufFile& file) {
  FRUGAL_ASSIGN_OR_RETURN(VocabData v, read_vocab(file));
  return Tokenizer::create(std::move(v));
}

ChatFormat detect_chat_format(const GgufFile& file) {
  const std::string tmpl = file.get_string_or("tokenizer.chat_template", "");
  if (tmpl.find("<start_of_turn>") != std::string::npos) return ChatFormat::kGemma;
  if (tmpl.find("<|im_start|>") != std::string::npos) return ChatFormat::kChatMl;
  const std::string arch = file.get_string_or("general.architecture", "");
  if (arch.rfind("gemma", 0) == 0) return ChatFormat::kGemma;
  return ChatFormat::kChatMl;
}

ChatTemplate read_chat_template(const GgufFile& file, const Tokenizer& tokenizer) {
  ChatTemplate t;
  t.source = file.get_string_or("tokenizer.chat_template", "");
  t.fallback = detect_chat_format(file);
  const auto& tokens = tokenizer.vocab().tokens;
  auto text = [&](TokenId id) { return id >= 0 && static_cast<size_t>(id) < tokens.size() ? tokens[static_cast<size_t>(id)] : std::string(); };
  t.bos_token = text(tokenizer.bos());
  t.eos_token = text(tokenizer.eos());
  return t;
}

}  // namespace frugal
