// Products of stored-type weight matrices with float activations: y[t][r] = sum_k W[r][k] x[t][k].
//
// Quantized weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K) multiply activations quantized to
// 8 bits once per input, as llama.cpp does (Q8_0/Q8_1 blocks or Q8_K super-blocks, the type's
// "vec_dot_type"), with integer dot products; F32/F16/BF16 weights multiply the float activations.
// The instruction set is chosen once at start-up (kernels/cpu_features.h, FRUGAL_ISA).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/thread_pool.h"
#include "tensor/weight_matrix.h"

namespace frugal {

// One weight applied to a shared input: y[t * y_stride + r] for r < weight->rows.
struct MatmulTarget {
  const WeightMatrix* weight = nullptr;
  float* y = nullptr;
  int64_t y_stride = 0;
};

// Bytes of workspace matmul() and matmul_shared_input() need for inputs of at most `max_cols`
// columns and `max_tokens` tokens on a pool of `n_threads` threads (any alignment; size it once
// when a session starts).
size_t matmul_workspace_bytes(int64_t max_cols, int64_t max_tokens, int n_threads);

// x: n_tokens rows of w.cols floats (stride x_stride); y: n_tokens rows of w.rows floats (stride
// y_stride). `workspace` holds at least matmul_workspace_bytes(w.cols, n_tokens, pool.size()) bytes.
void matmul(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y, int64_t y_stride,
            void* workspace, size_t workspace_bytes, ThreadPool& pool);

// Several weights with the same number of columns reading the same input (Q, K, V; gate, up):
// x is quantized once and all rows of all targets are split between the threads in one parallel
// region.
void matmul_shared_input(std::span<const MatmulTarget> targets, const float* x, int64_t x_stride, int64_t n_tokens,
                         void* workspace, size_t workspace_bytes, ThreadPool& pool);

// Reference: dequantizes each row and accumulates float activations in double (no activation
// quantization). For tests; the scalar twins of the fast kernels are in kernels/matmul_kernels.h.
void matmul_reference(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
                      int64_t y_stride);

}  // namespace frugal
