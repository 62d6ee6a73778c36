// AVX-512 decode kernel of sparse-q8 (tensor/sparse_q8.h): one masked load of the block's packed
// codes and one vpexpandb (VBMI2) puts the 64 weights of a block in place, vpdpbusd (VNNI) does
// the 64 multiply-adds with the Q8 activations. Scalar twin: sparse_q8_rows_reference.
#include <immintrin.h>

#include <bit>
#include <cstring>

#include "base/check.h"
#include "kernels/matmul_kernels.h"
#include "tensor/fp16.h"
#include "tensor/sparse_q8.h"

namespace frugal::kernels {

namespace {

// Block b of a row (codes at v, which advances) times the block's 64 activation codes xq, scaled by
// the block scale times dx (lanes 0-7: the first 32 columns' activation scale, 8-15: the second's).
inline __m512 block_step(const SparseQ8Row& row, int64_t b, const int8_t*& v, __m512i xq, __m512 dx, __m512 acc) {
  uint64_t m;
  std::memcpy(&m, row.masks + 8 * b, 8);
  uint16_t h;
  std::memcpy(&h, row.scales + 2 * b, 2);
  const int n = std::popcount(m);
  // The masked load reads only the block's n codes (no fault past the tensor's end).
  const __m512i packed = _mm512_maskz_loadu_epi8(_bzhi_u64(~0ull, static_cast<unsigned>(n)), v);
  v += n;
  const __m512i wq = _mm512_maskz_expand_epi8(m, packed);
  // vpdpbusd multiplies u8 by s8: |w| times x carrying w's sign.
  const __m512i sx = _mm512_mask_sub_epi8(xq, _mm512_movepi8_mask(wq), _mm512_setzero_si512(), xq);
  const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(wq), sx);
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(_mm512_set1_ps(fp16_to_float(h)), dx), acc);
}

}  // namespace

bool sparse_q8_avx512_supported() {
  static const bool ok = __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512vnni") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  return ok;
}

void sparse_q8_to_q8_0_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out) {
  const int c = sparse_q8_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  for (int64_t r = r0; r < r1; ++r) {
    const SparseQ8Row row = sparse_q8_row(w.row(r), w.cols, c);
    uint8_t* blocks = out + (r - r0) * (w.cols / 32) * 34;
    const int8_t* v = row.values;
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      const int n = std::popcount(m);
      const __m512i wq = _mm512_maskz_expand_epi8(m, _mm512_maskz_loadu_epi8(_bzhi_u64(~0ull, static_cast<unsigned>(n)), v));
      v += n;
      uint8_t* q = blocks + 2 * b * 34;
      std::memcpy(q, row.scales + 2 * b, 2);
      std::memcpy(q + 34, row.scales + 2 * b, 2);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 2), _mm512_castsi512_si256(wq));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 36), _mm512_extracti64x4_epi64(wq, 1));
    }
  }
}

void sparse_q8_rows_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                           int64_t y_stride, uint8_t* scratch) {
  if (a.n_tokens != 1) {  // the driver sends only decode here; anything else takes the twin
    sparse_q8_rows_reference(w, r0, r1, a, y, y_stride, scratch);
    return;
  }
  const int c = sparse_q8_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  const int8_t* x = a.codes(0);
  const float* d = a.array(0, ActivationArray::kD32);
  // Four rows at a time: their expansions are independent (the latency of vpexpandb overlaps) and
  // each block's activations and activation scales are loaded once for the four.
  constexpr int kRows = 4;
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) {
    SparseQ8Row rows[kRows];
    const int8_t* v[kRows];
    __m512 acc[kRows];
    for (int i = 0; i < kRows; ++i) {
      rows[i] = sparse_q8_row(w.row(r + i), w.cols, c);
      v[i] = rows[i].values;
      acc[i] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < rows[0].blocks; ++b) {
      const __m512i xq = _mm512_loadu_si512(x + b * kSparseBlock);
      const __m512 dx = _mm512_insertf32x8(_mm512_set1_ps(d[2 * b]), _mm256_set1_ps(d[2 * b + 1]), 1);
      for (int i = 0; i < kRows; ++i) acc[i] = block_step(rows[i], b, v[i], xq, dx, acc[i]);
    }
    for (int i = 0; i < kRows; ++i) y[r + i] = _mm512_reduce_add_ps(acc[i]);
  }
  for (; r < r1; ++r) {
    const SparseQ8Row row = sparse_q8_row(w.row(r), w.cols, c);
    const int8_t* v = row.values;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < row.blocks; ++b) {
      const __m512i xq = _mm512_loadu_si512(x + b * kSparseBlock);
      const __m512 dx = _mm512_insertf32x8(_mm512_set1_ps(d[2 * b]), _mm256_set1_ps(d[2 * b + 1]), 1);
      acc = block_step(row, b, v, xq, dx, acc);
    }
    y[r] = _mm512_reduce_add_ps(acc);
  }
}

}  // namespace frugal::kernels
