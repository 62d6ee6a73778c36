// libFuzzer target: arbitrary bytes as a GGUF model file -> reader, metadata display, model config,
// tokenizer, weight binding, and (when everything loads) one short forward pass.
//
// The bytes are parsed where libFuzzer put them (GgufFile::open_memory), copied first into a
// buffer of exactly their size, so AddressSanitizer reports any read past the end of the "file".
// Every rejection must come back as a Status; a crash, sanitizer report, leak or hang is a bug.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "io/chat_template.h"
#include "io/gguf.h"
#include "io/gguf_vocab.h"
#include "model/model.h"
#include "model/model_config.h"
#include "model/transformer.h"

namespace {

using frugal::TokenId;

// A failed property: print what and abort, so libFuzzer saves the input as a crash.
[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "gguf_model_fuzzer: %s\n", what.c_str());
  std::abort();
}

void check_ids(const std::vector<TokenId>& ids, int32_t vocab_size, const char* where) {
  for (TokenId id : ids) {
    if (id < 0 || id >= vocab_size) fail(std::string(where) + ": token id " + std::to_string(id) + " outside the vocabulary");
  }
}

// What `frugal info` and the tokenizer do with a parsed file, whether or not it is a whole model.
void exercise_file(const frugal::GgufFile& file) {
  size_t chars = 0;
  for (const auto& [key, value] : file.metadata()) chars += value.to_display_string().size();
  for (const auto& t : file.tensors()) {
    if (t.traits == nullptr || t.data == nullptr) fail("tensor '" + t.name + "' without traits or data");
    // The stored size, recomputed without overflow, must be what the reader recorded; then the
    // first and last bytes must be readable (ASan checks they lie inside the input).
    unsigned __int128 elements = 1;
    for (int64_t d : t.dims) elements *= static_cast<unsigned __int128>(d);
    const unsigned __int128 bytes = elements / static_cast<unsigned>(t.traits->block_size) * t.traits->block_bytes;
    if (bytes != t.bytes) fail("tensor '" + t.name + "': recorded size " + std::to_string(t.bytes) + " is not its dims' size");
    if (t.bytes > 0) chars += t.data[0] + t.data[t.bytes - 1];
    chars += t.name.size();
  }
  (void)chars;
  (void)frugal::read_model_config(file);
  (void)frugal::detect_chat_format(file);
  auto tokenizer = frugal::load_tokenizer(file);
  if (!tokenizer) return;
  const frugal::Tokenizer& tok = *tokenizer.value();
  const std::string text = "<|im_start|>user\nHello world, 1234 café!<|im_end|>\n";
  const std::vector<TokenId> ids = tok.encode(text, true, true);
  check_ids(ids, tok.vocab_size(), "encode");
  (void)tok.decode(ids, true);
  // Every piece of a small vocabulary (large ones: the first and last few).
  const int32_t n = tok.vocab_size();
  for (int32_t id = 0; id < n; id = (n > 512 && id == 255) ? n - 256 : id + 1) (void)tok.token_to_piece(id, true);
}

// A forward pass over a few tokens with a tiny context: the shapes the loader accepted must be the
// ones the kernels can run.
void run_model(const std::shared_ptr<const frugal::Model>& model) {
  frugal::TransformerOptions options;
  options.n_ctx = 4;
  options.n_batch = 2;
  options.n_threads = 1;
  frugal::Transformer transformer(model, options);
  const int32_t n_vocab = static_cast<int32_t>(model->config().n_vocab);
  const int32_t tokens[3] = {0, n_vocab - 1, n_vocab / 2};
  if (!transformer.evaluate(tokens, 3)) fail("evaluate of 3 valid tokens failed in a 4-token context");
  const float* logits = transformer.last_logits();
  float sum = 0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += logits[i];
  (void)sum;  // random weights may overflow to inf/NaN; reading every logit is the check
  const int32_t bad = n_vocab;
  if (transformer.evaluate(&bad, 1)) fail("evaluate accepted token id n_vocab");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Exactly `size` bytes, 64-byte aligned like the start of a memory map, so that both an
  // over-read and an alignment assumption about tensor data show up.
  auto* copy = static_cast<uint8_t*>(::operator new(size == 0 ? 1 : size, std::align_val_t(64)));
  if (size > 0) std::memcpy(copy, data, size);
  {
    auto file = frugal::GgufFile::open_memory(copy, size, "fuzz-input.gguf");
    if (file) {
      exercise_file(*file.value());
      auto model = frugal::Model::load(std::move(file).value());
      if (model) {
        const frugal::ModelConfig& c = model.value()->config();
        // Bounded work per input: the file size bounds the weights, not the hidden sizes of a
        // tied, tiny-vocabulary model, so keep the pass to what a few-KB model needs.
        if (c.n_embd * c.n_layer <= (1 << 14) && c.n_ff <= 4096 && c.n_vocab <= (1 << 16)) run_model(model.value());
      }
    }
  }
  ::operator delete(copy, std::align_val_t(64));
  return 0;
}
