// Magnitude, Wanda and SparseGPT pruning of one matrix (see prune.h). SparseGPT follows the
// reference implementation's structure (github.com/IST-DASLab/sparsegpt, sparsegpt.py
// fasterprune): H⁻¹ through its upper Cholesky factor U, a lazy update every block_size columns,
// the unstructured mask chosen per block on w²/U_jj² and the N:M mask per group of M columns.
#include "compress/prune.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/check.h"
#include "compress/parallel.h"

namespace frugal::compress {
namespace {

// y[0..n) -= a * x[0..n) (as gptq.cpp, one fused multiply-add per element).
inline void axpy_sub(float* y, float a, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = std::fma(-a, x[j], y[j]);
}

// Marks the k entries of scores[0..n) with the smallest values (ties: lower index first).
void mark_smallest(const float* scores, int64_t n, int64_t k, char* mark, std::vector<int64_t>& index) {
  std::fill(mark, mark + n, 0);
  if (k <= 0) return;
  index.resize(static_cast<size_t>(n));
  std::iota(index.begin(), index.end(), 0);
  auto less = [&](int64_t a, int64_t b) { return scores[a] < scores[b] || (scores[a] == scores[b] && a < b); };
  if (k < n) std::nth_element(index.begin(), index.begin() + k, index.end(), less);
  for (int64_t i = 0; i < std::min(k, n); ++i) mark[index[static_cast<size_t>(i)]] = 1;
}

}  // namespace

Result<SparsityPattern> SparsityPattern::parse(const std::string& text) {
  if (text.empty() || text == "unstructured") return SparsityPattern{};
  const size_t colon = text.find(':');
  auto bad = [&]() { return Status::error("pattern '" + text + "' is not unstructured or N:M (such as 2:4 or 4:8)"); };
  if (colon == std::string::npos || colon == 0 || colon + 1 >= text.size() || text.size() > 8) return bad();
  int values[2] = {0, 0};
  const std::string parts[2] = {text.substr(0, colon), text.substr(colon + 1)};
  for (int p = 0; p < 2; ++p) {
    for (char ch : parts[p]) {
      if (ch < '0' || ch > '9') return bad();
      values[p] = values[p] * 10 + (ch - '0');
    }
  }
  if (values[0] <= 0 || values[1] > 64 || values[0] >= values[1]) {
    return Status::error("pattern " + text + ": N:M needs 0 < N < M <= 64");
  }
  return SparsityPattern{values[0], values[1]};
}

std::string SparsityPattern::name() const {
  return m > 0 ? std::to_string(n) + ":" + std::to_string(m) : std::string("unstructured");
}

Result<double> check_sparsity(double sparsity, const SparsityPattern& pattern) {
  if (pattern.is_n_m()) {
    if (sparsity >= 0 && std::fabs(sparsity - pattern.sparsity()) > 1e-9) {
      return Status::error("pattern " + pattern.name() + " prunes exactly " + std::to_string(pattern.sparsity()) +
                           " of the weights; --sparsity " + std::to_string(sparsity) + " is impossible with it");
    }
    return pattern.sparsity();
  }
  if (!(sparsity >= 0.0 && sparsity < 1.0)) {
    return Status::error("sparsity must be in [0, 1) (the fraction of weights set to zero), got " + std::to_string(sparsity));
  }
  return sparsity;
}

int64_t zeros_per_row(int64_t cols, double sparsity, const SparsityPattern& pattern) {
  if (pattern.is_n_m()) return cols / pattern.m * pattern.n;
  return static_cast<int64_t>(std::llround(sparsity * static_cast<double>(cols)));
}

std::vector<float> column_norms(const float* x, int64_t n, int64_t cols) {
  std::vector<double> sums(static_cast<size_t>(cols), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    const float* row = x + t * cols;
    for (int64_t j = 0; j < cols; ++j) sums[static_cast<size_t>(j)] += static_cast<double>(row[j]) * row[j];
  }
  std::vector<float> norms(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) norms[static_cast<size_t>(j)] = static_cast<float>(std::sqrt(sums[static_cast<size_t>(j)]));
  return norms;
}

int64_t prune_by_score(float* w, int64_t rows, int64_t cols, const float* column_scale, double sparsity,
                       const SparsityPattern& pattern) {
  FRUGAL_CHECK(!pattern.is_n_m() || cols % pattern.m == 0);
  std::vector<float> score(static_cast<size_t>(cols));
  std::vector<char> mark(static_cast<size_t>(cols));
  std::vector<int64_t> index;
  int64_t zeroed = 0;
  const int64_t k = zeros_per_row(cols, sparsity, pattern);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = w + r * cols;
    for (int64_t j = 0; j < cols; ++j) score[static_cast<size_t>(j)] = std::fabs(row[j]) * (column_scale ? column_scale[j] : 1.0f);
    if (pattern.is_n_m()) {
      for (int64_t g = 0; g < cols; g += pattern.m) mark_smallest(score.data() + g, pattern.m, pattern.n, mark.data() + g, index);
    } else {
      mark_smallest(score.data(), cols, k, mark.data(), index);
    }
    for (int64_t j = 0; j < cols; ++j) {
      if (mark[static_cast<size_t>(j)]) {
        row[j] = 0.0f;
        ++zeroed;
      }
    }
  }
  return zeroed;
}

void sparsegpt_mask(const float* w, int64_t rows, int64_t cols, const float* u, int64_t j1, int64_t j2, double sparsity,
                    const SparsityPattern& pattern, std::vector<char>& mask) {
  const int64_t width = j2 - j1;
  std::vector<float> score(static_cast<size_t>(rows * width));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < width; ++j) {
      const float d = u[(j1 + j) * cols + j1 + j];
      const float v = w[r * cols + j1 + j];
      score[static_cast<size_t>(r * width + j)] = v * v / (d * d);
    }
  }
  mask.resize(static_cast<size_t>(rows * width));
  std::vector<int64_t> index;
  if (pattern.is_n_m()) {
    FRUGAL_CHECK(width == pattern.m);
    for (int64_t r = 0; r < rows; ++r) {
      mark_smallest(score.data() + r * width, width, pattern.n, mask.data() + r * width, index);
    }
  } else {
    const int64_t k = static_cast<int64_t>(std::llround(sparsity * static_cast<double>(rows * width)));
    mark_smallest(score.data(), rows * width, k, mask.data(), index);
  }
}

Result<SparseGptResult> sparsegpt_prune(float* w, int64_t rows, int64_t cols, const GptqHessian& prepared, double sparsity,
                                        const SparsityPattern& pattern, const SparseGptOptions& options) {
  if (w == nullptr || rows <= 0 || cols <= 0) return Status::error("sparsegpt: empty weight matrix");
  if (prepared.cols != cols) {
    return Status::error("sparsegpt: Hessian has " + std::to_string(prepared.cols) + " columns, weights " + std::to_string(cols));
  }
  for (int64_t i = 0; i < cols; ++i) {
    if (prepared.order[static_cast<size_t>(i)] != i) return Status::error("sparsegpt: the Hessian must be prepared without act_order");
  }
  FRUGAL_ASSIGN_OR_RETURN(sparsity, check_sparsity(pattern.is_n_m() && sparsity <= 0.0 ? -1.0 : sparsity, pattern));
  if (pattern.is_n_m() && cols % pattern.m != 0) {
    return Status::error("sparsegpt: rows of " + std::to_string(cols) + " are not a multiple of M = " + std::to_string(pattern.m));
  }
  // Blocks hold whole N:M groups.
  int64_t bs = std::max<int64_t>(1, options.block_size);
  if (pattern.is_n_m()) bs = std::max<int64_t>(pattern.m, bs / pattern.m * pattern.m);
  const float* u = prepared.u.data();
  const int64_t c = cols;
  SparseGptResult result;
  if (sparsity == 0.0) return result;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < c; ++j) {
      if (prepared.dead[static_cast<size_t>(j)]) w[r * c + j] = 0.0f;  // no input, no influence (as GPTQ)
    }
  }
  std::vector<float> err(static_cast<size_t>(rows * bs));
  std::vector<char> mask;
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
  std::vector<int64_t> zeros(static_cast<size_t>(pool_slots(options.pool)), 0);
  // Rows are independent except for the unstructured mask, which ranks a whole block: it is
  // chosen before the block, then every thread sweeps the block over its own rows (as GPTQ,
  // compress/gptq.cpp). N:M masks are per row and chosen inside the sweep.
  for (int64_t i1 = 0; i1 < c; i1 += bs) {
    const int64_t i2 = std::min(c, i1 + bs), width = i2 - i1;
    if (!pattern.is_n_m()) {
      sparsegpt_mask(w, rows, c, u, i1, i2, sparsity, pattern, mask);
    } else {
      mask.assign(static_cast<size_t>(rows * width), 0);
    }
    for_chunks(options.pool, rows, [&](int64_t r0, int64_t r1, int slot) {
      std::vector<char> group_mask;
      for (int64_t i = i1; i < i2; ++i) {
        if (pattern.is_n_m() && (i - i1) % pattern.m == 0) {
          // Chosen on the weights as updated by the columns before this group (adaptive, §3.3).
          sparsegpt_mask(w + r0 * c, r1 - r0, c, u, i, i + pattern.m, sparsity, pattern, group_mask);
          for (int64_t r = r0; r < r1; ++r) {
            for (int64_t j = 0; j < pattern.m; ++j) {
              mask[static_cast<size_t>(r * width + i - i1 + j)] = group_mask[static_cast<size_t>((r - r0) * pattern.m + j)];
            }
          }
        }
        const float d = u[i * c + i];
        const float* ui = u + i * c;
        for (int64_t r = r0; r < r1; ++r) {
          float* wr = w + r * c;
          float e = 0.0f;
          if (mask[static_cast<size_t>(r * width + i - i1)]) {
            // OBS: removing w_i costs w_i² / [H⁻¹]_ii and is compensated by δ = -w_i / [H⁻¹]_ii · H⁻¹_:,i,
            // written with U (H⁻¹ = UᵀU): err = w_i / U_ii, W_:,j -= err · U_ij for j > i.
            e = wr[i] / d;
            row_loss[static_cast<size_t>(r)] += 0.5 * static_cast<double>(e) * e;
            wr[i] = 0.0f;
            ++zeros[static_cast<size_t>(slot)];
            axpy_sub(wr + i + 1, e, ui + i + 1, i2 - i - 1);
          }
          err[static_cast<size_t>(r * bs + (i - i1))] = e;
        }
      }
      // Lazy batch update of the later columns: W_:,i2: -= Err · U_(i1:i2),(i2:).
      if (i2 < c) {
        for (int64_t r = r0; r < r1; ++r) {
          float* wr = w + r * c;
          for (int64_t k = i1; k < i2; ++k) {
            const float e = err[static_cast<size_t>(r * bs + (k - i1))];
            if (e != 0.0f) axpy_sub(wr + i2, e, u + k * c + i2, c - i2);
          }
        }
      }
    });
  }
  for (int64_t z : zeros) result.zeros += z;
  for (double loss : row_loss) result.proxy_loss += loss;  // in row order: independent of the split
  return result;
}

}  // namespace frugal::compress
