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

bool sparse_q8_avx512_supported() {
  static const bool ok = __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512vnni") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  return ok;
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
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t r = r0; r < r1; ++r) {
    const SparseQ8Row row = sparse_q8_row(w.row(r), w.cols, c);
    const int8_t* v = row.values;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      uint16_t h;
      std::memcpy(&h, row.scales + 2 * b, 2);
      const int n = std::popcount(m);
      // The masked load reads only the block's n codes (no fault past the tensor's end).
      const __m512i packed = _mm512_maskz_loadu_epi8(_bzhi_u64(~0ull, static_cast<unsigned>(n)), v);
      v += n;
      const __m512i wq = _mm512_maskz_expand_epi8(m, packed);
      const __m512i xq = _mm512_loadu_si512(x + b * kSparseBlock);
      // vpdpbusd multiplies u8 by s8: |w| times x carrying w's sign.
      const __m512i sx = _mm512_mask_sub_epi8(xq, _mm512_movepi8_mask(wq), zero, xq);
      const __m512i dot = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wq), sx);
      // Lanes 0-7 hold the first 32 columns (activation scale d[2b]), lanes 8-15 the second.
      const float s = fp16_to_float(h);
      const __m512 scale = _mm512_insertf32x8(_mm512_set1_ps(s * d[2 * b]), _mm256_set1_ps(s * d[2 * b + 1]), 1);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc);
    }
    y[r] = _mm512_reduce_add_ps(acc);
  }
}

}  // namespace frugal::kernels
