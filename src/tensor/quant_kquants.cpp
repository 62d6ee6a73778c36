// Scalar reference decode, round-to-nearest encode and float dot product of the 256-element
// K-quant super-block formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K (layouts in quant_blocks.h /
// ggml-common.h). The encoders are simple min/max ones, not llama.cpp's error-searching ones.
#include <cmath>

#include "base/check.h"
#include "tensor/fp16.h"
#include "tensor/quant_blocks.h"

namespace frugal::quant {
namespace {

// Asymmetric sub-block fit used by Q2_K/Q4_K/Q5_K: x ~ scale * q - offset with q in [0, levels].
// The range always includes 0 (offset >= 0), as the formats store the offset as an unsigned code.
void fit_scale_offset(const float* x, int n, int levels, float* scale, float* offset) {
  float lo, hi;
  min_max(x, n, &lo, &hi);
  lo = std::fmin(lo, 0.0f);
  *scale = (hi - lo) / static_cast<float>(levels);
  *offset = -lo;
}

// Index of the value with the largest magnitude.
int index_of_absmax(const float* v, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i) {
    if (std::fabs(v[i]) > std::fabs(v[best])) best = i;
  }
  return best;
}

// ---- Q2_K ----
// Element 128*h + 32*k + l lives in bits 2k..2k+1 of qs[32*h + l] (ggml-common.h block_q2_K,
// dequantize_row_q2_K); it belongs to 16-element sub-block (128*h + 32*k + l) / 16.

void decode_q2_k(const BlockQ2_K& b, float* y) {
  const float d = fp16_to_float(b.d);
  const float dmin = fp16_to_float(b.dmin);
  float scale[16], offset[16];
  for (int i = 0; i < 16; ++i) {
    scale[i] = d * static_cast<float>(b.scales[i] & 0x0f);
    offset[i] = dmin * static_cast<float>(b.scales[i] >> 4);
  }
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 4; ++k) {
      for (int l = 0; l < 32; ++l) {
        const int e = 128 * h + 32 * k + l;
        const int q = (b.qs[32 * h + l] >> (2 * k)) & 3;
        y[e] = scale[e / 16] * static_cast<float>(q) - offset[e / 16];
      }
    }
  }
}

void encode_q2_k(const float* x, BlockQ2_K& b) {
  float scale[16], offset[16];
  float max_scale = 0.0f, max_offset = 0.0f;
  for (int i = 0; i < 16; ++i) {
    fit_scale_offset(x + 16 * i, 16, 3, &scale[i], &offset[i]);
    max_scale = std::fmax(max_scale, scale[i]);
    max_offset = std::fmax(max_offset, offset[i]);
  }
  // Sub-block scales and offsets are 4-bit codes of the two half-precision super-block scales.
  const float d = store_half(&b.d, max_scale / 15.0f);
  const float dmin = store_half(&b.dmin, max_offset / 15.0f);
  const float inv_d = inverse_or_zero(d), inv_dmin = inverse_or_zero(dmin);
  uint8_t codes[kQK_K];
  for (int i = 0; i < 16; ++i) {
    const int ls = clamp_int(round_to_int(scale[i] * inv_d), 0, 15);
    const int lm = clamp_int(round_to_int(offset[i] * inv_dmin), 0, 15);
    b.scales[i] = static_cast<uint8_t>(ls | (lm << 4));
    const float step = d * static_cast<float>(ls);
    const float shift = dmin * static_cast<float>(lm);
    const float inv_step = inverse_or_zero(step);
    for (int j = 0; j < 16; ++j) {
      codes[16 * i + j] =
          static_cast<uint8_t>(clamp_int(round_to_int((x[16 * i + j] + shift) * inv_step), 0, 3));
    }
  }
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* c = codes + 128 * h + l;
      b.qs[32 * h + l] = static_cast<uint8_t>(c[0] | (c[32] << 2) | (c[64] << 4) | (c[96] << 6));
    }
  }
}

// ---- Q3_K ----
// Same element order as Q2_K for the 2 low bits; the third bit of element 128*h + 32*k + l is
// bit 4*h + k of hmask[l], and a clear bit means "subtract 4" (ggml-common.h block_q3_K).

void decode_q3_k(const BlockQ3_K& b, float* y) {
  const float d = fp16_to_float(b.d);
  int8_t sc[16];
  unpack_q3_k_scales(b.scales, sc);
  float scale[16];
  for (int i = 0; i < 16; ++i) scale[i] = d * static_cast<float>(sc[i]);
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 4; ++k) {
      for (int l = 0; l < 32; ++l) {
        const int e = 128 * h + 32 * k + l;
        const int low = (b.qs[32 * h + l] >> (2 * k)) & 3;
        const int high = (b.hmask[l] >> (4 * h + k)) & 1;
        y[e] = scale[e / 16] * static_cast<float>(low - (high ? 0 : 4));
      }
    }
  }
}

void encode_q3_k(const float* x, BlockQ3_K& b) {
  // Symmetric codes in [-4, 3]: each sub-block's largest-magnitude value maps to -4.
  float scale[16];
  for (int i = 0; i < 16; ++i) scale[i] = signed_absmax(x + 16 * i, 16) / -4.0f;
  // The 6-bit signed sub-block scales are codes of d; the largest-magnitude scale maps to -32.
  const float max_scale = scale[index_of_absmax(scale, 16)];
  const float d = store_half(&b.d, max_scale / -32.0f);
  const float inv_d = inverse_or_zero(d);
  int8_t sc[16];
  for (int i = 0; i < 16; ++i) {
    sc[i] = static_cast<int8_t>(clamp_int(round_to_int(scale[i] * inv_d), -32, 31));
  }
  pack_q3_k_scales(sc, b.scales);
  uint8_t codes[kQK_K];  // q + 4, in [0, 7]
  for (int i = 0; i < 16; ++i) {
    const float inv_step = inverse_or_zero(d * static_cast<float>(sc[i]));
    for (int j = 0; j < 16; ++j) {
      codes[16 * i + j] =
          static_cast<uint8_t>(clamp_int(round_to_int(x[16 * i + j] * inv_step), -4, 3) + 4);
    }
  }
  for (int l = 0; l < 32; ++l) b.hmask[l] = 0;
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 4; ++k) {
      for (int l = 0; l < 32; ++l) {
        const int c = codes[128 * h + 32 * k + l];
        if (k == 0) b.qs[32 * h + l] = 0;
        b.qs[32 * h + l] |= static_cast<uint8_t>((c & 3) << (2 * k));
        b.hmask[l] |= static_cast<uint8_t>((c >> 2) << (4 * h + k));
      }
    }
  }
}

// ---- Q4_K / Q5_K shared scale fit ----

// Fits 8 sub-blocks of 32 as x ~ d*sc*q - dmin*m, stores d, dmin and the packed 6-bit sc and m,
// and returns the per-sub-block step d*sc and offset dmin*m the codes must be chosen against.
void fit_k4_scales(const float* x, int levels, uint16_t* d_field, uint16_t* dmin_field,
                   uint8_t* packed, float step[8], float shift[8]) {
  float scale[8], offset[8];
  float max_scale = 0.0f, max_offset = 0.0f;
  for (int g = 0; g < 8; ++g) {
    fit_scale_offset(x + 32 * g, 32, levels, &scale[g], &offset[g]);
    max_scale = std::fmax(max_scale, scale[g]);
    max_offset = std::fmax(max_offset, offset[g]);
  }
  const float d = store_half(d_field, max_scale / 63.0f);
  const float dmin = store_half(dmin_field, max_offset / 63.0f);
  const float inv_d = inverse_or_zero(d), inv_dmin = inverse_or_zero(dmin);
  uint8_t ls[8], lm[8];
  for (int g = 0; g < 8; ++g) {
    ls[g] = static_cast<uint8_t>(clamp_int(round_to_int(scale[g] * inv_d), 0, 63));
    lm[g] = static_cast<uint8_t>(clamp_int(round_to_int(offset[g] * inv_dmin), 0, 63));
    step[g] = d * static_cast<float>(ls[g]);
    shift[g] = dmin * static_cast<float>(lm[g]);
  }
  pack_k4_scales_mins(ls, lm, packed);
}

void unpack_k4_steps(uint16_t d_field, uint16_t dmin_field, const uint8_t* packed,
                     float step[8], float shift[8]) {
  const float d = fp16_to_float(d_field);
  const float dmin = fp16_to_float(dmin_field);
  for (int g = 0; g < 8; ++g) {
    uint8_t sc, m;
    unpack_k4_scale_min(packed, g, &sc, &m);
    step[g] = d * static_cast<float>(sc);
    shift[g] = dmin * static_cast<float>(m);
  }
}

// ---- Q4_K ----
// Element 64*p + l (l < 32) is the low nibble of qs[32*p + l], element 64*p + 32 + l the high
// nibble (ggml-common.h block_q4_K); element e belongs to 32-element sub-block e / 32.

void decode_q4_k(const BlockQ4_K& b, float* y) {
  float step[8], shift[8];
  unpack_k4_steps(b.d, b.dmin, b.scales, step, shift);
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t byte = b.qs[32 * p + l];
      y[64 * p + l] = step[2 * p] * static_cast<float>(byte & 0x0f) - shift[2 * p];
      y[64 * p + 32 + l] = step[2 * p + 1] * static_cast<float>(byte >> 4) - shift[2 * p + 1];
    }
  }
}

void encode_q4_k(const float* x, BlockQ4_K& b) {
  float step[8], shift[8];
  fit_k4_scales(x, 15, &b.d, &b.dmin, b.scales, step, shift);
  uint8_t codes[kQK_K];
  for (int e = 0; e < kQK_K; ++e) {
    const int g = e / 32;
    codes[e] = static_cast<uint8_t>(
        clamp_int(round_to_int((x[e] + shift[g]) * inverse_or_zero(step[g])), 0, 15));
  }
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      b.qs[32 * p + l] = static_cast<uint8_t>(codes[64 * p + l] | (codes[64 * p + 32 + l] << 4));
    }
  }
}

// ---- Q5_K ----
// Low 4 bits as in Q4_K; the fifth bit of element 64*p + l is bit 2*p of qh[l] and that of
// element 64*p + 32 + l is bit 2*p + 1 (ggml-common.h block_q5_K, dequantize_row_q5_K).

void decode_q5_k(const BlockQ5_K& b, float* y) {
  float step[8], shift[8];
  unpack_k4_steps(b.d, b.dmin, b.scales, step, shift);
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t byte = b.qs[32 * p + l];
      const int q0 = (byte & 0x0f) | (((b.qh[l] >> (2 * p)) & 1) << 4);
      const int q1 = (byte >> 4) | (((b.qh[l] >> (2 * p + 1)) & 1) << 4);
      y[64 * p + l] = step[2 * p] * static_cast<float>(q0) - shift[2 * p];
      y[64 * p + 32 + l] = step[2 * p + 1] * static_cast<float>(q1) - shift[2 * p + 1];
    }
  }
}

void encode_q5_k(const float* x, BlockQ5_K& b) {
  float step[8], shift[8];
  fit_k4_scales(x, 31, &b.d, &b.dmin, b.scales, step, shift);
  uint8_t codes[kQK_K];
  for (int e = 0; e < kQK_K; ++e) {
    const int g = e / 32;
    codes[e] = static_cast<uint8_t>(
        clamp_int(round_to_int((x[e] + shift[g]) * inverse_or_zero(step[g])), 0, 31));
  }
  for (int l = 0; l < 32; ++l) b.qh[l] = 0;
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      const int q0 = codes[64 * p + l];
      const int q1 = codes[64 * p + 32 + l];
      b.qs[32 * p + l] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
      b.qh[l] |= static_cast<uint8_t>(((q0 >> 4) << (2 * p)) | ((q1 >> 4) << (2 * p + 1)));
    }
  }
}

// ---- Q6_K ----
// Element 128*h + 32*k + l: low 4 bits in the low (k < 2) or high (k >= 2) nibble of
// ql[64*h + 32*(k & 1) + l], high 2 bits in bits 2k..2k+1 of qh[32*h + l] (ggml-common.h
// block_q6_K, dequantize_row_q6_K); it belongs to 16-element sub-block e / 16.

void decode_q6_k(const BlockQ6_K& b, float* y) {
  const float d = fp16_to_float(b.d);
  float scale[16];
  for (int i = 0; i < 16; ++i) scale[i] = d * static_cast<float>(b.scales[i]);
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 4; ++k) {
      for (int l = 0; l < 32; ++l) {
        const int e = 128 * h + 32 * k + l;
        const int low = (b.ql[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0x0f;
        const int high = (b.qh[32 * h + l] >> (2 * k)) & 3;
        y[e] = scale[e / 16] * static_cast<float>((low | (high << 4)) - 32);
      }
    }
  }
}

void encode_q6_k(const float* x, BlockQ6_K& b) {
  // Symmetric codes in [-32, 31]: each sub-block's largest-magnitude value maps to -32.
  float scale[16];
  for (int i = 0; i < 16; ++i) scale[i] = signed_absmax(x + 16 * i, 16) / -32.0f;
  // 8-bit signed sub-block scales; the largest-magnitude one maps to -128.
  const float max_scale = scale[index_of_absmax(scale, 16)];
  const float d = store_half(&b.d, max_scale / -128.0f);
  const float inv_d = inverse_or_zero(d);
  uint8_t codes[kQK_K];  // q + 32, in [0, 63]
  for (int i = 0; i < 16; ++i) {
    b.scales[i] = static_cast<int8_t>(clamp_int(round_to_int(scale[i] * inv_d), -128, 127));
    const float inv_step = inverse_or_zero(d * static_cast<float>(b.scales[i]));
    for (int j = 0; j < 16; ++j) {
      codes[16 * i + j] =
          static_cast<uint8_t>(clamp_int(round_to_int(x[16 * i + j] * inv_step), -32, 31) + 32);
    }
  }
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* c = codes + 128 * h + l;  // c[32*k] is element 128*h + 32*k + l
      b.ql[64 * h + l] = static_cast<uint8_t>((c[0] & 0x0f) | ((c[64] & 0x0f) << 4));
      b.ql[64 * h + 32 + l] = static_cast<uint8_t>((c[32] & 0x0f) | ((c[96] & 0x0f) << 4));
      b.qh[32 * h + l] = static_cast<uint8_t>((c[0] >> 4) | ((c[32] >> 4) << 2) |
                                              ((c[64] >> 4) << 4) | ((c[96] >> 4) << 6));
    }
  }
}

// ---- Q8_K ----

void decode_q8_k(const BlockQ8_K& b, float* y) {
  for (int e = 0; e < kQK_K; ++e) y[e] = b.d * static_cast<float>(b.qs[e]);
}

void encode_q8_k(const float* x, BlockQ8_K& b) {
  // The largest-magnitude value maps to -127 (quantize_row_q8_K_ref keeps codes in [-127, 127]);
  // d is a full float, so no rounding of the scale is involved.
  const float max = signed_absmax(x, kQK_K);
  const float inv_d = max != 0.0f ? -127.0f / max : 0.0f;
  b.d = max != 0.0f ? 1.0f / inv_d : 0.0f;
  for (int e = 0; e < kQK_K; ++e) {
    b.qs[e] = static_cast<int8_t>(clamp_int(round_to_int(x[e] * inv_d), -127, 127));
  }
  for (int i = 0; i < 16; ++i) {
    int sum = 0;
    for (int j = 0; j < 16; ++j) sum += b.qs[16 * i + j];
    b.bsums[i] = static_cast<int16_t>(sum);
  }
}

}  // namespace

FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q2_k, BlockQ2_K, kQK_K)
FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q3_k, BlockQ3_K, kQK_K)
FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q4_k, BlockQ4_K, kQK_K)
FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q5_k, BlockQ5_K, kQK_K)
FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q6_k, BlockQ6_K, kQK_K)
FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q8_k, BlockQ8_K, kQK_K)

}  // namespace frugal::quant
