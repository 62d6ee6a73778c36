// The row loop shared by the AVX-512 decode kernels of the sparse formats (sparse-q8, sparse-q4,
// nm-q8/nm-q4): each format supplies only how a block's stored values become 64 unsigned codes
// under its mask (vpexpandb); the passes, scale conversion, prefetch and vpdpbusd dot are here.
// Include only from files compiled with AVX-512 VBMI2 + VNNI (kernels.cmake).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/matmul_kernels.h"
#include "tensor/sparse_q8.h"

namespace frugal::kernels::sparse_avx512 {

// Rows per pass: each block's activations, activation scales and offset correction are loaded or
// computed once for them, and their independent expansions overlap (8 and 4 measured within noise
// of each other; 8 shares more of the per-block work).
inline constexpr int kRows = 8;
// Blocks whose fp16 scales are converted together (one vcvtph2ps per row).
inline constexpr int64_t kScaleChunk = 16;
// How many passes ahead the software prefetch runs (1, 2 and 4 measured within noise of each
// other on 4096x4096; 0, i.e. none, was 1.3x slower). The prefetch goes to L2 (T1): in
// alternating runs, 50% sparse decoded 1.63-1.67x q8_0 with T1 against 1.24-1.38x with T0.
inline constexpr int kPrefetchPasses = 2;

// Where a row's three parts start.
struct RowParts {
  const uint8_t* masks;
  const uint8_t* scales;
  const uint8_t* values;
};

// Rows [r, r + R) (R = 1 or kRows) of a sparse matrix times one token's Q8 activation codes x
// (scales d, one per 32 columns): y[r + i]. `Unpack` is the format:
//   kZero                 the unsigned code of the value 0,
//   row(w, r)             the parts of row r,
//   block(m, v, b)        block b's 64 codes as unsigned bytes (w + kZero), kZero where mask m is
//                         clear; v points at the row's values and is advanced past the block when
//                         the format packs blocks back to back.
//
// The work per row and block is what decode can afford next to the bytes it streams (memory-bound
// only if the kernel is cheaper than the load): the format's load and vpexpandb, one vpdpbusd
// (VNNI), then the float scaling. vpdpbusd multiplies u8 by s8, so the weights are offset to
// unsigned and the activations stay signed; the offset adds kZero * sum(x) per 4-lane group, a
// term that depends on the activations only and so is computed once per block for all rows and
// put in the accumulator the dot starts from. This is the "unsigned-offset" form used by VNNI int8
// GEMMs (Intel's oneDNN s8s8 compensation), with the compensation on the shared operand.
template <class Unpack, int R>
inline void rows_pass(const Unpack& unpack, const WeightMatrix& w, int64_t r, int64_t nb, const int8_t* x, const float* d,
                      float* y) {
  const uint8_t* masks[R];
  const uint8_t* scales[R];
  const uint8_t* v[R];
  __m512 acc[R];
  for (int i = 0; i < R; ++i) {
    const RowParts row = unpack.row(w, r + i);
    masks[i] = row.masks;
    scales[i] = row.scales;
    v[i] = row.values;
    acc[i] = _mm512_setzero_ps();
  }
  const __m512i zero_code = _mm512_set1_epi8(Unpack::kZero);
  // Software prefetch of the next pass's rows, spread evenly over this pass's blocks. The rows of
  // a pass are adjacent and short (8 x 1.9 KB at 4096 columns, 70% sparse), and each is read as
  // three streams (masks, scales, codes) advancing at different rates: two dozen interleaved
  // streams within a few pages, which the hardware prefetchers follow poorly (without this, with
  // 4 rows per pass, sparse-q8 decode streamed 4096x4096 at 6.4 GB/s against Q8_0's 10.7).
  const uint8_t* tensor_end = w.row(w.rows - 1) + w.row_bytes;
  const uint8_t* pf = std::min(w.row(r) + kPrefetchPasses * R * w.row_bytes, tensor_end);
  const uint8_t* pf_end = std::min(pf + R * w.row_bytes, tensor_end);
  const int64_t pf_lines = pf < pf_end ? (pf_end - pf + 63) / 64 : 0;
  const int64_t pf_per_block = (pf_lines + nb - 1) / nb;
  alignas(64) float s[R][kScaleChunk];
  for (int64_t b0 = 0; b0 < nb; b0 += kScaleChunk) {
    const int64_t n_chunk = std::min<int64_t>(kScaleChunk, nb - b0);
    const __mmask16 chunk_mask = static_cast<__mmask16>((1u << n_chunk) - 1u);
    for (int i = 0; i < R; ++i)
      _mm512_store_ps(s[i], _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(chunk_mask, scales[i] + 2 * b0)));
    for (int64_t j = 0; j < n_chunk; ++j) {
      const int64_t b = b0 + j;
      for (int64_t k = 0; k < pf_per_block && pf < pf_end; ++k, pf += 64)
        _mm_prefetch(reinterpret_cast<const char*>(pf), _MM_HINT_T1);
      const __m512i xq = _mm512_loadu_si512(x + b * kSparseBlock);
      const __m512 dx = _mm512_insertf32x8(_mm512_set1_ps(d[2 * b]), _mm256_set1_ps(d[2 * b + 1]), 1);
      // -kZero * (sum of each 4 activations): the dot of the offset codes minus this is the dot.
      const __m512i base = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), zero_code, xq));
      for (int i = 0; i < R; ++i) {
        uint64_t m;
        std::memcpy(&m, masks[i] + 8 * b, 8);
        const __m512i dot = _mm512_dpbusd_epi32(base, unpack.block(m, v[i], b), xq);
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(_mm512_set1_ps(s[i][j]), dx), acc[i]);
      }
    }
  }
  for (int i = 0; i < R; ++i) y[r + i] = _mm512_reduce_add_ps(acc[i]);
}

// The prefill expansion's output for block b of a row: the 64 signed weights wq as two Q8_0
// blocks (34 bytes each, from `blocks`), both with the 64-block's fp16 scale at `scale`.
inline void store_q8_0_pair(uint8_t* blocks, int64_t b, const uint8_t* scale, __m512i wq) {
  uint8_t* q = blocks + 2 * b * 34;
  std::memcpy(q, scale, 2);
  std::memcpy(q + 34, scale, 2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 2), _mm512_castsi512_si256(wq));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 36), _mm512_extracti64x4_epi64(wq, 1));
}

// Rows [r0, r1) of one token (`capacity`: the type's, for the formats that have one): passes of
// kRows rows, then single rows. Unpack<true> loads with a
// byte mask and is used for passes ending less than Unpack<false>::kLoadBytes (its full load)
// before the tensor's end, where a full load could pass it; formats whose loads never pass their
// row (kLoadBytes 0) always take Unpack<false>.
template <template <bool> class Unpack>
void decode_rows(int capacity, const WeightMatrix& w, int64_t r0, int64_t r1, const int8_t* x, const float* d,
                 float* y) {
  const int64_t nb = w.cols / kSparseBlock;
  const Unpack<false> full{capacity};
  constexpr int64_t kLoadBytes = Unpack<false>::kLoadBytes;
  const uint8_t* tensor_end = w.row(w.rows - 1) + w.row_bytes;
  const auto near_end = [&](int64_t r_end) { return kLoadBytes > 0 && tensor_end - (w.row(r_end - 1) + w.row_bytes) < kLoadBytes; };
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) {
    if constexpr (kLoadBytes > 0) {
      if (near_end(r + kRows)) {
        rows_pass<Unpack<true>, kRows>(Unpack<true>{capacity}, w, r, nb, x, d, y);
        continue;
      }
    }
    rows_pass<Unpack<false>, kRows>(full, w, r, nb, x, d, y);
  }
  for (; r < r1; ++r) {
    if constexpr (kLoadBytes > 0) {
      if (near_end(r + 1)) {
        rows_pass<Unpack<true>, 1>(Unpack<true>{capacity}, w, r, nb, x, d, y);
        continue;
      }
    }
    rows_pass<Unpack<false>, 1>(full, w, r, nb, x, d, y);
  }
}

}  // namespace frugal::kernels::sparse_avx512
