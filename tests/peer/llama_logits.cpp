// Peer tool for parity tests: runs llama.cpp (through its public C API, llama.h) on a list of
// token ids and prints the logits of the last position, one value per line. Built against the
// llama.cpp libraries by scripts/build_llama_cpp.sh; never linked into frugal.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL.gguf ID,ID,ID...\n", argv[0]);
    return 2;
  }
  std::vector<llama_token> tokens;
  std::string ids = argv[2];
  for (size_t start = 0; start < ids.size();) {
    size_t comma = ids.find(',', start);
    if (comma == std::string::npos) comma = ids.size();
    tokens.push_back(static_cast<llama_token>(std::atoi(ids.substr(start, comma - start).c_str())));
    start = comma + 1;
  }
  llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
  llama_backend_init();
  llama_model_params model_params = llama_model_default_params();
  llama_model* model = llama_model_load_from_file(argv[1], model_params);
  if (model == nullptr) {
    std::fprintf(stderr, "cannot load %s\n", argv[1]);
    return 1;
  }
  llama_context_params ctx_params = llama_context_default_params();
  ctx_params.n_ctx = 512;
  ctx_params.n_batch = 512;
  ctx_params.n_threads = 2;
  ctx_params.n_threads_batch = 2;
  // FRUGAL_PEER_FLASH_ATTN=0 turns llama.cpp's flash attention off (it accumulates in half).
  if (const char* fa = std::getenv("FRUGAL_PEER_FLASH_ATTN"); fa != nullptr && fa[0] == '0') {
    ctx_params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  }
  llama_context* ctx = llama_init_from_model(model, ctx_params);
  if (ctx == nullptr || llama_decode(ctx, llama_batch_get_one(tokens.data(), static_cast<int32_t>(tokens.size()))) != 0) {
    std::fprintf(stderr, "decode failed\n");
    return 1;
  }
  const float* logits = llama_get_logits_ith(ctx, -1);
  const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  for (int32_t i = 0; i < n_vocab; ++i) std::printf("%.6f\n", logits[i]);
  llama_free(ctx);
  llama_model_free(model);
  return 0;
}
