// Kernels of the N:M sparse weight formats (tensor/nm_sparse.h): the one-token decode kernels and
// the expansion to Q8_0 tiles that prefill multiplies with the dense Q8_0 kernel (matmul.cpp).
#pragma once

#include <cstdint>

#include "kernels/matmul_kernels.h"

namespace frugal::kernels {

// N:M rows (nm-q8 and nm-q4, both patterns) times Q8Block32 activations. The scalar twin
// (matmul_nm_sparse.cpp) takes any number of tokens and is also the kernel of the ISAs without
// VBMI2; the AVX-512 kernel (matmul_nm_sparse_avx512.cpp) takes one token and is used when
// sparse_q8_avx512_supported() (VBMI2 + VNNI).
void nm_rows_reference(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                       int64_t y_stride, uint8_t* scratch);
void nm_rows_avx2(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                  int64_t y_stride, uint8_t* scratch);  // matmul_sparse_q4_nm_avx2.cpp
void nm_rows_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                    int64_t y_stride, uint8_t* scratch);
// Rows [r0, r1) as Q8_0 blocks (the same values), (cols / 32) * 34 bytes per row.
void nm_to_q8_0(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out);
void nm_to_q8_0_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out);  // VBMI2

}  // namespace frugal::kernels
