// Pruning of one weight matrix: magnitude (per-row |W|), Wanda (Sun et al. 2023,
// arXiv:2306.11695: |W_ij|·‖X_j‖₂ within each output row, no update) and SparseGPT (Frantar &
// Alistarh 2023, arXiv:2301.00774: OBS column sweep with the Cholesky factor of H⁻¹, adaptive mask
// selection per block of columns, update of the remaining weights), unstructured or N:M.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "compress/gptq.h"

namespace frugal::compress {

// Which weights are zeroed together: unstructured (any `sparsity` fraction of each comparison
// group), or N:M — N zeros in every M consecutive weights of a row (2:4 and 4:8 are 50% sparse;
// NVIDIA's sparse tensor cores run 2:4).
struct SparsityPattern {
  int n = 0, m = 0;  // 0:0 = unstructured

  // "unstructured", "2:4", "4:8", "N:M" with 0 < N < M <= 64.
  static Result<SparsityPattern> parse(const std::string& text);
  bool is_n_m() const { return m > 0; }
  double sparsity() const { return m > 0 ? static_cast<double>(n) / m : 0.0; }
  std::string name() const;
};

// Checks a (sparsity, pattern) request: sparsity in [0, 1), and for N:M either N/M or unset (< 0).
// Returns the sparsity to use.
Result<double> check_sparsity(double sparsity, const SparsityPattern& pattern);

// Zeros pruned per row of `cols`: round(sparsity * cols) unstructured, N per group of M for N:M.
int64_t zeros_per_row(int64_t cols, double sparsity, const SparsityPattern& pattern);

// Magnitude (column_scale == nullptr) or Wanda (column_scale[j] = ‖X_j‖₂, the L2 norm of input
// column j over the calibration tokens): zeroes, in each row of W (rows x cols, row-major), the
// weights with the smallest |W_ij|·column_scale[j] — exactly zeros_per_row() of them (unstructured)
// or N of every M (N:M); ties go to the lower column. Returns the number of weights zeroed.
int64_t prune_by_score(float* w, int64_t rows, int64_t cols, const float* column_scale, double sparsity,
                       const SparsityPattern& pattern);

// ‖X_j‖₂ of each column of X (n rows of `cols`).
std::vector<float> column_norms(const float* x, int64_t n, int64_t cols);

struct SparseGptOptions {
  double percdamp = 0.01;    // dampening of H, as GPTQ
  int64_t block_size = 128;  // columns per adaptive mask selection and lazy update (the paper's B_s)
  // Threads for the column sweep (rows are split over them); not owned, null = the calling thread.
  // The result is the same for any thread count.
  ThreadPool* pool = nullptr;
};

struct SparseGptResult {
  int64_t zeros = 0;
  // The OBS estimate of the added loss, sum of w²/[H⁻¹]_jj over pruned weights (in units of H).
  double proxy_loss = 0.0;
};

// SparseGPT's adaptive mask for columns [j1, j2) of the working weights W (rows x cols, row-major)
// given U (upper Cholesky factor of H⁻¹, cols x cols): the weights with the smallest w²/U_jj².
// Unstructured: exactly round(sparsity * rows * (j2 - j1)) of the block, chosen jointly over all
// rows as the paper does; N:M: N of each row's M columns (j2 - j1 == M). mask[r * (j2 - j1) + j]
// is set for a pruned weight.
void sparsegpt_mask(const float* w, int64_t rows, int64_t cols, const float* u, int64_t j1, int64_t j2, double sparsity,
                    const SparsityPattern& pattern, std::vector<char>& mask);

// Prunes W (rows x cols, row-major) in place with SparseGPT on a Hessian prepared by gptq_prepare
// (without act_order). Sparsity 0 leaves W unchanged; with an N:M pattern, sparsity is N/M or <= 0.
Result<SparseGptResult> sparsegpt_prune(float* w, int64_t rows, int64_t cols, const GptqHessian& prepared, double sparsity,
                                        const SparsityPattern& pattern, const SparseGptOptions& options = {});

}  // namespace frugal::compress
