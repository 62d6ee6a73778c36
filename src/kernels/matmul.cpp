// matmul driver: picks the kernel table of the active ISA, lays out the workspace, quantizes the
// input once, and splits rows between the pool's threads in one parallel region. Types without
// an integer or float kernel dequantize a tile of rows and run the active ISA's F32 kernel on it.
#include "kernels/matmul.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "base/check.h"
#include "kernels/matmul_kernels.h"
#include "kernels/nm_sparse_kernels.h"
#include "kernels/sparse_q4_kernels.h"
#include "tensor/fp16.h"
#include "tensor/nm_sparse.h"
#include "tensor/sparse_q4.h"

namespace frugal {

namespace kernels {

const KernelTable& kernel_table(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Vnni: return avx512vnni_kernel_table();
    case Isa::kAvx512: return avx512_kernel_table();
    case Isa::kAvx2: return avx2_kernel_table();
    case Isa::kScalar: break;
  }
  return scalar_kernel_table();
}

}  // namespace kernels

namespace {

using kernels::ActivationFormat;
using kernels::KernelTable;
using kernels::QuantizedActivations;

// Rows per tile of the dequantize-to-float fallback.
constexpr int64_t kFallbackRows = 16;
// Inputs of at most one token group are quantized by every thread into its own area, so the
// threads need not wait for each other (decode); larger ones are split and joined by a barrier.
constexpr int64_t kPrivateTokens = kernels::kTokenGroup;
// At most this many targets share one input.
constexpr int kMaxTargets = 8;
// Inputs of up to this many tokens (batched decode steps) are split in larger chunks of rows.
constexpr int64_t kSmallBatchTokens = 32;

size_t align_64(size_t n) { return (n + 63) / 64 * 64; }

// Bytes of the Q8_0 tile a sparse-q8 matrix is expanded into (kFallbackRows rows).
size_t sparse_tile_bytes(int64_t cols) { return align_64(static_cast<size_t>(kFallbackRows * (cols / 32) * 34)); }

// Per thread: the kernels' own scratch, then the sparse-q8 tile (its last bytes).
size_t scratch_bytes_per_thread(int64_t cols) {
  size_t bytes = static_cast<size_t>(kFallbackRows * cols) * sizeof(float);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni}) {
    if (static_cast<int>(isa) > static_cast<int>(best_supported_isa())) break;
    bytes = std::max(bytes, kernels::kernel_table(isa).scratch_bytes(cols));
  }
  return align_64(bytes) + sparse_tile_bytes(cols);
}

// Prefill with sparse-q8 weights: each tile of rows is expanded to Q8_0 once and multiplied with
// all tokens by the active ISA's Q8_0 kernel (the same values: both 32-halves of a 64-block get
// its scale), so prefill runs at the dense int8 speed. Decode (one token) takes the one-token
// sparse kernels instead, which read only mask, scales and packed values and are what makes the
// format pay (AVX-512 VBMI2: 1.7-1.8x q8_0 at 50% sparsity, docs/SPARSE_FORMATS.md). Their sums
// run in another order, so sparse-q8 is the one format whose batched rows are not bit-identical
// to the token alone (they agree to float rounding; tests/unit/batch_invariance_test.cpp):
// speed is the point of the format, exactness of batched verification the price.
void sparse_expand_rows(const KernelTable& table, const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a,
                        float* y, int64_t y_stride, uint8_t* scratch, uint8_t* tile) {
  static const TypeTraits& q8 = type_traits(DType::Q8_0);
  const size_t tile_row = static_cast<size_t>(w.cols / 32) * 34;
  auto* expand = table.isa == Isa::kAvx512Vnni && kernels::sparse_q8_avx512_supported() ? kernels::sparse_q8_to_q8_0_avx512
                 : table.isa != Isa::kScalar                                            ? kernels::sparse_q8_to_q8_0_avx2
                                                                                        : kernels::sparse_q8_to_q8_0;
  if (is_sparse_q4(w.traits->type)) {  // sparse-q4 (tensor/sparse_q4.h): its codes are Q8_0 values too
    expand = table.isa == Isa::kAvx512Vnni && kernels::sparse_q8_avx512_supported() ? kernels::sparse_q4_to_q8_0_avx512
                                                                                    : kernels::sparse_q4_to_q8_0;
  } else if (is_nm_sparse(w.traits->type)) {  // N:M (tensor/nm_sparse.h)
    expand = table.isa == Isa::kAvx512Vnni && kernels::sparse_q8_avx512_supported() ? kernels::nm_to_q8_0_avx512 : kernels::nm_to_q8_0;
  }
  for (int64_t rt = r0; rt < r1; rt += kFallbackRows) {
    const int64_t nr = std::min(kFallbackRows, r1 - rt);
    expand(w, rt, rt + nr, tile);
    const WeightMatrix dense{&q8, tile, nr, w.cols, tile_row};
    table.quant_rows[kernels::kKernelQ8_0](dense, 0, nr, a, y + rt, y_stride, scratch);
  }
}

// Where each part of the workspace lives (offsets from the 64-byte-aligned start).
struct Layout {
  size_t shared_block32 = 0, shared_q8k = 0;    // activations of all tokens
  size_t private_block32 = 0, private_q8k = 0;  // per thread, one token group each
  size_t private_stride = 0;
  size_t scratch = 0, scratch_stride = 0;
  size_t total = 0;
};

Layout make_layout(int64_t cols, int64_t n_tokens, int n_threads) {
  Layout l;
  size_t at = 0;
  // Room for either grouping of the tokens: kTokenGroup, or kAmxTokenGroup for the AMX kernels.
  auto shared_bytes = [&](ActivationFormat format) {
    return align_64(std::max(kernels::activation_bytes(format, cols, n_tokens),
                             kernels::activation_bytes(format, cols, n_tokens, kernels::kAmxTokenGroup)));
  };
  l.shared_block32 = at;
  at += shared_bytes(ActivationFormat::kQ8Block32);
  l.shared_q8k = at;
  at += shared_bytes(ActivationFormat::kQ8K);
  l.private_stride = align_64(kernels::activation_bytes(ActivationFormat::kQ8Block32, cols, kPrivateTokens)) +
                     align_64(kernels::activation_bytes(ActivationFormat::kQ8K, cols, kPrivateTokens));
  l.private_block32 = at;
  l.private_q8k = at + align_64(kernels::activation_bytes(ActivationFormat::kQ8Block32, cols, kPrivateTokens));
  at += l.private_stride * n_threads;
  l.scratch_stride = scratch_bytes_per_thread(cols);
  l.scratch = at;
  at += l.scratch_stride * n_threads;
  l.total = at + 64;  // room to align the start
  return l;
}

// Fallback for types without a kernel: dequantize kFallbackRows rows into `rows_f32`, then the
// table's F32 kernel (twin-tested like every kernel) multiplies that tile with every token.
void fallback_rows(const KernelTable& table, const WeightMatrix& w, int64_t r0, int64_t r1, const float* x,
                   int64_t x_stride, int64_t n_tokens, float* y, int64_t y_stride, float* rows_f32) {
  static const TypeTraits& f32 = type_traits(DType::F32);
  for (int64_t rt = r0; rt < r1; rt += kFallbackRows) {
    const int64_t nr = std::min(kFallbackRows, r1 - rt);
    for (int64_t i = 0; i < nr; ++i) w.traits->dequantize_row(w.row(rt + i), rows_f32 + i * w.cols, w.cols);
    const WeightMatrix tile{&f32, reinterpret_cast<const uint8_t*>(rows_f32), nr, w.cols,
                            static_cast<size_t>(w.cols) * sizeof(float)};
    table.float_rows[kernels::kKernelF32](tile, 0, nr, x, x_stride, n_tokens, y + rt, y_stride);
  }
}

// LLM.int8()'s 16-bit part: y[t][r] += sum_j x[t][outlier_columns[j]] * outlier_weights[r][j] for
// rows [r0, r1) (the int8 part left these input columns out).
void add_outlier_products(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t x_stride,
                          int64_t n_tokens, float* y, int64_t y_stride) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint16_t* wr = w.outlier_weights + r * w.n_outliers;
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * x_stride;
      float sum = 0.0f;
      for (int64_t j = 0; j < w.n_outliers; ++j) sum += xt[w.outlier_columns[j]] * fp16_to_float(wr[j]);
      y[t * y_stride + r] += sum;
    }
  }
}

// Targets sharing one quantized input must agree on how it is quantized (per block or per
// token, and which columns are left to the 16-bit part).
bool same_input_quantization(const WeightMatrix& a, const WeightMatrix& b) {
  if (a.per_token_input != b.per_token_input || a.n_outliers != b.n_outliers) return false;
  return a.outlier_columns == b.outlier_columns ||
         std::equal(a.outlier_columns, a.outlier_columns + a.n_outliers, b.outlier_columns);
}

enum class Path { kQuantized, kFloat, kFallback, kSparseExpand };

struct TargetPlan {
  Path path;
  ActivationFormat format;
  kernels::QuantRowsFn quant_rows = nullptr;
  kernels::FloatRowsFn float_rows = nullptr;
  int64_t chunk_rows = 0;
  int64_t first_chunk = 0;  // index of this target's first chunk in the shared chunk list
};

// Spin until all n threads arrived (they are all running this job, so it cannot dead-lock).
void barrier(std::atomic<int>& arrived, int n) {
  arrived.fetch_add(1, std::memory_order_acq_rel);
  int spins = 0;
  while (arrived.load(std::memory_order_acquire) < n) {
    if (++spins < 4096) {
      __builtin_ia32_pause();  // PAUSE (SSE2, in every x86-64): a spin-wait hint
    } else {
      std::this_thread::yield();  // the other thread was preempted: give its core back
    }
  }
}

}  // namespace

size_t matmul_workspace_bytes(int64_t max_cols, int64_t max_tokens, int n_threads) {
  return make_layout(max_cols, std::max<int64_t>(1, max_tokens), std::max(1, n_threads)).total;
}

void matmul(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y, int64_t y_stride,
            void* workspace, size_t workspace_bytes, ThreadPool& pool) {
  const MatmulTarget target{&w, y, y_stride};
  matmul_shared_input(std::span<const MatmulTarget>(&target, 1), x, x_stride, n_tokens, workspace, workspace_bytes,
                      pool);
}

void matmul_shared_input(std::span<const MatmulTarget> targets, const float* x, int64_t x_stride, int64_t n_tokens,
                         void* workspace, size_t workspace_bytes, ThreadPool& pool) {
  if (n_tokens <= 0 || targets.empty()) return;
  FRUGAL_CHECK(targets.size() <= static_cast<size_t>(kMaxTargets));
  for (const MatmulTarget& t : targets) {
    if (!same_input_quantization(*t.weight, *targets[0].weight)) {
      for (const MatmulTarget& one : targets) {
        matmul_shared_input(std::span<const MatmulTarget>(&one, 1), x, x_stride, n_tokens, workspace, workspace_bytes, pool);
      }
      return;
    }
  }
  const int64_t cols = targets[0].weight->cols;

  const int n_threads = pool.size();
  const Layout layout = make_layout(cols, n_tokens, n_threads);
  FRUGAL_CHECK(workspace != nullptr && workspace_bytes >= layout.total);
  uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(workspace) + 63) & ~uintptr_t{63});

  const KernelTable& table = kernels::kernel_table(active_isa());
  // W8A8 / LLM.int8(): one activation scale per token (weight.per_token_input).
  const WeightMatrix& first = *targets[0].weight;
  const bool per_token = first.per_token_input;
  auto quantize_block32 = [&](int64_t g0, int64_t g1, const QuantizedActivations& out) {
    if (per_token) {
      kernels::quantize_activations_per_token(x, x_stride, g0, g1, first.outlier_columns, first.n_outliers, out);
    } else {
      table.quantize(x, x_stride, g0, g1, out);
    }
  };
  const int n_targets = static_cast<int>(targets.size());
  TargetPlan plans[kMaxTargets];
  bool need_block32 = false, need_q8k = false;
  int64_t total_rows = 0;
  for (int i = 0; i < n_targets; ++i) {
    const WeightMatrix& w = *targets[i].weight;
    FRUGAL_CHECK(w.traits != nullptr && w.cols == cols);
    TargetPlan& p = plans[i];
    const int index = kernels::kernel_type_index(w.traits->type);
    p.format = kernels::activation_format_for(w.traits->type);
    FRUGAL_CHECK(!per_token || p.format == ActivationFormat::kQ8Block32);
    if (weight_codec(w.traits->type).expand_for_prefill && n_tokens > 1) {
      p.path = Path::kSparseExpand;
      need_block32 = true;
    } else if (index >= 0 && table.quant_rows[index] != nullptr) {
      p.path = Path::kQuantized;
      p.quant_rows = table.quant_rows[index];
      need_block32 |= p.format == ActivationFormat::kQ8Block32;
      need_q8k |= p.format == ActivationFormat::kQ8K;
    } else if (index >= 0 && table.float_rows[index] != nullptr) {
      p.path = Path::kFloat;
      p.float_rows = table.float_rows[index];
    } else {
      p.path = Path::kFallback;
    }
    total_rows += w.rows;
  }
  // AMX tiles for prefill (matmul_amx.cpp, bit-identical to the VNNI table, so batch invariance
  // holds) when every integer target's type is amx_preferred(): they read activations in groups of
  // kAmxTokenGroup tokens, which the quantizers write as easily as groups of 8.
  bool use_amx = n_tokens >= kernels::kAmxMinTokens && cols >= kernels::kAmxMinCols &&
                 table.isa == Isa::kAvx512Vnni && amx_active();
  for (int i = 0; i < n_targets && use_amx; ++i) {
    const int index = kernels::kernel_type_index(targets[i].weight->traits->type);
    use_amx = plans[i].path != Path::kSparseExpand &&
              (plans[i].path != Path::kQuantized || kernels::amx_preferred(index));
  }
  if (use_amx) {
    for (int i = 0; i < n_targets; ++i) {
      if (plans[i].path == Path::kQuantized) {
        plans[i].quant_rows = kernels::amx_quant_rows(kernels::kernel_type_index(targets[i].weight->traits->type));
      }
    }
  }

  // Chunks of rows, claimed dynamically. Decode-sized inputs: about 4 chunks per thread over all
  // targets (few atomics, and a preempted thread's share is taken over); prefill: one register
  // tile per chunk, each reused across all tokens.
  const int64_t tile = table.row_tile;
  int64_t chunk = tile;
  if (n_tokens <= kPrivateTokens) {
    const int64_t wanted = std::max<int64_t>(1, total_rows / (4 * n_threads));
    chunk = (wanted + tile - 1) / tile * tile;
  } else if (n_tokens <= kSmallBatchTokens) {
    // A batched decode step (one token of each of up to 32 sequences): a tile's work is short, so
    // with one tile per chunk the threads would alternate tiles, each prefetching the next tile
    // (build_tile's NextTilePrefetch) for the other thread and claiming one it did not prefetch,
    // and contending on the chunk counter (3072 claims for a 49152-row output head). About 8
    // chunks per thread keep the dynamic balance and let the prefetches land where they are used.
    const int64_t wanted = std::max<int64_t>(1, total_rows / (8 * n_threads));
    chunk = (wanted + tile - 1) / tile * tile;
  }
  int64_t n_chunks = 0;
  for (int i = 0; i < n_targets; ++i) {
    plans[i].chunk_rows =
        plans[i].path == Path::kFallback || plans[i].path == Path::kSparseExpand ? std::max(chunk, kFallbackRows) : chunk;
    plans[i].first_chunk = n_chunks;
    n_chunks += (targets[i].weight->rows + plans[i].chunk_rows - 1) / plans[i].chunk_rows;
  }

  const bool private_quant = n_tokens <= kPrivateTokens;
  const int lanes = use_amx ? kernels::kAmxTokenGroup : kernels::group_lanes(n_tokens);
  const int64_t n_groups = (n_tokens + lanes - 1) / lanes;
  std::atomic<int64_t> next_chunk{0};
  std::atomic<int> arrived{0};

  pool.run([&](int thread, int threads) {
    QuantizedActivations block32, q8k;
    if (private_quant) {
      uint8_t* area = base + layout.private_block32 + layout.private_stride * thread;
      uint8_t* area_k = base + layout.private_q8k + layout.private_stride * thread;
      if (need_block32) {
        block32 = kernels::make_activation_view(ActivationFormat::kQ8Block32, cols, n_tokens, area);
        quantize_block32(0, n_groups, block32);
      }
      if (need_q8k) {
        q8k = kernels::make_activation_view(ActivationFormat::kQ8K, cols, n_tokens, area_k);
        table.quantize(x, x_stride, 0, n_groups, q8k);
      }
    } else if (need_block32 || need_q8k) {
      const int64_t g0 = n_groups * thread / threads, g1 = n_groups * (thread + 1) / threads;
      if (need_block32) {
        block32 = kernels::make_activation_view(ActivationFormat::kQ8Block32, cols, n_tokens, lanes, base + layout.shared_block32);
        quantize_block32(g0, g1, block32);
      }
      if (need_q8k) {
        q8k = kernels::make_activation_view(ActivationFormat::kQ8K, cols, n_tokens, lanes, base + layout.shared_q8k);
        table.quantize(x, x_stride, g0, g1, q8k);
      }
      barrier(arrived, threads);
    }
    uint8_t* scratch = base + layout.scratch + layout.scratch_stride * thread;
    int target = 0;
    for (;;) {
      const int64_t c = next_chunk.fetch_add(1, std::memory_order_relaxed);
      if (c >= n_chunks) break;
      while (target + 1 < n_targets && plans[target + 1].first_chunk <= c) ++target;
      while (plans[target].first_chunk > c) --target;
      const TargetPlan& p = plans[target];
      const MatmulTarget& tg = targets[target];
      const WeightMatrix& w = *tg.weight;
      const int64_t r0 = (c - p.first_chunk) * p.chunk_rows;
      const int64_t r1 = std::min(w.rows, r0 + p.chunk_rows);
      switch (p.path) {
        case Path::kQuantized:
          p.quant_rows(w, r0, r1, p.format == ActivationFormat::kQ8K ? q8k : block32, tg.y, tg.y_stride, scratch);
          break;
        case Path::kFloat:
          p.float_rows(w, r0, r1, x, x_stride, n_tokens, tg.y, tg.y_stride);
          break;
        case Path::kSparseExpand:
          sparse_expand_rows(table, w, r0, r1, block32, tg.y, tg.y_stride, scratch,
                             scratch + layout.scratch_stride - sparse_tile_bytes(cols));
          break;
        case Path::kFallback:
          fallback_rows(table, w, r0, r1, x, x_stride, n_tokens, tg.y, tg.y_stride, reinterpret_cast<float*>(scratch));
          break;
      }
      if (w.n_outliers > 0) add_outlier_products(w, r0, r1, x, x_stride, n_tokens, tg.y, tg.y_stride);
    }
  });
}

void matmul_reference(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
                      int64_t y_stride) {
  std::vector<float> row(w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    w.traits->dequantize_row(w.row(r), row.data(), w.cols);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double sum = 0;
      for (int64_t k = 0; k < w.cols; ++k) sum += static_cast<double>(row[k]) * x[t * x_stride + k];
      y[t * y_stride + r] = static_cast<float>(sum);
    }
  }
}

}  // namespace frugal
