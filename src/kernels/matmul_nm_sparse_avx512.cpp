// AVX-512 decode kernel of the N:M sparse formats (tensor/nm_sparse.h): each block's 32 value slots
// sit at a fixed place, so a row needs no running offset and no popcount; vpexpandb (VBMI2) puts
// the values under the mask, vpdpbusd (VNNI) multiplies them with the Q8 activations.
// The row loop is shared with sparse-q8 and sparse-q4 (sparse_decode_avx512.h). Scalar twin:
// nm_rows_reference (matmul_nm_sparse.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "base/check.h"
#include "kernels/nm_sparse_kernels.h"
#include "kernels/sparse_decode_avx512.h"
#include "tensor/nm_sparse.h"

namespace frugal::kernels {

namespace {

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

// N:M blocks for the shared decode loop (sparse_decode_avx512.h): the slot of block b is at a
// fixed place, so the loads never pass the row (no masked variant) and the row needs no running
// offset.
template <int Bits, bool kMasked>
struct NmUnpack {
  static constexpr char kZero = static_cast<char>(Bits == 8 ? 0x80 : 8);
  static constexpr int64_t kLoadBytes = 0;
  int capacity;  // unused: N:M types have no capacity

  sparse_avx512::RowParts row(const WeightMatrix& w, int64_t r) const {
    const NmRow p = nm_row(w.row(r), w.cols);
    return {p.masks, p.scales, p.values};
  }
  __m512i block(uint64_t m, const uint8_t*& v, int64_t b) const {
    return block_unsigned<Bits>(m, v + b * (kNmSlot * Bits / 8), _mm512_set1_epi8(kZero));
  }
};
template <bool kMasked>
using Nm8Unpack = NmUnpack<8, kMasked>;
template <bool kMasked>
using Nm4Unpack = NmUnpack<4, kMasked>;

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
      sparse_avx512::store_q8_0_pair(blocks, b, row.scales + 2 * b, wq);
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
    sparse_avx512::decode_rows<Nm8Unpack>(0, w, r0, r1, x, d, y);
  } else {
    sparse_avx512::decode_rows<Nm4Unpack>(0, w, r0, r1, x, d, y);
  }
}

}  // namespace frugal::kernels
