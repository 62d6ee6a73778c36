// Tensor names (llama.cpp's GGUF convention, gguf-py/gguf/constants.py) and frugal's own
// metadata keys, spelled once here for the loader, the writers, the compressors and the CLI.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace frugal::names {

// ---- Tensors outside the decoder blocks ----
inline constexpr const char* kTokenEmbedding = "token_embd.weight";
inline constexpr const char* kOutput = "output.weight";
inline constexpr const char* kOutputNorm = "output_norm.weight";

// ---- Tensors of decoder block N: "blk.N.<suffix>" ----
enum class BlockTensor {
  kAttnNorm,
  kFfnNorm,
  kQNorm,          // Gemma 3: per-head RMSNorm of the queries
  kKNorm,          // Gemma 3: per-head RMSNorm of the keys
  kPostAttnNorm,   // Gemma 3
  kPostFfnNorm,    // Gemma 3
  kQ,
  kK,
  kV,
  kAttnOutput,
  kGate,
  kUp,
  kDown,
};

// The seven matrices of a block, in the order the forward pass multiplies them.
enum class BlockMatrix { kQ, kK, kV, kAttnOutput, kGate, kUp, kDown };
inline constexpr BlockMatrix kBlockMatrices[] = {BlockMatrix::kQ,    BlockMatrix::kK,  BlockMatrix::kV,   BlockMatrix::kAttnOutput,
                                                 BlockMatrix::kGate, BlockMatrix::kUp, BlockMatrix::kDown};

constexpr BlockTensor block_tensor_of(BlockMatrix m) {
  switch (m) {
    case BlockMatrix::kQ: return BlockTensor::kQ;
    case BlockMatrix::kK: return BlockTensor::kK;
    case BlockMatrix::kV: return BlockTensor::kV;
    case BlockMatrix::kAttnOutput: return BlockTensor::kAttnOutput;
    case BlockMatrix::kGate: return BlockTensor::kGate;
    case BlockMatrix::kUp: return BlockTensor::kUp;
    case BlockMatrix::kDown: return BlockTensor::kDown;
  }
  return BlockTensor::kQ;
}

// "attn_q.weight", "ffn_down.weight", … (the part after "blk.N.").
constexpr const char* block_tensor_suffix(BlockTensor t) {
  switch (t) {
    case BlockTensor::kAttnNorm: return "attn_norm.weight";
    case BlockTensor::kFfnNorm: return "ffn_norm.weight";
    case BlockTensor::kQNorm: return "attn_q_norm.weight";
    case BlockTensor::kKNorm: return "attn_k_norm.weight";
    case BlockTensor::kPostAttnNorm: return "post_attention_norm.weight";
    case BlockTensor::kPostFfnNorm: return "post_ffw_norm.weight";
    case BlockTensor::kQ: return "attn_q.weight";
    case BlockTensor::kK: return "attn_k.weight";
    case BlockTensor::kV: return "attn_v.weight";
    case BlockTensor::kAttnOutput: return "attn_output.weight";
    case BlockTensor::kGate: return "ffn_gate.weight";
    case BlockTensor::kUp: return "ffn_up.weight";
    case BlockTensor::kDown: return "ffn_down.weight";
  }
  return "";
}

inline std::string block_prefix(int64_t layer) { return "blk." + std::to_string(layer) + "."; }
inline std::string block_tensor(int64_t layer, BlockTensor t) { return block_prefix(layer) + block_tensor_suffix(t); }
inline std::string block_matrix(int64_t layer, BlockMatrix m) { return block_tensor(layer, block_tensor_of(m)); }

// The layer and matrix of a block matrix name ("blk.3.ffn_up.weight"), or nothing.
inline std::optional<std::pair<int64_t, BlockMatrix>> parse_block_matrix(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return std::nullopt;
  const size_t dot = name.find('.', 4);
  if (dot == std::string_view::npos || dot == 4) return std::nullopt;
  int64_t layer = 0;
  for (size_t i = 4; i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9' || layer > (int64_t{1} << 40)) return std::nullopt;
    layer = layer * 10 + (name[i] - '0');
  }
  const std::string_view suffix = name.substr(dot + 1);
  for (BlockMatrix m : kBlockMatrices) {
    if (suffix == block_tensor_suffix(block_tensor_of(m))) return std::make_pair(layer, m);
  }
  return std::nullopt;
}

// The layer of any tensor of a block ("blk.3.attn_norm.weight", "blk.3.ffn_down.outlier_weight")
// and the rest of its name after "blk.N." ("attn_norm.weight"), or nothing for other tensors.
inline std::optional<std::pair<int64_t, std::string>> parse_block_tensor(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return std::nullopt;
  const size_t dot = name.find('.', 4);
  if (dot == std::string_view::npos || dot == 4) return std::nullopt;
  int64_t layer = 0;
  for (size_t i = 4; i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9' || layer > (int64_t{1} << 40)) return std::nullopt;
    layer = layer * 10 + (name[i] - '0');
  }
  return std::make_pair(layer, std::string(name.substr(dot + 1)));
}

// LLM.int8() outlier parts of matrix "STEM.weight": STEM.outlier_columns, STEM.outlier_weight.
inline constexpr const char* kWeightSuffix = ".weight";
inline constexpr const char* kOutlierColumnsSuffix = ".outlier_columns";
inline constexpr const char* kOutlierWeightSuffix = ".outlier_weight";
// "blk.0.attn_q.weight" -> "blk.0.attn_q".
inline std::string weight_stem(const std::string& name) {
  const std::string_view suffix = kWeightSuffix;
  if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    return name.substr(0, name.size() - suffix.size());
  }
  return name;
}

// ---- Metadata keys ----
// Hyper-parameters are "{architecture}.<suffix>" (ggml docs/gguf.md).
inline constexpr const char* kBlockCountSuffix = "block_count";
inline constexpr const char* kFeedForwardLengthSuffix = "feed_forward_length";
inline std::string architecture_key(const std::string& architecture, const char* suffix) { return architecture + "." + suffix; }
inline constexpr const char* kArchitectureKey = "general.architecture";
inline constexpr const char* kFileTypeKey = "general.file_type";
// How the block matrices' inputs are quantized at run time: "per_block" (default, as llama.cpp)
// or "per_token" (written by frugal quantize --method smoothquant|w8a8|llm-int8).
inline constexpr const char* kActivationQuantKey = "frugal.activation_quant";
// Every key frugal quantize writes starts so; re-quantizing replaces them all.
inline constexpr const char* kQuantizeKeyPrefix = "frugal.quantize.";
inline constexpr const char* kQuantizeMethodKey = "frugal.quantize.method";
inline constexpr const char* kQuantizeFormatKey = "frugal.quantize.format";
// Written by frugal prune: the method, the target sparsity of the block matrices and the pattern.
inline constexpr const char* kPruneMethodKey = "frugal.prune.method";
inline constexpr const char* kPruneSparsityKey = "frugal.prune.sparsity";
inline constexpr const char* kPrunePatternKey = "frugal.prune.pattern";

}  // namespace frugal::names
