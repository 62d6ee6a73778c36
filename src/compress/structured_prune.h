// Structured pruning: whole decoder blocks (depth) or FFN channels (width) removed, written as an
// ordinary, smaller GGUF file that frugal and llama.cpp load and run with no special kernel.
//
// Depth ("layers"): ShortGPT's Block Influence, BI_l = 1 - E_t[cos(x_l,t, x_{l+1},t)] between a
// block's input and output hidden states on calibration text (Men et al. 2024, arXiv:2403.03853),
// the per-block case of the angular distance of Gromov et al. 2024 ("The Unreasonable
// Ineffectiveness of the Deeper Layers", arXiv:2403.17887). The blocks with the lowest influence
// change the residual stream least and are removed; the rest are renumbered.
//
// Width ("width"): FFN channels c (row c of gate and up, column c of down) ranked per layer by an
// activation-aware score in the spirit of LLM-Pruner (Ma et al. 2023, arXiv:2305.11627) and Wanda
// (Sun et al. 2023, arXiv:2306.11695):
//   S_c = A_c / mean(A) + B_c / mean(B),  A_c = sum_j (|G_cj| + |U_cj|) * ||X_j||,
//                                          B_c = ||D_:,c|| * ||H_c||
// with X the FFN input (after the norm) and H = act(gate) * up the down projection's input over
// the calibration tokens. A is Wanda's score summed over the channel's input weights; B is exactly
// the norm of what the channel adds to the block output, so removing it alone costs B_c. The two
// are normalized by their layer means so neither dominates by scale. Every layer keeps the same
// number of channels (feed_forward_length is one scalar in GGUF, and llama.cpp reads it so), a
// multiple of 32 so 32-element quantization blocks still tile the down projection's rows.
//
// Heads ("heads"): whole KV groups (a key/value head with the query heads that share it, so
// grouped-query attention stays valid) ranked per layer by the norm of what their query heads add
// to the block output, sum_h ||Wo_:,h|| * ||A_h|| (A_h: head h's attention output over the
// calibration tokens), the same number removed in every layer (head counts are scalars in GGUF).
// SmolLM2-135M has 3 KV groups of 3 query heads, so one step is a third of the attention.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "model/model.h"
#include "model/model_config.h"
#include "tensor/dtype.h"

namespace frugal {

// Calibration statistics the structured methods use, per decoder block.
struct StructuredStatistics {
  int64_t tokens = 0;
  std::vector<double> block_influence;   // 1 - mean over tokens of cos(block input, block output)
  std::vector<double> angular_distance;  // mean over tokens of arccos(cos) / pi (Gromov et al.)
  std::vector<std::vector<double>> attention_output_square_sums;  // [layer][q_dim]: sum_t A_tj^2 (heads' outputs)
  std::vector<std::vector<double>> ffn_input_square_sums;   // [layer][n_embd]: sum_t X_tj^2
  std::vector<std::vector<double>> ffn_hidden_square_sums;  // [layer][n_ff]: sum_t H_tc^2
};

namespace compress {

// Blocks removed for `sparsity` (a fraction of n_layer, rounded to the nearest block), or an
// error when that is no block or every block.
Result<int64_t> blocks_to_remove(int64_t n_layer, double sparsity);
// The `count` blocks of lowest influence, in increasing index order (ties: the later block).
std::vector<int64_t> least_influential_blocks(const std::vector<double>& influence, int64_t count);

// FFN channels kept for `sparsity` of n_ff removed: round((1 - sparsity) * n_ff / 32) * 32, or an
// error when that removes nothing or leaves no channel.
Result<int64_t> ffn_width_after(int64_t n_ff, double sparsity);
// Channel scores S_c of one layer (see above). gate/up are n_ff x n_embd, down n_embd x n_ff,
// row-major floats; input_square_sums has n_embd values, hidden_square_sums n_ff (all ones gives
// a weight-magnitude score for use without calibration).
std::vector<double> ffn_channel_scores(const float* gate, const float* up, const float* down, int64_t n_embd, int64_t n_ff,
                                       const std::vector<double>& input_square_sums, const std::vector<double>& hidden_square_sums);
// The `keep` highest-scoring channels, in increasing index order.
std::vector<int64_t> top_channels(const std::vector<double>& scores, int64_t keep);

// KV groups removed for `sparsity` of n_groups (rounded), or an error when that is none or all.
Result<int64_t> kv_groups_to_remove(int64_t n_groups, double sparsity);
// Score of each KV group of one layer: sum over its query heads h of ||Wo[:, h]||_F * ||A_h||.
// wo is n_embd x (n_head * head_dim) row-major; output_square_sums has n_head * head_dim values.
std::vector<double> kv_group_scores(const float* wo, int64_t n_embd, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                                    const std::vector<double>& output_square_sums);

// The type a matrix of `type` is re-encoded to when its rows become `cols` long: `type` if its
// block divides cols, else the nearest type whose block does (llama-quantize's fallbacks for the
// K-quants, a smaller group for frugal's generic types, q8_0 otherwise).
DType type_for_row_length(DType type, int64_t cols);

}  // namespace compress

struct StructuredPruneOptions {
  std::string method;  // "layers", "width" or "heads"
  double sparsity = 0.0;
  // Calibration text (never the evaluation text) and how many of its tokens to use; an empty path
  // means no calibration: width falls back to weight magnitudes, layers refuses.
  std::string calibration_path;
  int64_t calibration_tokens = 4096;
  int n_threads = 2;
};

struct StructuredPruneReport {
  std::vector<int64_t> removed_blocks;  // layers: original indices
  std::vector<double> block_influence;   // layers: per original block
  std::vector<double> angular_distance;  // layers: per original block (reported; BI ranks)
  int64_t n_ff_before = 0, n_ff_after = 0;  // width
  int64_t tensors_requantized = 0;          // width: down projections, heads: output projections re-encoded
  std::vector<std::vector<int64_t>> kept_groups;  // heads: per layer, the kept KV groups
  int64_t n_head_after = 0, n_head_kv_after = 0;  // heads
  int64_t parameters_before = 0, parameters_after = 0;
  size_t bytes_in = 0, bytes_out = 0;
  double seconds = 0;
};

// Runs the calibration tokens through `model`'s decoder blocks (the runtime's block, observed)
// and gathers the statistics above. `on_layer(done, total)` reports progress.
Result<StructuredStatistics> collect_structured_statistics(const Model& model, const std::vector<int32_t>& tokens, int64_t chunk,
                                                           int n_threads, const std::function<void(int64_t, int64_t)>& on_layer);

// Adds keys (e.g. frugal.prune.*) to a file being written, after the input's keys are copied.
using ExtraMetadata = std::function<void(GgufWriter&)>;

// Refuses models whose blocks differ by index (Gemma 3 alternates sliding-window and global
// attention by position, so renumbering would change the attention of the later blocks).
Status check_blocks_removable(const ModelConfig& config);

// Writes `input` without the chosen blocks: the kept blocks are renumbered blk.0 … blk.K-1,
// {arch}.block_count and every per-block metadata array are updated, every other key and tensor is
// copied unchanged. Refused for architectures that pick a block's attention type from its index
// (Gemma 3's sliding-window pattern would shift).
Status write_without_blocks(const GgufFile& input, const std::vector<int64_t>& removed, const std::string& output,
                            const ExtraMetadata& extra = nullptr);

// Writes `input` with only the FFN channels `kept[layer]` (same count in every layer): rows of
// ffn_gate/ffn_up are copied as stored; ffn_down is decoded, its kept columns re-encoded (weighted
// by hidden_square_sums[layer] of the kept channels where the type allows, else plain
// round-to-nearest) in compress::type_for_row_length. `hidden_square_sums` may be empty.
Result<int64_t> write_narrower_ffn(const GgufFile& input, const std::vector<std::vector<int64_t>>& kept,
                                   const std::vector<std::vector<double>>& hidden_square_sums, const std::string& output,
                                   const ExtraMetadata& extra = nullptr);

// True for the methods structured_prune_model runs ("layers", "width", "heads"); the others of the
// registry's pruning methods zero weights in place (compress/prune_model.h).
bool is_structured_method(std::string_view method);

// Writes `input` with only the KV groups `kept[layer]` (same count in every layer; a group is a
// key/value head and its n_head / n_head_kv query heads): rows of attn_q/attn_k/attn_v are copied
// as stored, attn_output is decoded and its kept columns re-encoded (weighted by
// output_square_sums where the type allows) in compress::type_for_row_length. Head counts are
// updated and the head size written explicitly (llama.cpp and frugal otherwise derive it from
// n_embd / n_head).
Result<int64_t> write_fewer_heads(const GgufFile& input, const std::vector<std::vector<int64_t>>& kept,
                                  const std::vector<std::vector<double>>& output_square_sums, const std::string& output,
                                  const ExtraMetadata& extra = nullptr);

// frugal prune --method layers|width|heads: statistics, selection, surgery; the output is written atomically.
Result<StructuredPruneReport> structured_prune_model(const std::string& input, const std::string& output,
                                                     const StructuredPruneOptions& options,
                                                     const std::function<void(int64_t, int64_t)>& on_layer);

}  // namespace frugal
