// One pre-norm decoder block (attention stage, FFN stage) over a layer's weights, used by the
// runtime forward pass (model/transformer.cpp) and by calibration (compress/calibration.h), which
// attaches a BlockObserver that sees every matmul's input and may substitute the weights being
// calibrated — as llama.cpp's imatrix hooks its normal forward pass and gemma.cpp's activation
// observer does — so there is one block implementation, not a second forward pass.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "io/gguf_names.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "model/model_config.h"
#include "tensor/weight_matrix.h"

namespace frugal {

// The four inputs a block multiplies by its matrices (matrices sharing an input share a Hessian).
enum class BlockInput {
  kAttention,        // attn_norm(x): read by Q, K, V
  kAttentionOutput,  // the attention heads' outputs: read by attn_output
  kFfn,              // ffn_norm(h): read by gate, up
  kFfnHidden,        // act(gate) * up: read by down
};

// The matrices reading `input`, in the order the block multiplies them.
std::vector<names::BlockMatrix> matrices_reading(BlockInput input);

// Sees a block's matmul inputs. The forward pass calls on_input() just before the matrices of an
// input multiply it, then weights() for each of those matrices. A null observer costs one branch
// per input.
class BlockObserver {
 public:
  virtual ~BlockObserver() = default;
  // x: n rows of `cols` floats (contiguous), every token of the batch. The observer may rescale x
  // in place (AWQ/SmoothQuant divide it by the scales they fold into the producer). An error
  // stops the pass and is returned by the stage.
  virtual Status on_input(int64_t layer, BlockInput input, float* x, int64_t n, int64_t cols) = 0;
  // The matrix to multiply by: `stored` (the model's), or a substitute that stays valid until the
  // next call for the same matrix.
  virtual const WeightMatrix& weights(int64_t layer, names::BlockMatrix matrix, const WeightMatrix& stored) {
    (void)layer;
    (void)matrix;
    return stored;
  }
};

// Where a batch's tokens sit. Runtime: one sequence continuing a KV cache (token t at position
// pos0 + t; keys/values rows are the cache's rows of this layer, row = position). Calibration
// (sequence_length > 0): independent sequences of sequence_length tokens laid end to end; token t
// is at position t % sequence_length, its keys/values go to row t and attention stays inside its
// sequence. Keys and values are IEEE half unless the runtime cache says otherwise (-ctk/-ctv),
// so calibration computes what the default runtime computes.
// Tokens of several sequences over a paged KV cache (serve's batch engine; Kwon et al. 2023,
// "PagedAttention"): token t is at position positions[t] of its sequence, whose block table is
// block_tables[t]; BlockBatch::keys/values point at row 0 of this layer in block 0, and block b's
// rows of this layer start block_bytes further per block.
struct PagedBlockView {
  const int64_t* positions = nullptr;
  const int32_t* const* block_tables = nullptr;
  int block_shift = 4;  // log2 of the tokens per block
  int64_t key_block_bytes = 0;
  int64_t value_block_bytes = 0;
};

struct BlockBatch {
  int64_t n = 0;
  int64_t pos0 = 0;
  int64_t sequence_length = 0;  // 0: one sequence continuing the cache
  void* keys = nullptr;         // row 0 of this layer's keys, kv_dim() elements per row
  void* values = nullptr;
  KvType key_type = KvType::kF16;
  KvType value_type = KvType::kF16;
  const PagedBlockView* paged = nullptr;  // set: a multi-sequence batch over a paged cache
};

// Activation buffers of a block for up to max_tokens tokens; matmuls run on at most
// matmul_tokens rows at a time (bounded workspace). Allocated once (the decode loop allocates
// nothing).
struct BlockWorkspace {
  BlockWorkspace(const ModelConfig& config, int64_t max_tokens, int64_t matmul_tokens, int n_threads);
  int64_t max_tokens = 0;
  int64_t matmul_tokens = 0;
  std::vector<float> normed, q, k, v, attn, gate, up;
  std::vector<float> matmul;  // matmul workspace (floats for alignment)
};

class DecoderBlock {
 public:
  explicit DecoderBlock(const ModelConfig& config);

  // residual += post_norm(Wo · Attention(RoPE(Wq·n1(x)), RoPE(Wk·n1(x)), Wv·n1(x))) over
  // batch.n tokens (n rows of n_embd). Stores the batch's keys and values.
  Status attention(int64_t layer, const LayerWeights& w, float* residual, const BlockBatch& batch, BlockWorkspace& ws,
                   ThreadPool& pool, BlockObserver* observer = nullptr) const;
  // residual += post_norm(Wd · (act(Wg·n2(x)) ⊙ Wu·n2(x))) over n tokens.
  Status ffn(int64_t layer, const LayerWeights& w, float* residual, int64_t n, BlockWorkspace& ws, ThreadPool& pool,
             BlockObserver* observer = nullptr) const;

  // Both stages; the residual add of the attention and the FFN's input norm share one parallel
  // region (one fewer thread hand-off per layer when decoding).
  Status layer(int64_t layer, const LayerWeights& w, float* residual, const BlockBatch& batch, BlockWorkspace& ws,
               ThreadPool& pool, BlockObserver* observer = nullptr) const;

  const ModelConfig& config() const { return config_; }
  // RoPE inverse frequencies of a layer (sliding-window layers of Gemma 3 have their own base).
  const float* inv_freq(int64_t layer) const {
    return config_.layer_is_windowed[layer] ? inv_freq_windowed_.data() : inv_freq_.data();
  }

 private:
  // fuse_ffn_norm: also writes ffn_norm(residual) into ws.normed; normed_ready: it is there already.
  Status attention_stage(int64_t layer, const LayerWeights& w, float* residual, const BlockBatch& batch, BlockWorkspace& ws,
                         ThreadPool& pool, BlockObserver* observer, bool fuse_ffn_norm) const;
  Status ffn_stage(int64_t layer, const LayerWeights& w, float* residual, int64_t n, BlockWorkspace& ws, ThreadPool& pool,
                   BlockObserver* observer, bool normed_ready) const;

  ModelConfig config_;
  std::vector<float> inv_freq_, inv_freq_windowed_;
  float attention_scale_ = 1.0f;
};

// x[t] = embedding row of tokens[t] (times the config's embedding scale), n rows of n_embd.
void embed_tokens(const Model& model, const int32_t* tokens, int64_t n, float* x, ThreadPool& pool);

}  // namespace frugal
