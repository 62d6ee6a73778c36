// Products of a stored-type weight matrix with float activations: y[t][r] = sum_k W[r][k] x[t][k].
#pragma once

#include <cstdint>

#include "base/thread_pool.h"
#include "tensor/weight_matrix.h"

namespace frugal {

// Floats of per-thread scratch that matmul() needs for a matrix with `cols` columns.
int64_t matmul_workspace_floats(int64_t cols, int n_threads);

// x: n_tokens rows of w.cols floats (stride x_stride); y: n_tokens rows of w.rows floats
// (stride y_stride). `workspace` holds matmul_workspace_floats(w.cols, pool.size()) floats.
void matmul(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
            int64_t y_stride, float* workspace, ThreadPool& pool);

// Reference twin: dequantizes each row and accumulates in double. For tests.
void matmul_reference(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens,
                      float* y, int64_t y_stride);

}  // namespace frugal
