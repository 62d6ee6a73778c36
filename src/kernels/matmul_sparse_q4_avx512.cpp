// AVX-512 decode kernel of sparse-q4 (tensor/sparse_q4.h): a block's packed 4-bit codes are
// unpacked to one code per byte (vpmovzxbw + shift + ternary logic), vpexpandb (VBMI2) puts them
// at their mask positions, vpdpbusd (VNNI) does the 64 multiply-adds with the Q8 activations.
// Scalar twin: sparse_q4_rows_reference (matmul_sparse_q4.cpp).
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "base/check.h"
#include "kernels/sparse_q4_kernels.h"
#include "tensor/sparse_q4.h"

namespace frugal::kernels {

namespace {

// The pass structure of the sparse-q8 kernel (matmul_sparse_avx512.cpp, where the choices are
// measured): 8 rows per pass share each block's activation work, fp16 scales converted 16 blocks
// at a time, the rows two passes ahead prefetched into L2 spread over the blocks.
constexpr int kRows = 8;
constexpr int64_t kScaleChunk = 16;
constexpr int kPrefetchPasses = 2;

// Rows [r, r + R) of a sparse-q4 matrix of capacity c times one token's Q8 activation codes x
// (scales d, one per 32 columns): y[r + i].
//
// Per row and block: a 32-byte load of the block's codes (at most 64 nibbles), vpmovzxbw widens
// byte k to 16-bit lane k, (v | v << 4) & 0x0f0f leaves the low nibble in byte 2k and the high one
// in byte 2k + 1, i.e. the codes in order, one per byte. Blocks start on a byte (the format pads
// an odd count), so no nibble shift is needed. vpexpandb places them under the mask and fills the
// other lanes with 8, the code of the value 0; the codes are then unsigned bytes (u = w + 8) for
// vpdpbusd (u8 x s8) directly, and the offset's contribution, 8 x the sum of each 4 activations,
// depends on the activations only: it is computed once per block for all rows and is the
// accumulator each row's vpdpbusd starts from (the unsigned-offset form of the sparse-q8 kernel
// with the offset put in by the expansion itself, so no per-row add or xor is left).
//
// kMasked: the pass ends less than 32 bytes before the tensor's end, so the codes are loaded with
// a byte mask (a full load could pass the end); elsewhere the full 32-byte load is safe.
template <int R, bool kMasked>
inline void rows_pass(const WeightMatrix& w, int64_t r, int c, int64_t nb, const int8_t* x, const float* d, float* y) {
  const uint8_t* masks[R];
  const uint8_t* scales[R];
  const uint8_t* v[R];
  __m512 acc[R];
  for (int i = 0; i < R; ++i) {
    const SparseQ4Row row = sparse_q4_row(w.row(r + i), w.cols, c);
    masks[i] = row.masks;
    scales[i] = row.scales;
    v[i] = row.codes;
    acc[i] = _mm512_setzero_ps();
  }
  const __m512i eight = _mm512_set1_epi8(8);
  const __m512i low_nibbles = _mm512_set1_epi16(0x0f0f);
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
      // -8 * (sum of each 4 activations): the dot of the offset codes minus this is the dot.
      const __m512i base = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, xq));
      for (int i = 0; i < R; ++i) {
        uint64_t m;
        std::memcpy(&m, masks[i] + 8 * b, 8);
        const unsigned bytes = (static_cast<unsigned>(std::popcount(m)) + 1) / 2;
        const __m256i packed = kMasked ? _mm256_maskz_loadu_epi8(_bzhi_u32(~0u, bytes), v[i])
                                       : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v[i]));
        v[i] += bytes;
        const __m512i wide = _mm512_cvtepu8_epi16(packed);
        // (wide | wide << 4) & 0x0f0f: 0xa8 is (A | B) & C for the ternary-logic operands.
        const __m512i codes = _mm512_ternarylogic_epi32(wide, _mm512_slli_epi16(wide, 4), low_nibbles, 0xa8);
        const __m512i dot = _mm512_dpbusd_epi32(base, _mm512_mask_expand_epi8(eight, m, codes), xq);
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(_mm512_set1_ps(s[i][j]), dx), acc[i]);
      }
    }
  }
  for (int i = 0; i < R; ++i) y[r + i] = _mm512_reduce_add_ps(acc[i]);
}

// One block's codes as 64 bytes in column order (code - 8, or 0 where the mask bit is clear).
inline __m512i block_weights(uint64_t m, const uint8_t* p, unsigned bytes) {
  const __m512i wide = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(_bzhi_u32(~0u, bytes), p));
  const __m512i codes = _mm512_ternarylogic_epi32(wide, _mm512_slli_epi16(wide, 4), _mm512_set1_epi16(0x0f0f), 0xa8);
  return _mm512_maskz_sub_epi8(m, _mm512_maskz_expand_epi8(m, codes), _mm512_set1_epi8(8));
}

}  // namespace

void sparse_q4_to_q8_0_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out) {
  const int c = sparse_q4_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  for (int64_t r = r0; r < r1; ++r) {
    const SparseQ4Row row = sparse_q4_row(w.row(r), w.cols, c);
    uint8_t* blocks = out + (r - r0) * (w.cols / 32) * 34;
    const uint8_t* p = row.codes;
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      const unsigned bytes = (static_cast<unsigned>(std::popcount(m)) + 1) / 2;
      const __m512i wq = block_weights(m, p, bytes);
      p += bytes;
      uint8_t* q = blocks + 2 * b * 34;
      std::memcpy(q, row.scales + 2 * b, 2);
      std::memcpy(q + 34, row.scales + 2 * b, 2);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 2), _mm512_castsi512_si256(wq));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 36), _mm512_extracti64x4_epi64(wq, 1));
    }
  }
}

void sparse_q4_rows_avx512(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                           int64_t y_stride, uint8_t* scratch) {
  if (a.n_tokens != 1) {  // the driver sends only decode here; anything else takes the twin
    sparse_q4_rows_reference(w, r0, r1, a, y, y_stride, scratch);
    return;
  }
  const int c = sparse_q4_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  const int8_t* x = a.codes(0);
  const float* d = a.array(0, ActivationArray::kD32);
  const int64_t nb = w.cols / kSparseBlock;
  const uint8_t* tensor_end = w.row(w.rows - 1) + w.row_bytes;
  const auto near_end = [&](int64_t r_end) { return tensor_end - (w.row(r_end - 1) + w.row_bytes) < 32; };
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) {
    if (near_end(r + kRows)) rows_pass<kRows, true>(w, r, c, nb, x, d, y);
    else rows_pass<kRows, false>(w, r, c, nb, x, d, y);
  }
  for (; r < r1; ++r) {
    if (near_end(r + 1)) rows_pass<1, true>(w, r, c, nb, x, d, y);
    else rows_pass<1, false>(w, r, c, nb, x, d, y);
  }
}

}  // namespace frugal::kernels
