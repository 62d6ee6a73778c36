// Element-wise and per-row operations of the transformer: RMSNorm, RoPE, SwiGLU, softmax, and
// causal attention over a KV cache with an online softmax (Milakov & Gimelshein 2018; the
// FlashAttention recurrence, Dao et al. 2022) so no score matrix is materialized.
#pragma once

#include <cstdint>

namespace frugal {

// y = x / sqrt(mean(x^2) + eps) * weight  (Zhang & Sennrich 2019).
void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* y);

enum class RopeStyle { kNormal, kNeox };  // pairs (2i, 2i+1) vs (i, i + rope_dim/2)

// Rotary position embedding (Su et al. 2021) applied in place to `n_heads` heads of `head_dim`,
// rotating the first `rope_dim` dimensions; inv_freq[i] = freq_scale * base^(-2i/rope_dim).
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t position,
          const float* inv_freq, RopeStyle style);

// gate[i] = silu(gate[i]) * up[i]  (SwiGLU, Shazeer 2020).
void swiglu(float* gate, const float* up, int64_t n);

// gate[i] = gelu(gate[i]) * up[i] with GELU's tanh approximation (GeGLU, Shazeer 2020; Gemma).
void geglu(float* gate, const float* up, int64_t n);

// In-place softmax of n values.
void softmax(float* x, int64_t n);

// One query head against keys/values at cache positions [first, last]: out = softmax(q.K^T *
// scale) V. k/v rows are `kv_stride` floats apart; head offset already applied by the caller.
void attend_one_head(const float* q, const float* k, const float* v, int64_t kv_stride,
                     int64_t first, int64_t last, int64_t head_dim, float scale, float* out);
// The same with keys and values stored as IEEE half (the KV cache's default element type).
void attend_one_head(const float* q, const uint16_t* k, const uint16_t* v, int64_t kv_stride,
                     int64_t first, int64_t last, int64_t head_dim, float scale, float* out);

// Element type of a KV cache (-ctk/-ctv). q8_0 and q4_0 are the GGUF block formats (blocks of 32
// elements: an fp16 scale d, then 32 int8 values x = d q, or 16 bytes of nibbles x = d (q - 8),
// element j in the low nibble of byte j % 16 and element j + 16 in its high nibble). Blocks never
// cross a head (head_dim must be a multiple of 32 for the block types).
enum class KvType : uint8_t { kF16, kQ8_0, kQ4_0 };

// Keys or values of one KV head: row j (a position) starts at data + j * row_bytes, head offset
// already applied by the caller.
struct KvRows {
  const uint8_t* data = nullptr;
  int64_t row_bytes = 0;
  KvType type = KvType::kF16;
};

// Attention on the cache in its stored type: blocks are dequantized inside the attention loop, so a
// quantized cache is never expanded to float in memory (the decode bandwidth saving is the point).
// With q8_0/q4_0 keys the query is quantized once to 8 bits per block of 32 (absmax, float scale)
// and Q.K runs on integer block dot products; values are summed per block and scaled once.
void attend_one_head(const float* q, const KvRows& k, const KvRows& v, int64_t first, int64_t last, int64_t head_dim,
                     float scale, float* out);

// Keys or values of one KV head in a paged cache (Kwon et al. 2023, "Efficient Memory Management
// for Large Language Model Serving with PagedAttention"): position j lives in block
// blocks[j >> block_shift] at row j & (2^block_shift - 1); block b's rows start at
// data + b * block_bytes (layer and head offsets already applied by the caller).
struct PagedKvRows {
  const uint8_t* data = nullptr;
  const int32_t* blocks = nullptr;  // the sequence's block table
  int64_t block_bytes = 0;          // bytes from one block to the next
  int block_shift = 4;              // log2 of the tokens per block
  int64_t row_bytes = 0;
  KvType type = KvType::kF16;
  const uint8_t* row(int64_t j) const {
    return data + static_cast<int64_t>(blocks[j >> block_shift]) * block_bytes + (j & ((int64_t{1} << block_shift) - 1)) * row_bytes;
  }
};

// attend_one_head over a paged cache: the same tiles and arithmetic as the contiguous form, so a
// sequence gives bit-identical outputs whether its rows are contiguous or scattered over blocks.
void attend_one_head(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t first, int64_t last,
                     int64_t head_dim, float scale, float* out);

// Grouped-query attention (Ainslie et al. 2023): n_heads query heads sharing one KV head (q and
// out hold the heads head_dim apart), each head's output bit-identical to attend_one_head on it
// alone; the kernel reads and converts each key and value row once for all of them.
void attend_heads(const float* q, int64_t n_heads, const KvRows& k, const KvRows& v, int64_t first, int64_t last,
                  int64_t head_dim, float scale, float* out);
void attend_heads(const float* q, int64_t n_heads, const PagedKvRows& k, const PagedKvRows& v, int64_t first,
                  int64_t last, int64_t head_dim, float scale, float* out);

}  // namespace frugal
