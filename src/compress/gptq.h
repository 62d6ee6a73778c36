// GPTQ (Frantar et al. 2022, arXiv:2210.17323): layer-wise quantization that quantizes weight
// columns one at a time and spreads each column's rounding error over the not yet quantized
// columns through the inverse Hessian of the layer's squared output error, H = 2 X^T X.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "compress/format_grid.h"

namespace frugal::compress {

// Accumulates X^T X of a layer's calibration inputs, batch by batch (rows of X are tokens).
class HessianAccumulator {
 public:
  // kFloat64 computes every batch's products in double; kFloat32 computes them in float (twice
  // as fast) and adds each batch of at most 256 rows into the double sum.
  enum class Precision { kFloat32, kFloat64 };

  explicit HessianAccumulator(int64_t cols, Precision precision = Precision::kFloat64);

  // Adds n_rows rows of X, each `cols` floats, consecutive rows `stride` floats apart (0 = cols),
  // on the threads of `pool` if given (the sum is the same for any thread count).
  void add(const float* x, int64_t n_rows, int64_t stride = 0, ThreadPool* pool = nullptr);

  int64_t cols() const { return cols_; }
  int64_t samples() const { return samples_; }
  // X^T X over all rows added (cols x cols, row-major, symmetric).
  std::vector<double> gram() const;
  // GPTQ's H = 2 X^T X / N over the N rows added (the Hessian of the mean squared output error).
  std::vector<double> hessian() const;

 private:
  int64_t cols_;
  Precision precision_;
  int64_t samples_ = 0;
  std::vector<double> sum_;   // upper triangle of X^T X (row-major, cols x cols)
  std::vector<float> panel_;  // one batch transposed: column c of X is panel_[c * kPanel ...]
};

struct GptqOptions {
  double percdamp = 0.01;  // dampening: H += percdamp * mean(diag H) * I
  bool act_order = false;  // quantize columns by descending diag(H) ("desc_act")
  int64_t block_size = 128;  // columns per lazy batch update
  // How each group's grid is fitted when the quantizer reaches it: kMinMax as GPTQ's reference
  // quantizer (and round-to-nearest) does, or the importance-weighted search of format_grid.h.
  GridFit fit = GridFit::kSearch;
  // Weight the grid fit by diag(H) (the per-column importance, as llama.cpp's imatrix) rather
  // than uniformly. Only used by kSearch.
  bool importance_weighted_fit = true;
  // K-quants with kSearch: when the quantizer reaches a sub-block after its block was fitted,
  // refit that sub-block's codes (d/dmin stay fixed) to its error-updated weights.
  bool refit_sub_blocks = true;
  // SparseGPT's joint sparsification and quantization (Frantar & Alistarh 2023, §3.5): in the same
  // column sweep, the weights chosen by SparseGPT's adaptive mask (compress/prune.h
  // sparsegpt_mask: per block unstructured, or sparsity_n of every sparsity_m columns) are set to
  // the grid value nearest 0 — exactly 0 on symmetric grids (q8_0, q4_0, fq4s…) — and the rest are
  // quantized; both errors are compensated alike. Needs act_order off.
  double sparsity = 0.0;
  int sparsity_n = 0, sparsity_m = 0;
  // Threads for the factorization and the column sweep (rows are split over them); not owned,
  // null = the calling thread only. The output is the same for any thread count.
  ThreadPool* pool = nullptr;
};

struct GptqResult {
  QuantizedMatrix quantized;  // encoded rows (formats) or codes + grids (generic), and values
  int64_t dead_columns = 0;   // columns whose diag(H) was 0: their weights were set to 0
  double damp = 0.0;          // dampening actually added to the diagonal
  // GPTQ's own estimate of the added loss (the reference implementation's "Losses"): the sum
  // over all entries of (w - q)^2 / (2 U_ii^2), w the error-updated weight when it was quantized
  // and U the Cholesky factor of H^-1, in units of H (e.g. 2 X^T X / N).
  double proxy_loss = 0.0;
  // Work done, so tests can check the algorithm's cost without timing it: per-row group (block)
  // grid fits, K-quant sub-block refits, and multiply-adds spent spreading rounding errors
  // (in-batch, lazy batch updates, and bringing a group up to date before a mid-batch fit).
  int64_t grid_fits = 0;
  int64_t sub_block_refits = 0;
  int64_t error_update_multiply_adds = 0;
};

// Everything GPTQ derives from H alone (dead columns, column order, dampening and the Cholesky
// factor of H^-1), so weights that share an input (Q, K, V; gate, up) factor H once.
struct GptqHessian {
  int64_t cols = 0;
  std::vector<int64_t> order;     // order[i] = original column quantized i-th
  std::vector<char> dead;         // per original column: diag(H) was 0
  std::vector<float> importance;  // per original column: diag(H) (1 for dead columns)
  std::vector<float> u;           // upper U with U^T U = (H + damp I)^-1, permuted order, row-major
  int64_t dead_columns = 0;
  double damp = 0.0;
};

// Prepares H (cols x cols, row-major, symmetric; e.g. HessianAccumulator::hessian) with the
// dampening and column order of `options`. If the dampened H is not positive definite the
// dampening is raised tenfold, up to four times, before giving up with an error.
Result<GptqHessian> gptq_prepare(const double* hessian, int64_t cols, const GptqOptions& options = {});

// Quantizes W (rows x cols, row-major). Groups (format blocks or generic groups) are fitted when
// the quantizer reaches their first column, on the current (error-updated) weights; with
// act_order the groups stay the original column ranges ("static groups"), so the output is a
// valid block layout. `prepared` must come from gptq_prepare with the same act_order/percdamp.
// Fails when the row length does not fit the target.
Result<GptqResult> gptq_quantize(const float* weights, int64_t rows, int64_t cols,
                                 const GptqHessian& prepared, const QuantTarget& target,
                                 const GptqOptions& options = {});
// Convenience: gptq_prepare followed by gptq_quantize.
Result<GptqResult> gptq_quantize(const float* weights, int64_t rows, int64_t cols,
                                 const double* hessian, const QuantTarget& target,
                                 const GptqOptions& options = {});

// ---- Dense linear algebra shared with AWQ -------------------------------------------------------

// Factors a symmetric positive definite n x n matrix (row-major, upper triangle read) as
// A = V V^T with V upper triangular, in place (upper triangle = V, lower triangle zeroed).
// Returns false when a pivot is not positive.
bool factor_upper_cholesky(double* a, int64_t n, ThreadPool* pool = nullptr);
// Replaces an upper triangular matrix (row-major, nonzero diagonal, zero lower triangle) by its
// inverse, in place.
void invert_upper_triangular(double* v, int64_t n, ThreadPool* pool = nullptr);

}  // namespace frugal::compress
