// Kernels of the sparse-q4 weight format (tensor/sparse_q4.h): the one-token decode kernels and
// the expansion to Q8_0 tiles that prefill multiplies with the dense Q8_0 kernel (matmul.cpp).
#pragma once

#include <cstdint>

#include "kernels/matmul_kernels.h"

namespace frugal::kernels {

// sparse-q4 rows times Q8Block32 activations. The scalar twin (matmul_sparse_q4.cpp) takes any
// number of tokens and is also the kernel of the ISAs without VBMI2; the AVX-512 kernel
// (matmul_sparse_q4_avx512.cpp, VBMI2 vpexpandb + VNNI vpdpbusd) takes one token and is used when
// sparse_q8_avx512_supported() (the same instruction sets).
void sparse_q4_rows_reference(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                              int64_t y_stride, uint8_t* scratch);
void sparse_q4_rows_avx2(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                         int64_t y_stride, uint8_t* scratch);  // matmul_sparse_q4_nm_avx2.cpp
void sparse_q4_rows_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                           int64_t y_stride, uint8_t* scratch);
// Rows [r0, r1) of a sparse-q4 matrix as Q8_0 blocks (the codes minus 8, the 64-block scale on
// both 32-halves: the same values), (cols / 32) * 34 bytes per row: the prefill path.
void sparse_q4_to_q8_0(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out);
void sparse_q4_to_q8_0_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out);  // VBMI2

}  // namespace frugal::kernels
