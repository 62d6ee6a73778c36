// Test helpers: where the real model and llama.cpp's tools are, running the frugal binary, and
// writing tiny random Llama models as GGUF so model tests need no download.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "frugal/frugal.h"

namespace frugal::testing {

// $FRUGAL_MODEL or ~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf.
std::string real_model_path();
// A llama.cpp tool from $FRUGAL_PEER_BIN or the cache scripts/build_llama_cpp.sh fills.
std::string peer_tool(const std::string& name);
bool file_exists(const std::string& path);
// ../shared/data/NAME relative to the source tree, or $FRUGAL_DATA/NAME.
std::string data_path(const std::string& name);

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs a shell command with stdin from /dev/null, capturing stdout and stderr.
CommandResult run_command(const std::string& command);
// Quotes one argument for /bin/sh.
std::string shell_quote(const std::string& s);
// The frugal binary built with the tests.
std::string frugal_binary();

struct TinyModelOptions {
  int64_t n_embd = 64;
  int64_t n_layer = 2;
  int64_t n_head = 4;
  int64_t n_head_kv = 2;
  int64_t n_ff = 96;
  int64_t n_ctx_train = 256;
  DType weight_type = DType::F32;  // for the 2-D matrices
  bool tied_output = false;
  uint64_t seed = 1;
  // Merges in the vocabulary (at most 8; fewer gives a smaller, different vocabulary).
  int64_t n_merges = 8;
  // A Gemma 3 graph ("gemma3": scaled embeddings, per-head q/k norms, post-norms, GeGLU, every
  // layer but each sliding_window_pattern-th one windowed to sliding_window keys, logit
  // soft-capping) instead of Llama's.
  bool gemma3 = false;
  int64_t sliding_window = 8;
  int64_t sliding_window_pattern = 2;
};
// Writes a random Llama (or Gemma 3) model with a byte-level BPE vocabulary (256 byte tokens, a few merges,
// <|endoftext|>, <|im_start|>, <|im_end|>). Returns the vocabulary size via the file.
Status write_tiny_model(const std::string& path, const TinyModelOptions& options);

// A fresh temporary directory for one test, removed with its contents when the test process exits.
std::string temp_dir();

}  // namespace frugal::testing
