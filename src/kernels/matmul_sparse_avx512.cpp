// AVX-512 decode kernel of sparse-q8 (tensor/sparse_q8.h): one load of the block's packed codes
// and one vpexpandb (VBMI2) put the 64 weights of a block in place, vpdpbusd (VNNI) does the 64
// multiply-adds with the Q8 activations. Scalar twin: sparse_q8_rows_reference.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "base/check.h"
#include "kernels/matmul_kernels.h"
#include "tensor/fp16.h"
#include "tensor/sparse_q8.h"

namespace frugal::kernels {

namespace {

// Rows per pass: each block's activations, activation scales and offset correction are loaded or
// computed once for them, and their independent expansions overlap (8 and 4 measured within noise
// of each other; 8 shares more of the per-block work).
constexpr int kRows = 8;
// Blocks whose fp16 scales are converted together (one vcvtph2ps per row).
constexpr int64_t kScaleChunk = 16;
// How many passes ahead the software prefetch runs (1, 2 and 4 measured within noise of each
// other on 4096x4096; 0, i.e. none, was 1.3x slower). The prefetch goes to L2 (T1): in
// alternating runs, 50% sparse decoded 1.63-1.67x q8_0 with T1 against 1.24-1.38x with T0.
constexpr int kPrefetchPasses = 2;

// Rows [r, r + R) (R = 1 or kRows) of a sparse-q8 matrix of capacity c times one token's Q8
// activation codes x (scales d, one per 32 columns): y[r + i].
//
// The work per row and block is what decode can afford next to the bytes it streams (memory-bound
// only if the kernel is cheaper than the load): one load of the codes, vpexpandb (VBMI2) to put
// them in place, one xor, one vpdpbusd (VNNI), then the float scaling. vpdpbusd multiplies u8 by
// s8, so the weights are offset to unsigned (w ^ 0x80 = w + 128; a zero weight becomes 128) and the
// activations stay signed; the offset adds 128 * sum(x) per 4-lane group, a term that depends on
// the activations only and so is computed once per block for all rows and put in the accumulator
// the dot starts from. This is the "unsigned-offset" form used by VNNI int8 GEMMs (Intel's
// oneDNN s8s8 compensation), with the compensation on the shared operand.
//
// kMasked: the pass ends less than 64 bytes before the tensor's end, so the codes are loaded with
// a mask (a full 64-byte load could pass the end); elsewhere a full load is safe: vpexpandb uses
// only the first n bytes, the rest is the row's padding or the next rows.
template <int R, bool kMasked>
inline void rows_pass(const WeightMatrix& w, int64_t r, int c, int64_t nb, const int8_t* x, const float* d,
                      float* y) {
  const uint8_t* masks[R];
  const uint8_t* scales[R];
  const int8_t* v[R];
  __m512 acc[R];
  for (int i = 0; i < R; ++i) {
    const SparseQ8Row row = sparse_q8_row(w.row(r + i), w.cols, c);
    masks[i] = row.masks;
    scales[i] = row.scales;
    v[i] = row.values;
    acc[i] = _mm512_setzero_ps();
  }
  const __m512i offset = _mm512_set1_epi8(static_cast<char>(0x80));
  // Software prefetch of the next pass's rows, spread evenly over this pass's blocks. The rows of
  // a pass are adjacent and short (8 x 1.9 KB at 4096 columns, 70% sparse), and each is read as
  // three streams (masks, scales, codes) advancing at different rates: two dozen interleaved
  // streams within a few pages, which the hardware prefetchers follow poorly (without this, with
  // 4 rows per pass, decode streamed 4096x4096 at 6.4 GB/s against Q8_0's 10.7 in the same run).
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
      // -128 * (sum of each 4 activations): the dot of the offset weights minus this is the dot.
      const __m512i base = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, xq));
      for (int i = 0; i < R; ++i) {
        uint64_t m;
        std::memcpy(&m, masks[i] + 8 * b, 8);
        const int n = std::popcount(m);
        const __m512i packed = kMasked ? _mm512_maskz_loadu_epi8(_bzhi_u64(~0ull, static_cast<unsigned>(n)), v[i])
                                       : _mm512_loadu_si512(v[i]);
        v[i] += n;
        const __m512i wu = _mm512_xor_si512(_mm512_mask_expand_epi8(_mm512_setzero_si512(), m, packed), offset);
        const __m512i dot = _mm512_dpbusd_epi32(base, wu, xq);
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(_mm512_set1_ps(s[i][j]), dx), acc[i]);
      }
    }
  }
  for (int i = 0; i < R; ++i) y[r + i] = _mm512_reduce_add_ps(acc[i]);
}

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
  const int64_t nb = w.cols / kSparseBlock;
  const uint8_t* tensor_end = w.row(w.rows - 1) + w.row_bytes;
  const auto near_end = [&](int64_t r_end) { return tensor_end - (w.row(r_end - 1) + w.row_bytes) < 64; };
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
