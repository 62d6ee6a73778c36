// make_random_model: writes a random-weight Llama-architecture GGUF of a given shape (1B/3B/8B
// presets), with a real tokenizer copied from another GGUF, streamed tensor by tensor to disk.
//
// Random weights make quality meaningless but speed and memory real: llama.cpp loads the same
// file, so throughput and peak-RSS comparisons at realistic sizes hold (issue 14). Memory: one
// tensor's encoded bytes plus one row of floats; the file is written with GgufWriter's streaming
// path (header first, data as produced, atomic rename).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "tensor/dtype.h"

namespace frugal {
namespace {

struct Shape {
  int64_t n_embd, n_ff, n_layer, n_head, n_head_kv;
};

// Llama 3.2 1B / 3B and Llama 3.1 8B hyper-parameters (Meta's config.json files), GQA with 8
// KV heads, head size 64/128/128.
bool preset(const std::string& name, Shape& s) {
  if (name == "1b") s = {2048, 8192, 16, 32, 8};
  else if (name == "3b") s = {3072, 8192, 28, 24, 8};
  else if (name == "8b") s = {4096, 14336, 32, 32, 8};
  else return false;
  return true;
}

// xorshift64*: fast, deterministic per seed; the distribution only has to look like weights.
struct Rng {
  uint64_t s;
  float uniform() {  // in [-1, 1)
    s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
    return static_cast<float>(static_cast<int64_t>(s * 0x2545F4914F6CDD1DULL) >> 40) / 8388608.0f;
  }
};

int usage() {
  std::fprintf(stderr,
               "usage: make_random_model --tokenizer-from FILE.gguf --out FILE.gguf [--preset 1b|3b|8b]\n"
               "       [--type f16|bf16|q8_0|f32] [--embd N --ff N --layers N --heads N --kv-heads N] [--seed N]\n");
  return 2;
}

int run(int argc, char** argv) {
  Shape shape{};
  preset("1b", shape);
  std::string tokenizer_from, out, type_name = "f16";
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    const std::string v = argv[++i];
    char* end = nullptr;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    const bool numeric = *end == '\0' && n > 0;
    if (a == "--tokenizer-from") tokenizer_from = v;
    else if (a == "--out") out = v;
    else if (a == "--type") type_name = v;
    else if (a == "--preset") { if (!preset(v, shape)) return usage(); }
    else if (a == "--seed" && numeric) seed = static_cast<uint64_t>(n);
    else if (a == "--embd" && numeric) shape.n_embd = n;
    else if (a == "--ff" && numeric) shape.n_ff = n;
    else if (a == "--layers" && numeric) shape.n_layer = n;
    else if (a == "--heads" && numeric) shape.n_head = n;
    else if (a == "--kv-heads" && numeric) shape.n_head_kv = n;
    else return usage();
  }
  if (tokenizer_from.empty() || out.empty()) return usage();
  if (shape.n_embd % shape.n_head != 0 || shape.n_head % shape.n_head_kv != 0) {
    std::fprintf(stderr, "make_random_model: heads must divide the width and KV heads the heads\n");
    return 2;
  }
  DType type;
  uint32_t file_type;  // LLAMA_FTYPE of the layout (llama.h: ALL_F32 0, MOSTLY_F16 1, Q8_0 7, BF16 32)
  if (type_name == "f16") { type = DType::F16; file_type = 1; }
  else if (type_name == "bf16") { type = DType::BF16; file_type = 32; }
  else if (type_name == "q8_0") { type = DType::Q8_0; file_type = 7; }
  else if (type_name == "f32") { type = DType::F32; file_type = 0; }
  else return usage();

  auto source = GgufFile::open(tokenizer_from);
  if (!source.is_ok()) {
    std::fprintf(stderr, "make_random_model: %s\n", source.status().message().c_str());
    return 1;
  }
  const GgufFile& src = **source;
  const GgufValue* tokens = src.find("tokenizer.ggml.tokens");
  if (tokens == nullptr) {
    std::fprintf(stderr, "make_random_model: '%s' has no tokenizer.ggml.tokens\n", tokenizer_from.c_str());
    return 1;
  }
  const int64_t n_vocab = static_cast<int64_t>(tokens->strings.size());
  const int64_t head_dim = shape.n_embd / shape.n_head;

  GgufWriter w(32);
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "random-llama-" + std::to_string(shape.n_embd) + "x" + std::to_string(shape.n_layer));
  w.set_uint32("general.file_type", file_type);
  w.set_uint32("llama.context_length", 8192);
  w.set_uint32("llama.embedding_length", static_cast<uint32_t>(shape.n_embd));
  w.set_uint32("llama.block_count", static_cast<uint32_t>(shape.n_layer));
  w.set_uint32("llama.feed_forward_length", static_cast<uint32_t>(shape.n_ff));
  w.set_uint32("llama.attention.head_count", static_cast<uint32_t>(shape.n_head));
  w.set_uint32("llama.attention.head_count_kv", static_cast<uint32_t>(shape.n_head_kv));
  w.set_uint32("llama.rope.dimension_count", static_cast<uint32_t>(head_dim));
  w.set_float32("llama.rope.freq_base", 500000.0f);
  w.set_float32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_uint32("llama.vocab_size", static_cast<uint32_t>(n_vocab));
  for (const auto& [key, value] : src.metadata()) {
    if (key.rfind("tokenizer.", 0) == 0) w.set_value(key, value);
  }

  struct Spec {
    std::string name;
    std::vector<int64_t> dims;  // GGML order
    bool norm;
  };
  std::vector<Spec> specs;
  const int64_t kv = shape.n_head_kv * head_dim;
  // Embedding tied with the output head, as in Llama 3.2 1B/3B and SmolLM2.
  specs.push_back({"token_embd.weight", {shape.n_embd, n_vocab}, false});
  for (int64_t b = 0; b < shape.n_layer; ++b) {
    const std::string p = "blk." + std::to_string(b) + ".";
    specs.push_back({p + "attn_norm.weight", {shape.n_embd}, true});
    specs.push_back({p + "attn_q.weight", {shape.n_embd, shape.n_embd}, false});
    specs.push_back({p + "attn_k.weight", {shape.n_embd, kv}, false});
    specs.push_back({p + "attn_v.weight", {shape.n_embd, kv}, false});
    specs.push_back({p + "attn_output.weight", {shape.n_embd, shape.n_embd}, false});
    specs.push_back({p + "ffn_norm.weight", {shape.n_embd}, true});
    specs.push_back({p + "ffn_gate.weight", {shape.n_embd, shape.n_ff}, false});
    specs.push_back({p + "ffn_up.weight", {shape.n_embd, shape.n_ff}, false});
    specs.push_back({p + "ffn_down.weight", {shape.n_ff, shape.n_embd}, false});
  }
  specs.push_back({"output_norm.weight", {shape.n_embd}, true});
  for (const Spec& s : specs) w.declare(s.name, s.dims);
  if (Status st = w.begin(out); !st.is_ok()) {
    std::fprintf(stderr, "make_random_model: %s\n", st.message().c_str());
    return 1;
  }
  Rng rng{seed * 0x9E3779B97F4A7C15ULL + 1};
  std::vector<float> row;
  std::vector<uint8_t> bytes;
  int64_t params = 0;
  for (const Spec& s : specs) {
    const DType t = s.norm ? DType::F32 : type;
    const TypeTraits& traits = type_traits(t);
    const int64_t cols = s.dims[0], rows = s.dims.size() > 1 ? s.dims[1] : 1;
    const size_t rb = row_bytes(traits, cols);
    bytes.resize(static_cast<size_t>(rows) * rb);
    row.resize(static_cast<size_t>(cols));
    // Uniform with the standard deviation of a 1/sqrt(fan_in) initialisation, so activations stay
    // in a sane range through the layers; norms are 1 as trained models' roughly are.
    const float scale = std::sqrt(3.0f / static_cast<float>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (float& v : row) v = s.norm ? 1.0f : scale * rng.uniform();
      traits.quantize_row(row.data(), bytes.data() + static_cast<size_t>(r) * rb, cols);
    }
    params += rows * cols;
    if (Status st = w.write_next(t, bytes.data(), bytes.size()); !st.is_ok()) {
      std::fprintf(stderr, "make_random_model: %s\n", st.message().c_str());
      return 1;
    }
  }
  if (Status st = w.finish(); !st.is_ok()) {
    std::fprintf(stderr, "make_random_model: %s\n", st.message().c_str());
    return 1;
  }
  std::printf("wrote %s: %.3f B parameters, %s, %lld layers, width %lld, FFN %lld, %lld/%lld heads, vocab %lld\n", out.c_str(),
              static_cast<double>(params) / 1e9, type_name.c_str(), static_cast<long long>(shape.n_layer),
              static_cast<long long>(shape.n_embd), static_cast<long long>(shape.n_ff), static_cast<long long>(shape.n_head),
              static_cast<long long>(shape.n_head_kv), static_cast<long long>(n_vocab));
  return 0;
}

}  // namespace
}  // namespace frugal

int main(int argc, char** argv) { return frugal::run(argc, argv); }
