// AVX-512 decode kernel of the N:M sparse formats (tensor/nm_sparse.h): each block's 32 value slots
// sit at a fixed place, so a row needs no running offset and no popcount; vpexpandb (VBMI2) puts
// the values under the mask, vpdpbusd (VNNI) multiplies them with the Q8 activations.
// Scalar twin: nm_rows_reference (matmul_nm_sparse.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "base/check.h"
#include "kernels/nm_sparse_kernels.h"
#include "tensor/nm_sparse.h"

namespace frugal::kernels {

namespace {

// The pass structure of the sparse-q8 kernel (matmul_sparse_avx512.cpp, where it is measured).
constexpr int kRows = 8;
constexpr int64_t kScaleChunk = 16;
constexpr int kPrefetchPasses = 2;

// A block's values as unsigned bytes for vpdpbusd, with `fill` (the unsigned code of 0) in the
// lanes whose mask bit is clear: int8 values offset by 128 (w ^ 0x80), 4-bit codes as stored
// (u = w + 8, unpacked as in the sparse-q4 kernel).
template <int Bits>
inline __m512i block_unsigned(uint64_t m, const uint8_t* slot, __m512i fill) {
  if constexpr (Bits == 8) {
    const __m256i v = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(slot)), _mm256_set1_epi8(static_cast<char>(0x80)));
    return _mm512_mask_expand_epi8(fill, m, _mm512_zextsi256_si512(v));
  } else {
    const __m256i wide = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(slot)));
    // (wide | wide << 4) & 0x0f0f: the codes in order, one per byte (0xa8 = (A | B) & C).
    const __m256i codes = _mm256_ternarylogic_epi32(wide, _mm256_slli_epi16(wide, 4), _mm256_set1_epi16(0x0f0f), 0xa8);
    return _mm512_mask_expand_epi8(fill, m, _mm512_zextsi256_si512(codes));
  }
}

template <int Bits, int R>
inline void rows_pass(const WeightMatrix& w, int64_t r, int64_t nb, const int8_t* x, const float* d, float* y) {
  constexpr int64_t kSlot = kNmSlot * Bits / 8;
  const uint8_t* masks[R];
  const uint8_t* scales[R];
  const uint8_t* v[R];
  __m512 acc[R];
  for (int i = 0; i < R; ++i) {
    const NmRow row = nm_row(w.row(r + i), w.cols);
    masks[i] = row.masks;
    scales[i] = row.scales;
    v[i] = row.values;
    acc[i] = _mm512_setzero_ps();
  }
  // The unsigned code of 0 and the offset it adds: fill x (sum of each 4 activations).
  const __m512i fill = _mm512_set1_epi8(static_cast<char>(Bits == 8 ? 0x80 : 8));
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
      const __m512i base = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), fill, xq));
      for (int i = 0; i < R; ++i) {
        uint64_t m;
        std::memcpy(&m, masks[i] + 8 * b, 8);
        const __m512i dot = _mm512_dpbusd_epi32(base, block_unsigned<Bits>(m, v[i] + b * kSlot, fill), xq);
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(_mm512_set1_ps(s[i][j]), dx), acc[i]);
      }
    }
  }
  for (int i = 0; i < R; ++i) y[r + i] = _mm512_reduce_add_ps(acc[i]);
}

template <int Bits>
void run(const WeightMatrix& w, int64_t r0, int64_t r1, const int8_t* x, const float* d, float* y) {
  const int64_t nb = w.cols / kSparseBlock;
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) rows_pass<Bits, kRows>(w, r, nb, x, d, y);
  for (; r < r1; ++r) rows_pass<Bits, 1>(w, r, nb, x, d, y);
}

}  // namespace

void nm_to_q8_0_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out) {
  const NmPattern p = nm_pattern(w.traits->type);
  FRUGAL_CHECK(p.bits != 0);
  const int64_t slot = kNmSlot * p.bits / 8;
  // The unsigned form minus the code of 0 is the signed value (0 where the mask bit is clear).
  const __m512i fill = _mm512_set1_epi8(static_cast<char>(p.bits == 8 ? 0x80 : 8));
  for (int64_t r = r0; r < r1; ++r) {
    const NmRow row = nm_row(w.row(r), w.cols);
    uint8_t* blocks = out + (r - r0) * (w.cols / 32) * 34;
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      const __m512i u = p.bits == 8 ? block_unsigned<8>(m, row.values + b * slot, fill) : block_unsigned<4>(m, row.values + b * slot, fill);
      const __m512i wq = _mm512_sub_epi8(u, fill);
      uint8_t* q = blocks + 2 * b * 34;
      std::memcpy(q, row.scales + 2 * b, 2);
      std::memcpy(q + 34, row.scales + 2 * b, 2);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 2), _mm512_castsi512_si256(wq));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 36), _mm512_extracti64x4_epi64(wq, 1));
    }
  }
}

void nm_rows_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                    int64_t y_stride, uint8_t* scratch) {
  if (a.n_tokens != 1) {  // the driver sends only decode here; anything else takes the twin
    nm_rows_reference(w, r0, r1, a, y, y_stride, scratch);
    return;
  }
  const NmPattern p = nm_pattern(w.traits->type);
  FRUGAL_CHECK(p.bits != 0);
  const int8_t* x = a.codes(0);
  const float* d = a.array(0, ActivationArray::kD32);
  if (p.bits == 8) {
    run<8>(w, r0, r1, x, d, y);
  } else {
    run<4>(w, r0, r1, x, d, y);
  }
}

}  // namespace frugal::kernels
