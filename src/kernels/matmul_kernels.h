// Internal interface between the matmul driver (matmul.cpp: workspace, threading, dispatch) and
// the per-ISA kernel tables (matmul_reference.cpp for scalar, matmul_avx2/avx512/avx512vnni.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/activation_quant.h"
#include "kernels/cpu_features.h"
#include "tensor/weight_codec.h"
#include "tensor/weight_matrix.h"

namespace frugal::kernels {

// Rows [r0, r1) of an integer-kernel weight type times all a.n_tokens quantized tokens:
// y[t * y_stride + r] for r in [r0, r1). `scratch` holds KernelTable::scratch_bytes(w.cols) bytes
// (64-byte aligned) private to the calling thread.
using QuantRowsFn = void (*)(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                             int64_t y_stride, uint8_t* scratch);
// The same for F32/F16/BF16 weights with float activations.
using FloatRowsFn = void (*)(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t x_stride,
                             int64_t n_tokens, float* y, int64_t y_stride);
// Quantizes tokens of the whole groups [group_begin, group_end) (see quantize_activations_reference).
using QuantizeFn = void (*)(const float* x, int64_t x_stride, int64_t group_begin, int64_t group_end,
                            const QuantizedActivations& out);

// Weight types with kernels, indexed by kernel_type_index(): the slots are declared with the
// codec table (tensor/weight_codec.h), whose entries name the slot of each format.
using enum frugal::KernelType;
// -1 for types without a kernel (they use the dequantize-to-float fallback in matmul.cpp).
int kernel_type_index(DType type);

struct KernelTable {
  Isa isa;
  int row_tile;  // rows per register tile; work is split in multiples of it
  QuantizeFn quantize;
  QuantRowsFn quant_rows[kKernelTypeCount];   // set for the integer types
  FloatRowsFn float_rows[kKernelTypeCount];   // set for F32/F16/BF16
  size_t (*scratch_bytes)(int64_t cols);
};

// The table of one level (the level must be supported by the CPU).
const KernelTable& kernel_table(Isa isa);

// Defined by the per-ISA files.
const KernelTable& scalar_kernel_table();
const KernelTable& avx2_kernel_table();
const KernelTable& avx512_kernel_table();
const KernelTable& avx512vnni_kernel_table();

// Scalar twins (matmul_reference.cpp), also the kernels of Isa::kScalar.
void quant_rows_reference(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                          int64_t y_stride, uint8_t* scratch);
void float_rows_reference(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t x_stride,
                          int64_t n_tokens, float* y, int64_t y_stride);

// sparse-q8 rows times Q8Block32 activations (tensor/sparse_q8.h). The scalar twin takes any
// number of tokens; the SIMD kernels take one token. The matmul driver does not call them: it
// expands every input's tiles to Q8_0 (sparse_q8_to_q8_0) so decode and prefill share one
// summation order (batch invariance); they remain as twin-tested direct kernels. avx512: VBMI2 vpexpandb + VNNI vpdpbusd, used when
// sparse_q8_avx512_supported().
void sparse_q8_rows_reference(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                              int64_t y_stride, uint8_t* scratch);
void sparse_q8_rows_avx2(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                         int64_t y_stride, uint8_t* scratch);
void sparse_q8_rows_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                           int64_t y_stride, uint8_t* scratch);
bool sparse_q8_avx512_supported();
// Rows [r0, r1) of a sparse-q8 matrix as Q8_0 blocks (the 64-block scale on both 32-halves, so the
// values are the same), row-major with (cols / 32) * 34 bytes per row: the prefill path.
void sparse_q8_to_q8_0(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out);
void sparse_q8_to_q8_0_avx2(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out);
void sparse_q8_to_q8_0_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out);  // VBMI2

// AMX int8 prefill (matmul_amx.cpp): the rows kernel of integer type `kernel_index` whose outputs
// are bit-identical to avx512vnni_kernel_table()'s (nullptr for types without one). Only valid
// when amx_active(), with activations in groups of kAmxTokenGroup tokens. The driver uses it for
// inputs of kAmxMinTokens tokens or more and kAmxMinCols columns or more whose integer types are
// all amx_preferred() (those with 32-element sub-blocks; the 16-element ones measured slower than
// VNNI). Measured end to end (pp512, 2 threads): +9% (Q8_0) and +18% (Q4_0) on a 1B Llama
// (2048/8192 columns), -10% to -18% on SmolLM2-135M (576/1536 columns), hence the column bound.
// A batched serving step of 16 decoding sequences is exactly one 16-token group, but AMX there
// measured slower too: SmolLM2 Q4_1 engine_bench --clients 16 -t 1, user CPU +9% with AMX from
// 16 tokens on every shape, +1% with it on the 49152-row output head only (Q8_0); each 16-row
// tile is decoded for a single group, so nothing amortizes the repacking, and the per-32-column
// epilogue that bit-identity requires does not overlap the tile unit (matmul_amx.cpp).
QuantRowsFn amx_quant_rows(int kernel_index);
bool amx_preferred(int kernel_index);
inline constexpr int64_t kAmxMinTokens = 128;
inline constexpr int64_t kAmxMinCols = 2048;

}  // namespace frugal::kernels
