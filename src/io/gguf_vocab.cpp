// read_vocab: tokenizer.ggml.* keys to VocabData, with llama.cpp's defaults where keys are absent.
#include "io/gguf_vocab.h"

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
  if (const GgufValue* scores = file.find("tokenizer.ggml.scores")) {
    for (double s : scores->numbers) v.scores.push_back(static_cast<float>(s));
  }
  if (const GgufValue* types = file.find("tokenizer.ggml.token_type")) {
    for (double t : types->numbers) v.types.push_back(static_cast<TokenType>(static_cast<int32_t>(t)));
  }
  if (const GgufValue* merges = file.find("tokenizer.ggml.merges")) v.merges = merges->strings;
  const bool spm = v.model == "llama";
  v.bos_id = static_cast<TokenId>(file.get_int_or("tokenizer.ggml.bos_token_id", spm ? 1 : -1));
  v.eos_id = static_cast<TokenId>(file.get_int_or("tokenizer.ggml.eos_token_id", spm ? 2 : -1));
  v.eot_id = static_cast<TokenId>(file.get_int_or("tokenizer.ggml.eot_token_id", -1));
  v.unknown_id = static_cast<TokenId>(file.get_int_or("tokenizer.ggml.unknown_token_id", spm ? 0 : -1));
  v.padding_id = static_cast<TokenId>(file.get_int_or("tokenizer.ggml.padding_token_id", -1));
  // Without the key, llama.cpp adds BOS for SentencePiece vocabularies and for Llama 3's.
  const bool llama3 = v.pre == "llama3" || v.pre == "llama-v3" || v.pre == "llama-bpe";
  v.add_bos = file.get_bool_or("tokenizer.ggml.add_bos_token", spm || llama3);
  v.add_eos = file.get_bool_or("tokenizer.ggml.add_eos_token", false);
  v.add_space_prefix = file.get_bool_or("tokenizer.ggml.add_space_prefix", spm);
  const auto n = static_cast<TokenId>(v.tokens.size());
  for (TokenId* id : {&v.bos_id, &v.eos_id, &v.eot_id, &v.unknown_id, &v.padding_id}) {
    if (*id >= n) return Status::error("special token id " + std::to_string(*id) + " is outside the vocabulary");
  }
  // End-of-turn markers that metadata often leaves implicit.
  if (v.eot_id < 0) {
    for (TokenId i = 0; i < n; ++i) {
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

}  // namespace frugal
