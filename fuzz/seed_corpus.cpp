// Writes the fuzzers' seed corpora (scripts/fuzz.sh runs it; nothing binary is committed):
//   OUT/gguf_model/  tiny random Llama models from the tests' writer (several weight types, tied
//                    and untied output), truncated copies cut inside each part of the layout, and
//                    copies with a few bits flipped in the header and metadata;
//   OUT/tokenizer/   the tokenizer parity texts, each behind a selector byte (tokenizer_fuzzer.cpp).
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "support/test_support.h"
#include "support/tokenizer_parity.h"
#include "tensor/nm_sparse.h"
#include "tensor/sparse_q4.h"

namespace {

using Bytes = std::vector<char>;

bool write_bytes(const std::string& path, const char* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data, static_cast<std::streamsize>(size));
  return static_cast<bool>(out);
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(float));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// A copy of a tiny Llama model reshaped into the layouts the loader binds differently:
// `gemma3` renames the hyper-parameters and adds the per-head Q/K norms, the post-attention/FFN
// norms and a sliding window; `per_token` marks the (Q8_0) matrices for per-token activation
// quantization and gives one of them an LLM.int8() outlier part; `huge` adds a tensor whose byte
// size does not fit in 64 bits.
frugal::Status derive(const std::string& from, const std::string& to, bool gemma3, bool per_token, bool huge) {
  auto opened = frugal::GgufFile::open(from);
  if (!opened) return opened.status();
  const frugal::GgufFile& f = *opened.value();
  frugal::GgufWriter w(f.alignment());
  for (const auto& [key, value] : f.metadata()) {
    w.set_value(gemma3 && key.rfind("llama.", 0) == 0 ? "gemma3" + key.substr(5) : key, value);
  }
  for (const auto& t : f.tensors()) w.add_tensor(t.name, t.traits->type, t.dims, std::vector<uint8_t>(t.data, t.data + t.bytes));
  const int64_t n_embd = f.get_int_or("llama.embedding_length", 0);
  const int64_t n_head = f.get_int_or("llama.attention.head_count", 1);
  const int64_t n_layer = f.get_int_or("llama.block_count", 0);
  if (gemma3) {
    w.set_string("general.architecture", "gemma3");
    w.set_uint32("gemma3.attention.sliding_window", 4);
    w.set_string("tokenizer.chat_template", "{{ '<start_of_turn>user' }}");
    const int64_t head_dim = n_embd / n_head;
    for (int64_t i = 0; i < n_layer; ++i) {
      const std::string p = "blk." + std::to_string(i) + ".";
      w.add_tensor(p + "attn_q_norm.weight", frugal::DType::F32, {head_dim}, f32_bytes(std::vector<float>(head_dim, 1.0f)));
      w.add_tensor(p + "attn_k_norm.weight", frugal::DType::F32, {head_dim}, f32_bytes(std::vector<float>(head_dim, 0.5f)));
      w.add_tensor(p + "post_attention_norm.weight", frugal::DType::F32, {n_embd}, f32_bytes(std::vector<float>(n_embd, 1.0f)));
      w.add_tensor(p + "post_ffw_norm.weight", frugal::DType::F32, {n_embd}, f32_bytes(std::vector<float>(n_embd, 1.0f)));
    }
  }
  if (huge) {
    // An extra tensor whose F32 size, 2^22 * 2^40 * 4 bytes, is 2^64: it wraps to 0 in 64 bits.
    w.add_tensor("extra.huge", frugal::DType::F32, {int64_t{1} << 22, int64_t{1} << 40}, {});
  }
  if (per_token) {
    w.set_string("frugal.activation_quant", "per_token");
    const frugal::GgufTensorInfo* q = f.find_tensor("blk.0.attn_q.weight");
    if (q == nullptr) return frugal::Status::error("no blk.0.attn_q.weight in " + from);
    const int64_t rows = q->dims[1];
    w.add_tensor("blk.0.attn_q.outlier_columns", frugal::DType::F32, {2}, f32_bytes({1.0f, 5.0f}));
    std::vector<uint8_t> halves(static_cast<size_t>(2 * rows * 2), 0);
    for (size_t k = 1; k < halves.size(); k += 2) halves[k] = 0x3C;  // 1.0 in IEEE half precision
    w.add_tensor("blk.0.attn_q.outlier_weight", frugal::DType::F16, {2, rows}, halves);
  }
  return w.write(to);
}

// Copies of `from` with one numeric hyper-parameter or token id set to an extreme (as a 64-bit
// integer): the arithmetic on sizes that a random bit flip rarely reaches.
int write_extremes(const std::string& from, const std::string& dir) {
  auto opened = frugal::GgufFile::open(from);
  if (!opened) return 0;
  const frugal::GgufFile& f = *opened.value();
  int written = 0;
  const int64_t extremes[] = {0, -1, int64_t{1} << 31, int64_t{1} << 40, INT64_MAX, INT64_MIN};
  for (const auto& [key, value] : f.metadata()) {
    if (!value.is_integer() && value.type != frugal::GgufType::kFloat32) continue;
    for (size_t e = 0; e < std::size(extremes); ++e) {
      frugal::GgufWriter w(f.alignment());
      for (const auto& [k, v] : f.metadata()) {
        if (k != key) {
          w.set_value(k, v);
          continue;
        }
        frugal::GgufValue changed;
        changed.type = frugal::GgufType::kInt64;
        changed.int_value = extremes[e];
        changed.uint_value = static_cast<uint64_t>(extremes[e]);
        w.set_value(k, changed);
      }
      for (const auto& t : f.tensors()) w.add_tensor(t.name, t.traits->type, t.dims, std::vector<uint8_t>(t.data, t.data + t.bytes));
      if (w.write(dir + "/extreme_" + key + "_" + std::to_string(e) + ".gguf")) ++written;
    }
  }
  return written;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  const std::string gguf_dir = out + "/gguf_model", text_dir = out + "/tokenizer";
  for (const std::string& d : {out, gguf_dir, text_dir}) ::mkdir(d.c_str(), 0755);

  // Small enough that mutations land in the header, metadata and tensor infos often, and that a
  // forward pass per input stays cheap; one file per weight layout the loader binds differently.
  struct Seed {
    const char* name;
    frugal::testing::TinyModelOptions options;
  };
  std::vector<Seed> seeds;
  {
    frugal::testing::TinyModelOptions o;
    o.n_embd = 16, o.n_layer = 1, o.n_head = 2, o.n_head_kv = 1, o.n_ff = 16, o.n_ctx_train = 32;
    o.tied_output = true;
    seeds.push_back({"tiny_f32_tied", o});
    o.weight_type = frugal::DType::F16;
    o.tied_output = false;
    o.seed = 2;
    seeds.push_back({"tiny_f16", o});
    o.n_embd = 32, o.n_head = 4, o.n_head_kv = 2, o.n_ff = 32, o.tied_output = true;
    o.weight_type = frugal::DType::Q8_0;
    o.seed = 3;
    seeds.push_back({"tiny_q8_0_tied", o});
    o.weight_type = frugal::DType::Q4_0;
    o.n_layer = 2;
    o.seed = 4;
    seeds.push_back({"tiny_q4_0_tied", o});
    // The compact sparse formats (issue 10), whose loader validation walks masks and value counts:
    // rows of 64 (their block), every matrix and the embedding in the format.
    o.n_embd = 64, o.n_head = 2, o.n_head_kv = 1, o.n_ff = 64, o.n_layer = 1;
    o.weight_type = *frugal::sparse_q4_type(64);
    o.seed = 5;
    seeds.push_back({"tiny_sparse_q4_tied", o});
    o.weight_type = *frugal::nm_type(4, 2, 4);
    o.seed = 6;
    seeds.push_back({"tiny_nm_q4_tied", o});
  }
  int written = 0;
  Bytes first;
  for (const Seed& s : seeds) {
    const std::string path = gguf_dir + "/" + s.name + ".gguf";
    const frugal::Status status = frugal::testing::write_tiny_model(path, s.options);
    if (!status) {
      std::fprintf(stderr, "seed_corpus: %s\n", status.message().c_str());
      return 1;
    }
    ++written;
    if (first.empty()) first = read_bytes(path);
  }
  for (const auto& [from, to, gemma3, per_token, huge] :
       {std::tuple{"tiny_f32_tied", "tiny_gemma3_f32", true, false, false},
        std::tuple{"tiny_q8_0_tied", "tiny_q8_0_per_token", false, true, false},
        std::tuple{"tiny_f32_tied", "tiny_f32_huge_tensor", false, false, true}}) {
    const frugal::Status status =
        derive(gguf_dir + "/" + from + ".gguf", gguf_dir + "/" + to + ".gguf", gemma3, per_token, huge);
    if (!status) {
      std::fprintf(stderr, "seed_corpus: %s\n", status.message().c_str());
      return 1;
    }
    ++written;
  }
  written += write_extremes(gguf_dir + "/tiny_q4_0_tied.gguf", gguf_dir);
  if (first.size() < 4096) {
    std::fprintf(stderr, "seed_corpus: the first seed model is only %zu bytes\n", first.size());
    return 1;
  }

  // Truncations: inside the header, the metadata (keys, the token array), the tensor infos and
  // the tensor data, and one byte short.
  const size_t cuts[] = {3, 8, 20, 30, 200, first.size() / 8, first.size() / 4, first.size() / 2, first.size() - 1};
  for (size_t cut : cuts) {
    write_bytes(gguf_dir + "/truncated_" + std::to_string(cut) + ".gguf", first.data(), cut);
    ++written;
  }

  // Bit flips in the first 4 KB (header, counts, key lengths, value types, token strings).
  std::mt19937 rng(12345);
  for (int variant = 0; variant < 8; ++variant) {
    Bytes b = first;
    const int flips = 1 + variant % 4;
    for (int k = 0; k < flips; ++k) b[rng() % 4096] ^= static_cast<char>(1u << (rng() % 8));
    write_bytes(gguf_dir + "/bitflip_" + std::to_string(variant) + ".gguf", b.data(), b.size());
    ++written;
  }

  // Tokenizer texts: selector byte (tokenizer index in the low bits, flags above), then the text.
  const auto& cases = frugal::testing::tokenizer_cases();
  for (size_t i = 0; i < cases.size(); ++i) {
    for (unsigned flags : {0x00u, 0x40u, 0x90u}) {
      std::string input(1, static_cast<char>((i % 16) | flags));
      input += cases[i];
      write_bytes(text_dir + "/case_" + std::to_string(i) + "_" + std::to_string(flags) + ".txt", input.data(), input.size());
      ++written;
    }
  }
  // Decode mode: a few ids, one negative and one past any vocabulary.
  const int32_t ids[] = {0, 1, 255, 256, 270, 271, -1, 1 << 30};
  for (unsigned selector : {0x20u, 0x25u, 0xA0u, 0xA8u}) {
    std::string input(1, static_cast<char>(selector));
    input.append(reinterpret_cast<const char*>(ids), sizeof ids);
    write_bytes(text_dir + "/decode_" + std::to_string(selector) + ".bin", input.data(), input.size());
    ++written;
  }
  std::printf("seed_corpus: %d files in %s\n", written, out.c_str());
  return 0;
}
