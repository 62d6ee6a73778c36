// Scalar reference twins of the matmul kernels (also the kernels of FRUGAL_ISA=scalar): each weight
// block is decoded to true integer values q, a per-sub-block scale and minimum (w = scale*q + min),
// and multiplied with the quantized activations as ggml's generic vec_dot_*_q8_* functions do:
// sum over sub-blocks of scale*d_x*sum(q*x_q) + min*s_x, accumulated in double.
#include <cstring>

#include "base/check.h"
#include "kernels/matmul_kernels.h"
#include "kernels/nm_sparse_kernels.h"
#include "kernels/sparse_q4_kernels.h"
#include "tensor/fp16.h"
#include "tensor/generic_group.h"
#include "tensor/quant_blocks.h"
#include "tensor/nm_sparse.h"
#include "tensor/sparse_q4.h"
#include "tensor/sparse_q8.h"

namespace frugal::kernels {
namespace {

using namespace frugal::quant;

// One decoded weight block: elements in natural order, `sub` elements per scale.
struct DecodedBlock {
  int q[kQK_K];
  float scale[16];
  float min[16];
  int sub;
};

int nibble(const uint8_t* qs, int i) { return i < 16 ? (qs[i] & 0x0f) : (qs[i - 16] >> 4); }

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// A generic group block (layout in tensor/generic_group.h), read bit by bit from the stream:
// q = u and min = offset (asymmetric), or q = u - 2^(bits-1) and min = 0 (symmetric); every
// 32-element sub-block of the group has the group's scale.
void decode_generic_group(const GenericGroupFormat& f, const uint8_t* p, DecodedBlock& out) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  const float scale = fp16_to_float(h);
  float min = 0.0f;
  if (!f.symmetric) {
    std::memcpy(&h, p + 2, 2);
    min = fp16_to_float(h);
  }
  const uint8_t* codes = p + (f.symmetric ? 2 : 4);
  out.sub = 32;
  for (int s = 0; s < f.group / 32; ++s) {
    out.scale[s] = scale;
    out.min[s] = min;
  }
  for (int i = 0; i < f.group; ++i) {
    int u = 0;
    for (int k = 0; k < f.bits; ++k) {
      const int bit = i * f.bits + k;
      u |= ((codes[bit / 8] >> (bit % 8)) & 1) << k;
    }
    out.q[i] = u + f.qmin();
  }
}

void decode_block(DType type, const uint8_t* p, DecodedBlock& out) {
  switch (type) {
    case DType::Q4_0: {
      const auto& b = *reinterpret_cast<const BlockQ4_0*>(p);
      out.sub = 32;
      out.scale[0] = fp16_to_float(b.d);
      out.min[0] = 0.0f;
      for (int i = 0; i < 32; ++i) out.q[i] = nibble(b.qs, i) - 8;
      return;
    }
    case DType::Q4_1: {
      const auto& b = *reinterpret_cast<const BlockQ4_1*>(p);
      out.sub = 32;
      out.scale[0] = fp16_to_float(b.d);
      out.min[0] = fp16_to_float(b.m);
      for (int i = 0; i < 32; ++i) out.q[i] = nibble(b.qs, i);
      return;
    }
    case DType::Q5_0: {
      const auto& b = *reinterpret_cast<const BlockQ5_0*>(p);
      const uint32_t qh = load_u32(b.qh);
      out.sub = 32;
      out.scale[0] = fp16_to_float(b.d);
      out.min[0] = 0.0f;
      for (int i = 0; i < 32; ++i) out.q[i] = (nibble(b.qs, i) | static_cast<int>(((qh >> i) & 1) << 4)) - 16;
      return;
    }
    case DType::Q5_1: {
      const auto& b = *reinterpret_cast<const BlockQ5_1*>(p);
      const uint32_t qh = load_u32(b.qh);
      out.sub = 32;
      out.scale[0] = fp16_to_float(b.d);
      out.min[0] = fp16_to_float(b.m);
      for (int i = 0; i < 32; ++i) out.q[i] = nibble(b.qs, i) | static_cast<int>(((qh >> i) & 1) << 4);
      return;
    }
    case DType::Q8_0: {
      const auto& b = *reinterpret_cast<const BlockQ8_0*>(p);
      out.sub = 32;
      out.scale[0] = fp16_to_float(b.d);
      out.min[0] = 0.0f;
      for (int i = 0; i < 32; ++i) out.q[i] = b.qs[i];
      return;
    }
    case DType::Q2_K: {
      const auto& b = *reinterpret_cast<const BlockQ2_K*>(p);
      const float d = fp16_to_float(b.d), dmin = fp16_to_float(b.dmin);
      out.sub = 16;
      for (int i = 0; i < 16; ++i) {
        out.scale[i] = d * static_cast<float>(b.scales[i] & 0x0f);
        out.min[i] = -dmin * static_cast<float>(b.scales[i] >> 4);
      }
      for (int e = 0; e < kQK_K; ++e) {
        const int h = e / 128, k = (e % 128) / 32, l = e % 32;
        out.q[e] = (b.qs[32 * h + l] >> (2 * k)) & 3;
      }
      return;
    }
    case DType::Q3_K: {
      const auto& b = *reinterpret_cast<const BlockQ3_K*>(p);
      const float d = fp16_to_float(b.d);
      int8_t sc[16];
      unpack_q3_k_scales(b.scales, sc);
      out.sub = 16;
      for (int i = 0; i < 16; ++i) {
        out.scale[i] = d * static_cast<float>(sc[i]);
        out.min[i] = 0.0f;
      }
      for (int e = 0; e < kQK_K; ++e) {
        const int h = e / 128, k = (e % 128) / 32, l = e % 32;
        const int low = (b.qs[32 * h + l] >> (2 * k)) & 3;
        const int high = (b.hmask[l] >> (4 * h + k)) & 1;
        out.q[e] = low - (high ? 0 : 4);
      }
      return;
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      const bool five = type == DType::Q5_K;
      const uint16_t d_bits = five ? reinterpret_cast<const BlockQ5_K*>(p)->d : reinterpret_cast<const BlockQ4_K*>(p)->d;
      const uint16_t dmin_bits =
          five ? reinterpret_cast<const BlockQ5_K*>(p)->dmin : reinterpret_cast<const BlockQ4_K*>(p)->dmin;
      const uint8_t* scales = five ? reinterpret_cast<const BlockQ5_K*>(p)->scales : reinterpret_cast<const BlockQ4_K*>(p)->scales;
      const uint8_t* qs = five ? reinterpret_cast<const BlockQ5_K*>(p)->qs : reinterpret_cast<const BlockQ4_K*>(p)->qs;
      const float d = fp16_to_float(d_bits), dmin = fp16_to_float(dmin_bits);
      out.sub = 32;
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        unpack_k4_scale_min(scales, j, &sc, &m);
        out.scale[j] = d * static_cast<float>(sc);
        out.min[j] = -dmin * static_cast<float>(m);
      }
      for (int e = 0; e < kQK_K; ++e) {
        const int g = e / 64, hi = (e % 64) / 32, l = e % 32;
        int q = hi ? (qs[32 * g + l] >> 4) : (qs[32 * g + l] & 0x0f);
        if (five) q |= ((reinterpret_cast<const BlockQ5_K*>(p)->qh[l] >> (2 * g + hi)) & 1) << 4;
        out.q[e] = q;
      }
      return;
    }
    case DType::Q6_K: {
      const auto& b = *reinterpret_cast<const BlockQ6_K*>(p);
      const float d = fp16_to_float(b.d);
      out.sub = 16;
      for (int i = 0; i < 16; ++i) {
        out.scale[i] = d * static_cast<float>(b.scales[i]);
        out.min[i] = 0.0f;
      }
      for (int e = 0; e < kQK_K; ++e) {
        const int h = e / 128, k = (e % 128) / 32, l = e % 32;
        const int low = (b.ql[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0x0f;
        const int high = (b.qh[32 * h + l] >> (2 * k)) & 3;
        out.q[e] = (low | (high << 4)) - 32;
      }
      return;
    }
    default:
      if (const auto f = generic_group_format(type)) {
        decode_generic_group(*f, p, out);
        return;
      }
      FRUGAL_CHECK(false && "no integer kernel for this type");
  }
}

// The activation arrays a weight type's scale and minimum multiply: the Q4_1/Q5_1 minimum uses
// the fp16 "s" of block_q8_1 as ggml does; everything else the exact d*sum.
ActivationArray d_array(int sub) { return sub == 16 ? ActivationArray::kD16 : ActivationArray::kD32; }
ActivationArray s_array(DType type, int sub) {
  if (type == DType::Q4_1 || type == DType::Q5_1) return ActivationArray::kH32;
  return sub == 16 ? ActivationArray::kS16 : ActivationArray::kS32;
}

template <class Convert>
void float_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t x_stride, int64_t n_tokens,
                float* y, int64_t y_stride, Convert convert) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.row(r);
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * x_stride;
      double sum = 0.0;
      for (int64_t k = 0; k < w.cols; ++k) sum += static_cast<double>(convert(row, k)) * xt[k];
      y[t * y_stride + r] = static_cast<float>(sum);
    }
  }
}

size_t scalar_scratch_bytes(int64_t) { return 0; }

void quantize_scalar(const float* x, int64_t x_stride, int64_t group_begin, int64_t group_end,
                     const QuantizedActivations& out) {
  quantize_activations_reference(x, x_stride, group_begin, group_end, out);
}

}  // namespace

int kernel_type_index(DType type) {
  const WeightCodec* codec = find_weight_codec(static_cast<uint32_t>(type));
  return codec != nullptr ? codec->kernel_slot(type) : kNoKernel;
}

void quant_rows_reference(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                          int64_t y_stride, uint8_t*) {
  const DType type = w.traits->type;
  const int64_t block = w.traits->block_size;
  DecodedBlock dec;
  // Tokens in chunks with one double accumulator each, so every block is decoded once per chunk.
  constexpr int64_t kChunk = 64;
  double acc[kChunk];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.row(r);
    for (int64_t t0 = 0; t0 < a.n_tokens; t0 += kChunk) {
      const int64_t nt = a.n_tokens - t0 < kChunk ? a.n_tokens - t0 : kChunk;
      for (int64_t i = 0; i < nt; ++i) acc[i] = 0.0;
      for (int64_t b = 0; b < w.cols / block; ++b) {
        decode_block(type, row + b * w.traits->block_bytes, dec);
        for (int s = 0; s < block / dec.sub; ++s) {
          const int64_t sub_index = (b * block) / dec.sub + s;
          for (int64_t i = 0; i < nt; ++i) {
            const int64_t t = t0 + i;
            int32_t dot = 0;
            for (int j = 0; j < dec.sub; ++j) {
              const int e = s * dec.sub + j;
              dot += dec.q[e] * a.code(t, b * block + e);
            }
            const float dx = a.value(t, d_array(dec.sub), sub_index);
            const float sx = a.value(t, s_array(type, dec.sub), sub_index);
            acc[i] += static_cast<double>(dec.scale[s]) * dx * dot + static_cast<double>(dec.min[s]) * sx;
          }
        }
      }
      for (int64_t i = 0; i < nt; ++i) y[(t0 + i) * y_stride + r] = static_cast<float>(acc[i]);
    }
  }
}

void float_rows_reference(const WeightMatrix& w, int64_t r0, int64_t r1, const float* x, int64_t x_stride,
                          int64_t n_tokens, float* y, int64_t y_stride) {
  switch (w.traits->type) {
    case DType::F32:
      float_rows(w, r0, r1, x, x_stride, n_tokens, y, y_stride,
                 [](const uint8_t* row, int64_t k) { return reinterpret_cast<const float*>(row)[k]; });
      return;
    case DType::F16:
      float_rows(w, r0, r1, x, x_stride, n_tokens, y, y_stride,
                 [](const uint8_t* row, int64_t k) { return fp16_to_float(reinterpret_cast<const uint16_t*>(row)[k]); });
      return;
    case DType::BF16:
      float_rows(w, r0, r1, x, x_stride, n_tokens, y, y_stride,
                 [](const uint8_t* row, int64_t k) { return bf16_to_float(reinterpret_cast<const uint16_t*>(row)[k]); });
      return;
    default:
      FRUGAL_CHECK(false && "not a float weight type");
  }
}

void sparse_q8_rows_reference(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y,
                              int64_t y_stride, uint8_t*) {
  const int c = sparse_q8_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  int q[kSparseBlock];
  for (int64_t r = r0; r < r1; ++r) {
    const SparseQ8Row row = sparse_q8_row(w.row(r), w.cols, c);
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const int8_t* v = row.values;
      double sum = 0.0;
      for (int64_t b = 0; b < row.blocks; ++b) {
        uint64_t m;
        std::memcpy(&m, row.masks + 8 * b, 8);
        uint16_t h;
        std::memcpy(&h, row.scales + 2 * b, 2);
        for (int j = 0; j < kSparseBlock; ++j) q[j] = (m >> j & 1) ? *v++ : 0;
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

void sparse_q8_to_q8_0(const WeightMatrix& w, int64_t r0, int64_t r1, uint8_t* out) {
  const int c = sparse_q8_capacity(w.traits->type);
  FRUGAL_CHECK(c != 0);
  for (int64_t r = r0; r < r1; ++r) {
    const SparseQ8Row row = sparse_q8_row(w.row(r), w.cols, c);
    BlockQ8_0* blocks = reinterpret_cast<BlockQ8_0*>(out) + (r - r0) * (w.cols / 32);
    const int8_t* v = row.values;
    for (int64_t b = 0; b < row.blocks; ++b) {
      uint64_t m;
      std::memcpy(&m, row.masks + 8 * b, 8);
      uint16_t h;
      std::memcpy(&h, row.scales + 2 * b, 2);
      for (int half = 0; half < 2; ++half) {
        BlockQ8_0& q = blocks[2 * b + half];
        q.d = h;
        for (int j = 0; j < 32; ++j) q.qs[j] = (m >> (32 * half + j) & 1) ? *v++ : 0;
      }
    }
  }
}

const KernelTable& scalar_kernel_table() {
  static const KernelTable table = [] {
    KernelTable t{};
    t.isa = Isa::kScalar;
    t.row_tile = 8;
    t.quantize = quantize_scalar;
    for (int i = kKernelQ4_0; i <= kKernelQ6_K; ++i) t.quant_rows[i] = quant_rows_reference;
    for (int i = kKernelF32; i <= kKernelBF16; ++i) t.float_rows[i] = float_rows_reference;
    t.quant_rows[kKernelSparseQ8] = sparse_q8_rows_reference;
    for (int i = kKernelFq2; i <= kKernelFq8; ++i) t.quant_rows[i] = quant_rows_reference;
    t.quant_rows[kKernelSparseQ4] = sparse_q4_rows_reference;
    t.quant_rows[kKernelNmSparse] = nm_rows_reference;
    t.scratch_bytes = scalar_scratch_bytes;
    return t;
  }();
  return table;
}

}  // namespace frugal::kernels
