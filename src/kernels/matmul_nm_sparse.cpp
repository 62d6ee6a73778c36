// Scalar twins of the N:M sparse kernels (tensor/nm_sparse.h): the decode product with Q8
// activations and the expansion to Q8_0 tiles for prefill. The SIMD kernels are tested against them.
#include <cstring>

#include "base/check.h"
#include "kernels/nm_sparse_kernels.h"
#include "tensor/fp16.h"
#include "tensor/nm_sparse.h"
#include "tensor/quant_blocks.h"

namespace frugal::kernels {

namespace {

// Block b's 64 weight codes (0 where the mask bit is clear).
void unpack_block(int bits, uint64_t m, const uint8_t* slot, int q[kSparseBlock]) {
  int k = 0;
  for (int j = 0; j < kSparseBlock; ++j) {
    if (m >> j & 1) {
      q[j] = bits == 8 ? static_cast<int8_t>(slot[k]) : ((k & 1 ? slot[k / 2] >> 4 : slot[k / 2]) & 0x0f) - 8;
      ++k;
    } else {
      q[j] = 0;
    }
  }
}

}  // namespace

void nm_rows_reference(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                       int64_t y_stride, uint8_t*) {
  const NmPattern p = nm_pattern(w.traits->type);
  FRUGAL_CHECK(p.bits != 0);
  const int64_t slot = kNmSlot * p.bits / 8;
  int q[kSparseBlock];
  for (int64_t r = r0; r < r1; ++r) {
    const NmRow row = nm_row(w.row(r), w.cols);
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      double sum = 0.0;
      for (int64_t b = 0; b < row.blocks; ++b) {
        uint64_t m;
        std::memcpy(&m, row.masks + 8 * b, 8);
        uint16_t h;
        std::memcpy(&h, row.scales + 2 * b, 2);
        unpack_block(p.bits, m, row.values + b * slot, q);
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

void nm_to_q8_0(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out) {
  const NmPattern p = nm_pattern(w.traits->type);
  FRUGAL_CHECK(p.bits != 0);
  const int64_t slot = kNmSlot * p.bits / 8;
  int q[kSparseBlock];
  for (int64_t r = r0; r < r1; ++r) {
    const NmRow row = nm_row(w.row(r), w.cols);
    quant::BlockQ8_0* blocks = reinterpret_cast<quant::BlockQ8_0*>(out) + (r - r0) * (w.cols / 32);
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      uint16_t h;
      std::memcpy(&h, row.scales + 2 * b, 2);
      unpack_block(p.bits, m, row.values + b * slot, q);
      for (int half = 0; half < 2; ++half) {
        quant::BlockQ8_0& blk = blocks[2 * b + half];
        blk.d = h;
        for (int j = 0; j < 32; ++j) blk.qs[j] = static_cast<int8_t>(q[32 * half + j]);
      }
    }
  }
}

}  // namespace frugal::kernels
