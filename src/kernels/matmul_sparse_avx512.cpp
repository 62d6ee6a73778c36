// AVX-512 decode kernel of sparse-q8 (tensor/sparse_q8.h): one load of the block's packed codes
// and one vpexpandb (VBMI2) put the 64 weights of a block in place, vpdpbusd (VNNI) does the 64
// multiply-adds with the Q8 activations (the row loop, shared with sparse-q4 and N:M, and its
// measured choices are in sparse_decode_avx512.h). Scalar twin: sparse_q8_rows_reference.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "base/check.h"
#include "kernels/matmul_kernels.h"
#include "kernels/sparse_decode_avx512.h"
#include "tensor/fp16.h"
#include "tensor/sparse_q8.h"

namespace frugal::kernels {

namespace {

// sparse-q8's blocks for the shared decode loop (sparse_decode_avx512.h): one load of the block's
// packed codes, vpexpandb (VBMI2) to put them in place, one xor to offset them to unsigned
// (w ^ 0x80 = w + 128; a zero weight becomes 128). kMasked: a byte-masked load near the tensor's
// end; elsewhere a full 64-byte load is safe: vpexpandb uses only the first n bytes, the rest is
// the row's padding or the next rows.
template <bool kMasked>
struct Q8Unpack {
  static constexpr char kZero = static_cast<char>(0x80);
  static constexpr int64_t kLoadBytes = 64;
  int capacity;

  sparse_avx512::RowParts row(const WeightMatrix& w, int64_t r) const {
    const SparseQ8Row p = sparse_q8_row(w.row(r), w.cols, capacity);
    return {p.masks, p.scales, reinterpret_cast<const uint8_t*>(p.values)};
  }
  __m512i block(uint64_t m, const uint8_t*& v, int64_t) const {
    const int n = std::popcount(m);
    const __m512i packed = kMasked ? _mm512_maskz_loadu_epi8(_bzhi_u64(~0ull, static_cast<unsigned>(n)), v) : _mm512_loadu_si512(v);
    v += n;
    return _mm512_xor_si512(_mm512_mask_expand_epi8(_mm512_setzero_si512(), m, packed), _mm512_set1_epi8(kZero));
  }
};

}  // namespace

bool sparse_q8_avx512_supported() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vbmi2") &&
                         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
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
      sparse_avx512::store_q8_0_pair(blocks, b, row.scales + 2 * b, wq);
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
  sparse_avx512::decode_rows<Q8Unpack>(c, w, r0, r1, x, d, y);
}

}  // namespace frugal::kernels
