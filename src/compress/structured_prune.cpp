// Structured pruning (see structured_prune.h): block and FFN-channel selection, and the GGUF
// surgery that writes the smaller model.
#include "compress/structured_prune.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/timer.h"
#include "compress/calibration.h"
#include "compress/format_grid.h"
#include "io/gguf_names.h"
#include "io/gguf_writer.h"
#include "model/model_config.h"
#include "tensor/generic_group.h"
#include "tensor/weight_codec.h"

namespace frugal {
namespace compress {

namespace {

Status check_sparsity(double sparsity) {
  if (!(sparsity > 0.0 && sparsity < 1.0)) {
    return Status::error("--sparsity must be a fraction between 0 and 1 (exclusive), got " + std::to_string(sparsity));
  }
  return Status::ok();
}

}  // namespace

Result<int64_t> blocks_to_remove(int64_t n_layer, double sparsity) {
  FRUGAL_RETURN_IF_ERROR(check_sparsity(sparsity));
  const int64_t count = std::llround(sparsity * static_cast<double>(n_layer));
  if (count < 1) {
    return Status::error("--sparsity " + std::to_string(sparsity) + " of " + std::to_string(n_layer) +
                         " blocks rounds to no block (one block is " + std::to_string(1.0 / static_cast<double>(n_layer)) + ")");
  }
  if (count >= n_layer) {
    return Status::error("--sparsity " + std::to_string(sparsity) + " would remove all " + std::to_string(n_layer) + " blocks");
  }
  return count;
}

std::vector<int64_t> least_influential_blocks(const std::vector<double>& influence, int64_t count) {
  std::vector<int64_t> order(influence.size());
  std::iota(order.begin(), order.end(), 0);
  // Ties go to the later block: deeper blocks are the redundant ones in both papers.
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return influence[a] < influence[b] || (influence[a] == influence[b] && a > b);
  });
  order.resize(std::min<size_t>(order.size(), static_cast<size_t>(std::max<int64_t>(count, 0))));
  std::sort(order.begin(), order.end());
  return order;
}

Result<int64_t> ffn_width_after(int64_t n_ff, double sparsity) {
  FRUGAL_RETURN_IF_ERROR(check_sparsity(sparsity));
  const int64_t keep = std::llround((1.0 - sparsity) * static_cast<double>(n_ff) / 32.0) * 32;
  if (keep <= 0) {
    return Status::error("--sparsity " + std::to_string(sparsity) + " leaves no FFN channel of " + std::to_string(n_ff) +
                         " (widths are kept multiples of 32)");
  }
  if (keep >= n_ff) {
    return Status::error("--sparsity " + std::to_string(sparsity) + " removes no FFN channel of " + std::to_string(n_ff) +
                         " (widths are kept multiples of 32)");
  }
  return keep;
}

std::vector<double> ffn_channel_scores(const float* gate, const float* up, const float* down, int64_t n_embd, int64_t n_ff,
                                       const std::vector<double>& input_square_sums, const std::vector<double>& hidden_square_sums) {
  std::vector<double> input_norm(n_embd), a(n_ff, 0.0), b(n_ff, 0.0), down_square(n_ff, 0.0);
  for (int64_t j = 0; j < n_embd; ++j) input_norm[j] = std::sqrt(std::max(0.0, input_square_sums[j]));
  for (int64_t c = 0; c < n_ff; ++c) {
    double sum = 0;
    for (int64_t j = 0; j < n_embd; ++j) sum += (std::fabs(gate[c * n_embd + j]) + std::fabs(up[c * n_embd + j])) * input_norm[j];
    a[c] = sum;
  }
  for (int64_t r = 0; r < n_embd; ++r) {
    for (int64_t c = 0; c < n_ff; ++c) down_square[c] += static_cast<double>(down[r * n_ff + c]) * down[r * n_ff + c];
  }
  for (int64_t c = 0; c < n_ff; ++c) b[c] = std::sqrt(down_square[c]) * std::sqrt(std::max(0.0, hidden_square_sums[c]));
  const double mean_a = std::accumulate(a.begin(), a.end(), 0.0) / static_cast<double>(n_ff);
  const double mean_b = std::accumulate(b.begin(), b.end(), 0.0) / static_cast<double>(n_ff);
  std::vector<double> scores(n_ff);
  for (int64_t c = 0; c < n_ff; ++c) {
    scores[c] = (mean_a > 0 ? a[c] / mean_a : 0.0) + (mean_b > 0 ? b[c] / mean_b : 0.0);
  }
  return scores;
}

std::vector<int64_t> top_channels(const std::vector<double>& scores, int64_t keep) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  keep = std::clamp<int64_t>(keep, 0, static_cast<int64_t>(scores.size()));
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); });
  order.resize(static_cast<size_t>(keep));
  std::sort(order.begin(), order.end());
  return order;
}

Result<int64_t> kv_groups_to_remove(int64_t n_groups, double sparsity) {
  FRUGAL_RETURN_IF_ERROR(check_sparsity(sparsity));
  const int64_t count = std::llround(sparsity * static_cast<double>(n_groups));
  if (count < 1) {
    return Status::error("--sparsity " + std::to_string(sparsity) + " of " + std::to_string(n_groups) +
                         " KV groups rounds to no group (one group is " + std::to_string(1.0 / static_cast<double>(n_groups)) + ")");
  }
  if (count >= n_groups) {
    return Status::error("--sparsity " + std::to_string(sparsity) + " would remove all " + std::to_string(n_groups) + " KV groups");
  }
  return count;
}

std::vector<double> kv_group_scores(const float* wo, int64_t n_embd, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                                    const std::vector<double>& output_square_sums) {
  const int64_t qd = n_head * head_dim, group = n_head / n_head_kv;
  std::vector<double> column_square(qd, 0.0), scores(n_head_kv, 0.0);
  for (int64_t r = 0; r < n_embd; ++r) {
    for (int64_t j = 0; j < qd; ++j) column_square[j] += static_cast<double>(wo[r * qd + j]) * wo[r * qd + j];
  }
  for (int64_t h = 0; h < n_head; ++h) {
    double weight = 0, activation = 0;
    for (int64_t i = 0; i < head_dim; ++i) {
      weight += column_square[h * head_dim + i];
      activation += std::max(0.0, output_square_sums[h * head_dim + i]);
    }
    scores[h / group] += std::sqrt(weight) * std::sqrt(activation);
  }
  return scores;
}

DType type_for_row_length(DType type, int64_t cols) {
  auto fits = [&](DType t) { return cols % type_traits(t).block_size == 0; };
  if (fits(type)) return type;
  if (const auto generic = generic_group_format(type)) {
    // The largest group of the same bits that divides the row.
    for (int64_t g = generic->group / 2; g >= 32; g /= 2) {
      if (cols % g == 0) return *generic_group_type(generic->bits, g, generic->symmetric);
    }
  }
  // llama-quantize's fallbacks for rows that are not a multiple of a 256-element super-block.
  const DType short_rows = weight_codec(type).short_rows;
  const DType fallback = short_rows != type ? short_rows : DType::Q8_0;
  if (fits(fallback)) return fallback;
  return fits(DType::Q8_0) ? DType::Q8_0 : DType::F32;
}

}  // namespace compress

Status check_blocks_removable(const ModelConfig& config) {
  const auto windowed = std::count(config.layer_is_windowed.begin(), config.layer_is_windowed.end(), true);
  if (windowed > 0 && windowed < config.n_layer) {
    return Status::error(config.architecture + " picks each block's attention (sliding-window or global) from its index, so removing "
                         "blocks would change the attention of the blocks after them; layer pruning is not supported for it");
  }
  return Status::ok();
}

namespace {

// A scalar of the same GGUF type as `like` holding `value`.
GgufValue integer_like(const GgufValue& like, int64_t value) {
  GgufValue v = like;
  v.int_value = value;
  v.uint_value = static_cast<uint64_t>(value);
  v.float_value = static_cast<double>(value);
  return v;
}

std::vector<uint8_t> stored_bytes(const GgufTensorInfo& t) { return std::vector<uint8_t>(t.data, t.data + t.bytes); }

void copy_metadata(const GgufFile& input, GgufWriter& writer, const ExtraMetadata& extra) {
  for (const auto& [key, value] : input.metadata()) writer.set_value(key, value);
  if (extra) extra(writer);
}

std::vector<float> dequantize_tensor(const GgufTensorInfo& t, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  const size_t stride = row_bytes(*t.traits, cols);
  for (int64_t r = 0; r < rows; ++r) t.traits->dequantize_row(t.data + r * stride, out.data() + r * cols, cols);
  return out;
}

// The rows `rows` of a matrix, copied as stored: rows are whole blocks in every format.
std::vector<uint8_t> copy_rows(const GgufTensorInfo& t, int64_t cols, const std::vector<int64_t>& rows) {
  const size_t stride = row_bytes(*t.traits, cols);
  std::vector<uint8_t> bytes;
  bytes.reserve(stride * rows.size());
  for (int64_t r : rows) bytes.insert(bytes.end(), t.data + r * stride, t.data + (r + 1) * stride);
  return bytes;
}

struct Reencoded {
  DType type;
  std::vector<uint8_t> bytes;
};

// The columns `columns` of a rows x cols matrix: block boundaries move, so every row is decoded
// and re-encoded in its type or the nearest whose block divides the new length, weighted by the
// columns' importance (E[x^2] of the input) where the format's grid allows — never worse than
// round-to-nearest in that weighted error, llama.cpp's imatrix criterion — else plainly encoded.
Reencoded keep_columns(const GgufTensorInfo& t, int64_t rows, int64_t cols, const std::vector<int64_t>& columns,
                       const std::vector<float>& importance) {
  const std::vector<float> values = dequantize_tensor(t, rows, cols);
  const int64_t width = static_cast<int64_t>(columns.size());
  const DType to = compress::type_for_row_length(static_cast<DType>(t.type_id), width);
  const TypeTraits& traits = type_traits(to);
  std::vector<float> row(width);
  Reencoded out{to, std::vector<uint8_t>(row_bytes(traits, width) * rows)};
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < width; ++i) row[i] = values[r * cols + columns[i]];
    uint8_t* dst = out.bytes.data() + r * row_bytes(traits, width);
    if (compress::format_grid_supported(to) && static_cast<int64_t>(importance.size()) == width) {
      compress::quantize_row_weighted(to, row.data(), importance.data(), dst, width);
    } else {
      traits.quantize_row(row.data(), dst, width);
    }
  }
  return out;
}

// importance[columns[i]] as floats, or nothing when `importance` does not have `cols` values.
std::vector<float> gather(const std::vector<std::vector<double>>& importance, int64_t layer, int64_t cols, const std::vector<int64_t>& columns) {
  std::vector<float> out;
  if (layer >= static_cast<int64_t>(importance.size()) || static_cast<int64_t>(importance[layer].size()) != cols) return out;
  for (int64_t c : columns) out.push_back(static_cast<float>(importance[layer][c]));
  return out;
}

Status refuse_per_token_files(const GgufFile& input, const std::string& what) {
  if (input.get_string_or(names::kActivationQuantKey, "per_block") != "per_block") {
    return Status::error(what + " of files with per-token activation quantization (smoothquant, w8a8, llm-int8) is not "
                         "supported: prune first, then quantize");
  }
  return Status::ok();
}

// Refuses block tensors that belong to the matrices being cut but are not the matrices themselves
// (biases, LLM.int8() outlier parts): they would keep the old size. `stems` are "attn_q", ….
Status refuse_unhandled_tensors(const GgufFile& input, std::initializer_list<const char*> stems, const std::string& what) {
  for (const GgufTensorInfo& t : input.tensors()) {
    const auto block = names::parse_block_tensor(t.name);
    if (!block) continue;
    for (const char* stem : stems) {
      const std::string prefix = std::string(stem) + ".";
      if (block->second.rfind(prefix, 0) == 0 && block->second != prefix + "weight") {
        return Status::error(what + " cannot resize tensor '" + t.name + "' (only the " + stem + " matrix itself is cut)");
      }
    }
  }
  return Status::ok();
}

// Checks per-layer lists of kept indices: one per layer, the same length, increasing, below `limit`.
Status check_kept(const std::vector<std::vector<int64_t>>& kept, int64_t n_layer, int64_t limit, const std::string& what) {
  if (static_cast<int64_t>(kept.size()) != n_layer) return Status::error("one list of kept " + what + " per block is needed");
  for (int64_t l = 0; l < n_layer; ++l) {
    if (kept[l].size() != kept[0].size()) return Status::error("every block must keep the same number of " + what);
    for (size_t i = 0; i < kept[l].size(); ++i) {
      if (kept[l][i] < 0 || kept[l][i] >= limit || (i > 0 && kept[l][i] <= kept[l][i - 1])) {
        return Status::error("kept " + what + " of block " + std::to_string(l) + " must be increasing indices below " + std::to_string(limit));
      }
    }
  }
  return Status::ok();
}

}  // namespace

Status write_without_blocks(const GgufFile& input, const std::vector<int64_t>& removed, const std::string& output,
                            const ExtraMetadata& extra) {
  FRUGAL_ASSIGN_OR_RETURN(const ModelConfig config, read_model_config(input));
  const int64_t n_layer = config.n_layer;
  FRUGAL_RETURN_IF_ERROR(check_blocks_removable(config));
  std::vector<int64_t> new_index(n_layer, 0);
  for (int64_t b : removed) {
    if (b < 0 || b >= n_layer) return Status::error("block " + std::to_string(b) + " does not exist (the model has " + std::to_string(n_layer) + ")");
    if (new_index[b] < 0) return Status::error("block " + std::to_string(b) + " is listed twice");
    new_index[b] = -1;
  }
  const int64_t kept = n_layer - static_cast<int64_t>(removed.size());
  if (kept < 1) return Status::error("cannot remove every block");
  for (int64_t b = 0, next = 0; b < n_layer; ++b) {
    if (new_index[b] >= 0) new_index[b] = next++;
  }

  GgufWriter writer(input.alignment());
  copy_metadata(input, writer, extra);
  const std::string arch = config.architecture + ".";
  for (const auto& [key, value] : input.metadata()) {
    if (key == names::architecture_key(config.architecture, names::kBlockCountSuffix)) {
      writer.set_value(key, integer_like(value, kept));
    } else if (key.rfind(arch, 0) == 0 && value.type == GgufType::kArray && static_cast<int64_t>(value.array_size) == n_layer) {
      // A per-block hyper-parameter (llama.cpp reads e.g. head counts per block from arrays).
      GgufValue sliced = value;
      sliced.numbers.clear();
      sliced.strings.clear();
      for (int64_t b = 0; b < n_layer; ++b) {
        if (new_index[b] < 0) continue;
        if (!value.numbers.empty()) sliced.numbers.push_back(value.numbers[b]);
        if (!value.strings.empty()) sliced.strings.push_back(value.strings[b]);
      }
      sliced.array_size = static_cast<uint64_t>(kept);
      writer.set_value(key, sliced);
    }
  }
  for (const GgufTensorInfo& t : input.tensors()) {
    const auto block = names::parse_block_tensor(t.name);
    if (!block) {
      writer.add_tensor(t.name, static_cast<DType>(t.type_id), t.dims, stored_bytes(t));
      continue;
    }
    const auto& [b, rest] = *block;
    if (b >= n_layer) return Status::error("tensor '" + t.name + "' belongs to a block beyond block_count " + std::to_string(n_layer));
    if (new_index[b] < 0) continue;
    writer.add_tensor(names::block_prefix(new_index[b]) + rest, static_cast<DType>(t.type_id), t.dims, stored_bytes(t));
  }
  return writer.write(output);
}

Result<int64_t> write_narrower_ffn(const GgufFile& input, const std::vector<std::vector<int64_t>>& kept,
                                   const std::vector<std::vector<double>>& hidden_square_sums, const std::string& output,
                                   const ExtraMetadata& extra) {
  FRUGAL_ASSIGN_OR_RETURN(const ModelConfig config, read_model_config(input));
  const int64_t n_layer = config.n_layer, n_ff = config.n_ff, n_embd = config.n_embd;
  FRUGAL_RETURN_IF_ERROR(refuse_per_token_files(input, "width pruning"));
  FRUGAL_RETURN_IF_ERROR(refuse_unhandled_tensors(input, {"ffn_gate", "ffn_up", "ffn_down"}, "width pruning"));
  FRUGAL_RETURN_IF_ERROR(check_kept(kept, n_layer, n_ff, "FFN channels"));
  const int64_t width = kept.empty() ? 0 : static_cast<int64_t>(kept[0].size());
  if (width < 1 || width % 8 != 0) return Status::error("the FFN width must be a positive multiple of 8, got " + std::to_string(width));
  const std::string ff_name = names::architecture_key(config.architecture, names::kFeedForwardLengthSuffix);
  const GgufValue* ff_key = input.find(ff_name);
  if (ff_key == nullptr || ff_key->type == GgufType::kArray) return Status::error(ff_name + " must be one number for width pruning");

  GgufWriter writer(input.alignment());
  copy_metadata(input, writer, extra);
  writer.set_value(ff_name, integer_like(*ff_key, width));
  int64_t requantized = 0;
  for (const GgufTensorInfo& t : input.tensors()) {
    const auto matrix = names::parse_block_matrix(t.name);
    const int64_t b = matrix ? matrix->first : -1;
    const bool gate_or_up = matrix && (matrix->second == names::BlockMatrix::kGate || matrix->second == names::BlockMatrix::kUp);
    const bool down = matrix && matrix->second == names::BlockMatrix::kDown;
    if (b < 0 || b >= n_layer || (!gate_or_up && !down)) {
      writer.add_tensor(t.name, static_cast<DType>(t.type_id), t.dims, stored_bytes(t));
      continue;
    }
    const std::vector<int64_t>& channels = kept[b];
    if (gate_or_up) {
      if (t.dims.size() != 2 || t.dims[0] != n_embd || t.dims[1] != n_ff) return Status::error("tensor '" + t.name + "' has an unexpected shape");
      writer.add_tensor(t.name, static_cast<DType>(t.type_id), {n_embd, width}, copy_rows(t, n_embd, channels));
      continue;
    }
    if (t.dims.size() != 2 || t.dims[0] != n_ff || t.dims[1] != n_embd) return Status::error("tensor '" + t.name + "' has an unexpected shape");
    Reencoded columns = keep_columns(t, n_embd, n_ff, channels, gather(hidden_square_sums, b, n_ff, channels));
    writer.add_tensor(t.name, columns.type, {width, n_embd}, std::move(columns.bytes));
    ++requantized;
  }
  FRUGAL_RETURN_IF_ERROR(writer.write(output));
  return requantized;
}

Result<int64_t> write_fewer_heads(const GgufFile& input, const std::vector<std::vector<int64_t>>& kept,
                                  const std::vector<std::vector<double>>& output_square_sums, const std::string& output,
                                  const ExtraMetadata& extra) {
  FRUGAL_ASSIGN_OR_RETURN(const ModelConfig config, read_model_config(input));
  const int64_t n_layer = config.n_layer, n_embd = config.n_embd, hd = config.head_dim, qd = config.q_dim(), kvd = config.kv_dim();
  const int64_t group = config.n_head / config.n_head_kv;
  FRUGAL_RETURN_IF_ERROR(refuse_per_token_files(input, "head pruning"));
  FRUGAL_RETURN_IF_ERROR(refuse_unhandled_tensors(input, {"attn_q", "attn_k", "attn_v", "attn_output"}, "head pruning"));
  FRUGAL_RETURN_IF_ERROR(check_kept(kept, n_layer, config.n_head_kv, "KV groups"));
  const int64_t groups = kept.empty() ? 0 : static_cast<int64_t>(kept[0].size());
  if (groups < 1) return Status::error("every block must keep at least one KV group");
  const std::string a = config.architecture + ".attention.";
  for (const char* key : {"head_count", "head_count_kv"}) {
    const GgufValue* v = input.find(a + key);
    if (v != nullptr && v->type == GgufType::kArray) return Status::error(a + key + " must be one number for head pruning");
  }
  const GgufValue* heads_key = input.find(a + "head_count");
  if (heads_key == nullptr) return Status::error("model has no " + a + "head_count");

  GgufWriter writer(input.alignment());
  copy_metadata(input, writer, extra);
  writer.set_value(a + "head_count", integer_like(*heads_key, groups * group));
  const GgufValue* kv_key = input.find(a + "head_count_kv");
  writer.set_value(a + "head_count_kv", integer_like(kv_key ? *kv_key : *heads_key, groups));
  // The head size stays; written explicitly as readers otherwise derive it from n_embd / n_head.
  writer.set_uint32(a + "key_length", static_cast<uint32_t>(hd));
  writer.set_uint32(a + "value_length", static_cast<uint32_t>(hd));
  int64_t requantized = 0;
  for (const GgufTensorInfo& t : input.tensors()) {
    const auto matrix = names::parse_block_matrix(t.name);
    const int64_t b = matrix ? matrix->first : -1;
    const names::BlockMatrix m = matrix ? matrix->second : names::BlockMatrix::kGate;
    const bool attention = m == names::BlockMatrix::kQ || m == names::BlockMatrix::kK || m == names::BlockMatrix::kV ||
                           m == names::BlockMatrix::kAttnOutput;
    if (b < 0 || b >= n_layer || !attention) {
      writer.add_tensor(t.name, static_cast<DType>(t.type_id), t.dims, stored_bytes(t));
      continue;
    }
    // Rows (query side) or columns (output side) of the kept heads, head-size slices in head order.
    const bool query_side = m == names::BlockMatrix::kQ || m == names::BlockMatrix::kAttnOutput;
    std::vector<int64_t> index;
    for (int64_t g : kept[b]) {
      for (int64_t h = query_side ? g * group : g; h < (query_side ? (g + 1) * group : g + 1); ++h) {
        for (int64_t i = 0; i < hd; ++i) index.push_back(h * hd + i);
      }
    }
    const int64_t width = static_cast<int64_t>(index.size());
    if (m == names::BlockMatrix::kAttnOutput) {
      if (t.dims.size() != 2 || t.dims[0] != qd || t.dims[1] != n_embd) return Status::error("tensor '" + t.name + "' has an unexpected shape");
      Reencoded columns = keep_columns(t, n_embd, qd, index, gather(output_square_sums, b, qd, index));
      writer.add_tensor(t.name, columns.type, {width, n_embd}, std::move(columns.bytes));
      ++requantized;
      continue;
    }
    const int64_t rows = m == names::BlockMatrix::kQ ? qd : kvd;
    if (t.dims.size() != 2 || t.dims[0] != n_embd || t.dims[1] != rows) return Status::error("tensor '" + t.name + "' has an unexpected shape");
    writer.add_tensor(t.name, static_cast<DType>(t.type_id), {n_embd, width}, copy_rows(t, n_embd, index));
  }
  FRUGAL_RETURN_IF_ERROR(writer.write(output));
  return requantized;
}

bool is_structured_method(std::string_view method) { return method == "layers" || method == "width" || method == "heads"; }

Result<StructuredPruneReport> structured_prune_model(const std::string& input, const std::string& output,
                                                     const StructuredPruneOptions& options,
                                                     const std::function<void(int64_t, int64_t)>& on_layer) {
  if (!is_structured_method(options.method)) {
    return Status::error("unknown structured method '" + options.method + "' (layers, width or heads)");
  }
  if (input == output) return Status::error("output must differ from the input file");
  Timer timer;
  FRUGAL_ASSIGN_OR_RETURN(auto model, Model::load(input));
  const ModelConfig& c = model->config();
  StructuredPruneReport report;
  // The sparsity is checked against the model before any calibration work.
  int64_t remove = 0, width = 0;
  if (options.method == "layers") {
    FRUGAL_ASSIGN_OR_RETURN(remove, compress::blocks_to_remove(c.n_layer, options.sparsity));
    FRUGAL_RETURN_IF_ERROR(check_blocks_removable(c));
  } else if (options.method == "heads") {
    FRUGAL_ASSIGN_OR_RETURN(remove, compress::kv_groups_to_remove(c.n_head_kv, options.sparsity));
  } else {
    FRUGAL_ASSIGN_OR_RETURN(width, compress::ffn_width_after(c.n_ff, options.sparsity));
  }
  StructuredStatistics stats;
  if (!options.calibration_path.empty()) {
    FRUGAL_ASSIGN_OR_RETURN(const std::vector<int32_t> tokens,
                            compress::read_calibration_tokens(*model, options.calibration_path, options.calibration_tokens));
    const int64_t chunk = std::min<int64_t>(512, options.calibration_tokens);
    FRUGAL_ASSIGN_OR_RETURN(stats, collect_structured_statistics(*model, tokens, chunk, options.n_threads, on_layer));
  } else if (options.method != "width") {
    return Status::error(options.method + " pruning needs calibration text (--calib FILE) to measure what each part adds");
  }
  const ExtraMetadata extra = [&](GgufWriter& writer) {
    writer.set_string(names::kPruneMethodKey, options.method);
    writer.set_float32(names::kPruneSparsityKey, static_cast<float>(options.sparsity));
    writer.set_string(names::kPrunePatternKey, options.method == "layers"  ? "structured: whole blocks"
                                               : options.method == "heads" ? "structured: KV groups"
                                                                           : "structured: FFN channels");
  };
  for (const auto& t : model->file().tensors()) {
    report.parameters_before += t.element_count();
    report.bytes_in += t.bytes;
  }
  if (options.method == "layers") {
    report.block_influence = stats.block_influence;
    report.angular_distance = stats.angular_distance;
    report.removed_blocks = compress::least_influential_blocks(stats.block_influence, remove);
    FRUGAL_RETURN_IF_ERROR(write_without_blocks(model->file(), report.removed_blocks, output, extra));
  } else if (options.method == "heads") {
    report.kept_groups.resize(c.n_layer);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const WeightMatrix& wo = model->layers()[l].wo;
      std::vector<float> values(static_cast<size_t>(wo.rows * wo.cols));
      for (int64_t r = 0; r < wo.rows; ++r) wo.traits->dequantize_row(wo.row(r), values.data() + r * wo.cols, wo.cols);
      const auto scores = compress::kv_group_scores(values.data(), c.n_embd, c.n_head, c.n_head_kv, c.head_dim,
                                                    stats.attention_output_square_sums[l]);
      report.kept_groups[l] = compress::top_channels(scores, c.n_head_kv - remove);
    }
    report.n_head_kv_after = c.n_head_kv - remove;
    report.n_head_after = report.n_head_kv_after * (c.n_head / c.n_head_kv);
    FRUGAL_ASSIGN_OR_RETURN(report.tensors_requantized,
                            write_fewer_heads(model->file(), report.kept_groups, stats.attention_output_square_sums, output, extra));
  } else {
    report.n_ff_before = c.n_ff;
    report.n_ff_after = width;
    std::vector<std::vector<int64_t>> kept(c.n_layer);
    const std::vector<double> ones_embd(c.n_embd, 1.0), ones_ff(c.n_ff, 1.0);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const LayerWeights& w = model->layers()[l];
      auto dequantize = [](const WeightMatrix& m) {
        std::vector<float> out(static_cast<size_t>(m.rows * m.cols));
        for (int64_t r = 0; r < m.rows; ++r) m.traits->dequantize_row(m.row(r), out.data() + r * m.cols, m.cols);
        return out;
      };
      const std::vector<float> gate = dequantize(w.w_gate), up = dequantize(w.w_up), down = dequantize(w.w_down);
      const bool calibrated = !stats.ffn_input_square_sums.empty();
      const auto scores = compress::ffn_channel_scores(gate.data(), up.data(), down.data(), c.n_embd, c.n_ff,
                                                       calibrated ? stats.ffn_input_square_sums[l] : ones_embd,
                                                       calibrated ? stats.ffn_hidden_square_sums[l] : ones_ff);
      kept[l] = compress::top_channels(scores, width);
    }
    FRUGAL_ASSIGN_OR_RETURN(report.tensors_requantized,
                            write_narrower_ffn(model->file(), kept, stats.ffn_hidden_square_sums, output, extra));
  }
  FRUGAL_ASSIGN_OR_RETURN(auto written, GgufFile::open(output));
  for (const auto& t : written->tensors()) {
    report.parameters_after += t.element_count();
    report.bytes_out += t.bytes;
  }
  report.seconds = timer.seconds();
  return report;
}

}  // namespace frugal
