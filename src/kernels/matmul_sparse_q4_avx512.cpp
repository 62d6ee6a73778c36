// AVX-512 decode kernel of sparse-q4 (tensor/sparse_q4.h): a block's packed 4-bit codes are
// unpacked to one code per byte (vpmovzxbw + shift + ternary logic), vpexpandb (VBMI2) puts them
// at their mask positions, vpdpbusd (VNNI) does the 64 multiply-adds with the Q8 activations.
// The row loop is shared with sparse-q8 and N:M (sparse_decode_avx512.h). Scalar twin:
// sparse_q4_rows_reference (matmul_sparse_q4.cpp).
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "base/check.h"
#include "kernels/sparse_decode_avx512.h"
#include "kernels/sparse_q4_kernels.h"
#include "tensor/sparse_q4.h"

namespace frugal::kernels {

namespace {

// sparse-q4's blocks for the shared decode loop (sparse_decode_avx512.h). A 32-byte load of the
// block's codes (at most 64 nibbles), vpmovzxbw widens byte k to 16-bit lane k, (v | v << 4) &
// 0x0f0f leaves the low nibble in byte 2k and the high one in byte 2k + 1, i.e. the codes in
// order, one per byte. Blocks start on a byte (the format pads an odd count), so no nibble shift
// is needed. vpexpandb places them under the mask and fills the other lanes with 8, the code of
// the value 0: the codes are then the unsigned bytes (u = w + 8) vpdpbusd takes directly, so no
// per-row add or xor is left. kMasked: a byte-masked load for passes ending less than 32 bytes
// before the tensor's end (a full load could pass it).
template <bool kMasked>
struct Q4Unpack {
  static constexpr char kZero = 8;
  static constexpr int64_t kLoadBytes = 32;
  int capacity;

  sparse_avx512::RowParts row(const WeightMatrix& w, int64_t r) const {
    const SparseQ4Row p = sparse_q4_row(w.row(r), w.cols, capacity);
    return {p.masks, p.scales, p.codes};
  }
  __m512i block(uint64_t m, const uint8_t*& v, int64_t) const {
    const unsigned bytes = (static_cast<unsigned>(std::popcount(m)) + 1) / 2;
    const __m256i packed = kMasked ? _mm256_maskz_loadu_epi8(_bzhi_u32(~0u, bytes), v)
                                   : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v));
    v += bytes;
    const __m512i wide = _mm512_cvtepu8_epi16(packed);
    // (wide | wide << 4) & 0x0f0f: 0xa8 is (A | B) & C for the ternary-logic operands.
    const __m512i codes = _mm512_ternarylogic_epi32(wide, _mm512_slli_epi16(wide, 4), _mm512_set1_epi16(0x0f0f), 0xa8);
    return _mm512_mask_expand_epi8(_mm512_set1_epi8(kZero), m, codes);
  }
};

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
      sparse_avx512::store_q8_0_pair(blocks, b, row.scales + 2 * b, wq);
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
  sparse_avx512::decode_rows<Q4Unpack>(c, w, r0, r1, x, d, y);
}

}  // namespace frugal::kernels
