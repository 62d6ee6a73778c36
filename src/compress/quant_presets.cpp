// The per-tensor mixes of llama-quantize's presets. The rules restate llama_tensor_get_type (llama.cpp
// src/llama-quant.cpp, b0.3.36 vendored by llama-cpp-python) for dense models without an imatrix;
// the branches for mixture-of-experts (n_expert == 8), Falcon, 70B models and the IQ/TQ presets are
// left out, because frugal runs none of them.
#include "compress/quant_presets.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <vector>

#include "tensor/weight_codec.h"

namespace frugal::compress {
namespace {

// llama_ftype values (llama.h).
enum FileType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 7, kQ5_0 = 8, kQ5_1 = 9, kQ2_K = 10, kQ3_K_S = 11,
  kQ3_K_M = 12, kQ3_K_L = 13, kQ4_K_S = 14, kQ4_K_M = 15, kQ5_K_S = 16, kQ5_K_M = 17, kQ6_K = 18,
  kQ2_K_S = 21, kBF16 = 32,
};

const QuantPreset kPresets[] = {
    {"Q2_K", kQ2_K, DType::Q2_K, "q2_K; attn_v q3_K (q4_K when 4+ query heads share a KV head), ffn_down and attn_output q3_K"},
    {"Q2_K_S", kQ2_K_S, DType::Q2_K, "q2_K; attn_v q4_K when 4+ query heads share a KV head, first 1/8 of ffn_down q4_K"},
    {"Q3_K_S", kQ3_K_S, DType::Q3_K, "q3_K everywhere"},
    {"Q3_K_M", kQ3_K_M, DType::Q3_K, "q3_K; attn_v q5_K in the first 2 blocks then q4_K, ffn_down q5_K (first 1/16) else q4_K, attn_output q4_K"},
    {"Q3_K_L", kQ3_K_L, DType::Q3_K, "q3_K; attn_v, ffn_down and attn_output q5_K"},
    {"Q4_K_S", kQ4_K_S, DType::Q4_K, "q4_K; attn_v q5_K in the first 4 blocks, ffn_down q5_K in the first 1/8"},
    {"Q4_K_M", kQ4_K_M, DType::Q4_K, "q4_K; attn_v and ffn_down q6_K in the first and last 1/8 of the blocks and every third between"},
    {"Q5_K_S", kQ5_K_S, DType::Q5_K, "q5_K everywhere"},
    {"Q5_K_M", kQ5_K_M, DType::Q5_K, "q5_K; attn_v and ffn_down q6_K in the first and last 1/8 of the blocks and every third between"},
    {"Q6_K", kQ6_K, DType::Q6_K, "q6_K everywhere"},
    {"Q4_0", kQ4_0, DType::Q4_0, "q4_0 everywhere"},
    {"Q4_1", kQ4_1, DType::Q4_1, "q4_1 everywhere"},
    {"Q5_0", kQ5_0, DType::Q5_0, "q5_0 everywhere"},
    {"Q5_1", kQ5_1, DType::Q5_1, "q5_1 everywhere"},
    {"Q8_0", kQ8_0, DType::Q8_0, "q8_0 everywhere"},
    {"F16", kF16, DType::F16, "f16 everywhere (no quantization)"},
    {"BF16", kBF16, DType::BF16, "bf16 everywhere (no quantization)"},
};

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

bool is_quantized(DType t) { return t != DType::F32 && t != DType::F16 && t != DType::BF16; }

// What llama-quantize quantizes at all (tensor_allows_quantization, for the architectures frugal
// runs): 2-D (or 3-D) tensors whose name ends in "weight", except norms.
bool allows_quantization(const GgufTensorInfo& t) {
  if (t.dims.size() < 2) return false;
  const std::string& n = t.name;
  if (n.size() < 6 || n.compare(n.size() - 6, 6, "weight") != 0) return false;
  return n.find("_norm.weight") == std::string::npos;
}

enum class Category { kOutput, kTokenEmbedding, kAttentionV, kAttentionK, kAttentionQ, kAttentionOutput, kFfnUp, kFfnGate, kFfnDown, kOther };

// tensor_get_category: first match wins, as in llama.cpp (attn_qkv and attn_kv_b count as attn_v,
// the tensors most sensitive to quantization).
Category category_of(const std::string& name) {
  if (name == "output.weight") return Category::kOutput;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return Category::kTokenEmbedding;
  if (name.find("attn_qkv.weight") != std::string::npos || name.find("attn_kv_b.weight") != std::string::npos ||
      name.find("attn_v.weight") != std::string::npos) {
    return Category::kAttentionV;
  }
  if (name.find("attn_k.weight") != std::string::npos) return Category::kAttentionK;
  if (name.find("attn_q.weight") != std::string::npos) return Category::kAttentionQ;
  if (name.find("attn_output.weight") != std::string::npos) return Category::kAttentionOutput;
  if (name.find("ffn_up") != std::string::npos) return Category::kFfnUp;
  if (name.find("ffn_gate") != std::string::npos) return Category::kFfnGate;
  if (name.find("ffn_down") != std::string::npos) return Category::kFfnDown;
  return Category::kOther;
}

// llama.cpp's "use more bits" layers: the first and last eighth, and every third one between.
bool use_more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// tensor_type_fallback: a row length the block does not divide moves to a 32-block type of at
// least as many bits, else to F16.
DType fallback(DType t, int64_t cols) {
  if (cols % type_traits(t).block_size == 0) return t;
  const DType r = weight_codec(t).short_rows;
  return cols % type_traits(r).block_size == 0 ? r : DType::F16;
}

int blk_index(const std::string& name) {
  int layer = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) return -1;
  return layer;
}

}  // namespace

Result<QuantPreset> find_preset(const std::string& name) {
  const std::string key = upper(name);
  for (const QuantPreset& p : kPresets) {
    if (key == p.name) return p;
  }
  const bool llama_only = key.rfind("IQ", 0) == 0 || key.rfind("TQ", 0) == 0 || key.rfind("MXFP4", 0) == 0 || key == "Q1_0" ||
                          key == "Q2_0" || key == "COPY";
  return Status::error("unknown preset '" + name + "'" +
                       (llama_only ? std::string(" (a llama-quantize type frugal does not store)") : std::string()) +
                       "; frugal knows " + preset_names());
}

std::string preset_names() {
  std::string out;
  for (const QuantPreset& p : kPresets) out += (out.empty() ? "" : ", ") + std::string(p.name);
  return out;
}

std::string preset_table() {
  std::string out;
  char line[256];
  for (const QuantPreset& p : kPresets) {
    std::snprintf(line, sizeof line, "  %-7s %s\n", p.name, p.summary);
    out += line;
  }
  return out;
}

Result<std::map<std::string, DType>> preset_tensor_types(const QuantPreset& preset, const GgufFile& file) {
  const std::string arch = file.get_string_or("general.architecture", "");
  const int64_t n_layer = file.get_int_or(arch + ".block_count", 0);
  const int64_t n_head = file.get_int_or(arch + ".attention.head_count", 0);
  const int64_t n_head_kv = file.get_int_or(arch + ".attention.head_count_kv", n_head);
  if (n_layer <= 0 || n_head <= 0 || n_head_kv <= 0) {
    return Status::error("'" + file.path() + "' lacks the block and head counts a preset's mix depends on");
  }
  if (file.get_int_or(arch + ".expert_count", 0) > 1) return Status::error("presets for mixture-of-experts models are not implemented");
  const int64_t n_gqa = n_head / n_head_kv;

  // llama-quantize walks the tensors by block, then by name (llama_model_loader's weight order);
  // its attn_v and ffn_* counters are positions in that walk.
  std::vector<const GgufTensorInfo*> order;
  for (const GgufTensorInfo& t : file.tensors()) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](const GgufTensorInfo* a, const GgufTensorInfo* b) {
    const int la = blk_index(a->name), lb = blk_index(b->name);
    return la != lb ? la < lb : a->name < b->name;
  });
  bool tied = true;
  int64_t n_attention_v = 0;
  for (const GgufTensorInfo* t : order) {
    const Category c = category_of(t->name);
    if (c == Category::kOutput) tied = false;
    if (c == Category::kAttentionV) ++n_attention_v;
  }

  const uint32_t f = preset.file_type;
  int64_t i_attention_v = 0, i_ffn_down = 0;
  std::map<std::string, DType> types;
  for (const GgufTensorInfo* t : order) {
    if (!allows_quantization(*t)) {
      types[t->name] = t->traits->type;
      continue;
    }
    DType type = preset.base;
    const int64_t cols = t->dims[0];
    if (!is_quantized(type)) {
      types[t->name] = type;
      continue;
    }
    const Category c = category_of(t->name);
    if (c == Category::kOutput || (tied && c == Category::kTokenEmbedding)) {
      // The output head (or the embedding it shares) is the most sensitive matrix: q6_K, or q8_0
      // when the base block does not divide its rows.
      if (cols % type_traits(type).block_size != 0) {
        type = DType::Q8_0;
      } else if (type != DType::Q8_0) {
        type = DType::Q6_K;
      }
    } else if (c == Category::kAttentionV) {
      if (f == kQ2_K) {
        type = n_gqa >= 4 ? DType::Q4_K : DType::Q3_K;
      } else if (f == kQ2_K_S && n_gqa >= 4) {
        type = DType::Q4_K;
      } else if (f == kQ3_K_M) {
        type = i_attention_v < 2 ? DType::Q5_K : DType::Q4_K;
      } else if (f == kQ3_K_L) {
        type = DType::Q5_K;
      } else if ((f == kQ4_K_M || f == kQ5_K_M) && use_more_bits(i_attention_v, n_attention_v)) {
        type = DType::Q6_K;
      } else if (f == kQ4_K_S && i_attention_v < 4) {
        type = DType::Q5_K;
      }
      ++i_attention_v;
    } else if (c == Category::kFfnDown) {
      const int64_t i = i_ffn_down, n = n_layer;
      if (f == kQ2_K) {
        type = DType::Q3_K;
      } else if (f == kQ2_K_S) {
        if (i < n / 8) type = DType::Q4_K;
      } else if (f == kQ3_K_M) {
        type = i < n / 16 ? DType::Q5_K : DType::Q4_K;
      } else if (f == kQ3_K_L) {
        type = DType::Q5_K;
      } else if (f == kQ4_K_M) {
        if (use_more_bits(i, n)) type = DType::Q6_K;
      } else if (f == kQ5_K_M && use_more_bits(i, n)) {
        type = DType::Q6_K;
      } else if (f == kQ4_K_S && i < n / 8) {
        type = DType::Q5_K;
      }
      ++i_ffn_down;
    } else if (c == Category::kAttentionOutput) {
      if (f == kQ2_K) type = DType::Q3_K;
      else if (f == kQ3_K_M) type = DType::Q4_K;
      else if (f == kQ3_K_L) type = DType::Q5_K;
    }
    types[t->name] = fallback(type, cols);
  }
  return types;
}

}  // namespace frugal::compress
