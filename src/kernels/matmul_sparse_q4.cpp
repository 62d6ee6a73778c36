// Scalar twins of the sparse-q4 kernels (tensor/sparse_q4.h): the decode product with Q8
// activations and the expansion to Q8_0 tiles for prefill. The SIMD kernels are tested against them.
#include <bit>
#include <cstring>

#include "base/check.h"
#include "kernels/sparse_q4_kernels.h"
#include "tensor/fp16.h"
#include "tensor/quant_blocks.h"
#include "tensor/sparse_q4.h"

namespace frugal::kernels {

namespace {

// Block b's 64 weight codes (u - 8, or 0 where the mask bit is clear); returns the block's bytes.
int unpack_block(uint64_t m, const uint8_t* p, int q[kSparseBlock]) {
  int k = 0;
  for (int j = 0; j < kSparseBlock; ++j) {
    if (m >> j & 1) {
      q[j] = ((k & 1 ? p[k / 2] >> 4 : p[k / 2]) & 0x0f) - 8;
      ++k;
    } else {
      q[j] = 0;
    }
  }
  return (k + 1) / 2;
}

}  // namespace

void sparse_q4_rows_reference(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                              int64_t y_stride, uint8_t*) {
  const int c = sparse_q4_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  int q[kSparseBlock];
  for (int64_t r = r0; r < r1; ++r) {
    const SparseQ4Row row = sparse_q4_row(w.row(r), w.cols, c);
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const uint8_t* p = row.codes;
      double sum = 0.0;
      for (int64_t b = 0; b < row.blocks; ++b) {
        uint64_t m;
        std::memcpy(&m, row.masks + 8 * b, 8);
        uint16_t h;
        std::memcpy(&h, row.scales + 2 * b, 2);
        p += unpack_block(m, p, q);
        for (int half = 0; half < 2; ++half) {
          int64_t isum = 0;
          for (int j = 0; j < 32; ++j) isum += q[32 * half + j] * a.code(t, b * kSparseBlock + 32 * half + j);
          sum += static_cast<double>(fp16_to_float(h)) * a.value(t, ActivationArray::kD32, 2 * b + half) * static_cast<double>(isum);
        }
      }
      y[t * y_stride + r] = static_cast<float>(sum);
    }
  }
}

void sparse_q4_to_q8_0(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out) {
  const int c = sparse_q4_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  int q[kSparseBlock];
  for (int64_t r = r0; r < r1; ++r) {
    const SparseQ4Row row = sparse_q4_row(w.row(r), w.cols, c);
    quant::BlockQ8_0* blocks = reinterpret_cast<quant::BlockQ8_0*>(out) + (r - r0) * (w.cols / 32);
    const uint8_t* p = row.codes;
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      uint16_t h;
      std::memcpy(&h, row.scales + 2 * b, 2);
      p += unpack_block(m, p, q);
      for (int half = 0; half < 2; ++half) {
        quant::BlockQ8_0& blk = blocks[2 * b + half];
        blk.d = h;
        for (int j = 0; j < 32; ++j) blk.qs[j] = static_cast<int8_t>(q[32 * half + j]);
      }
    }
  }
}

}  // namespace frugal::kernels
