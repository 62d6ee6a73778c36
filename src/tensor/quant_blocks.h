// Block layouts of the GGML quantized weight formats, their bit-packing helpers, and the scalar
// reference row functions (dequantize / quantize / dot) the traits table in dtype.cpp points to.
// Every struct mirrors the matching block_* struct in ggml-common.h byte for byte, so blocks can be
// read straight out of a memory-mapped GGUF file.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "base/check.h"
#include "tensor/fp16.h"

namespace frugal::quant {

// Elements per block (ggml-common.h QK4_0 … QK8_1, QK_K) and the size of packed K-quant scales.
inline constexpr int kQK4_0 = 32;
inline constexpr int kQK4_1 = 32;
inline constexpr int kQK5_0 = 32;
inline constexpr int kQK5_1 = 32;
inline constexpr int kQK8_0 = 32;
inline constexpr int kQK8_1 = 32;
inline constexpr int kQK_K = 256;       // super-block of the K-quants
inline constexpr int kKScaleSize = 12;  // K_SCALE_SIZE: 8 six-bit scales + 8 six-bit mins

// Half-precision fields are raw IEEE binary16 bits (ggml_half); decode with fp16_to_float.

// x = d * (q - 8), q a 4-bit code. Element j is the low nibble of qs[j], element j+16 the high one.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK4_0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "block_q4_0 is 18 bytes in ggml-common.h");

// x = d * q + m, q a 4-bit code, same nibble order as Q4_0.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK4_1 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "block_q4_1 is 20 bytes in ggml-common.h");

// x = d * (q - 16), q a 5-bit code: low 4 bits as in Q4_0, bit 4 of element j is bit j of the
// little-endian 32-bit word qh (so elements 16..31 use bits 16..31).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK5_0 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "block_q5_0 is 22 bytes in ggml-common.h");

// x = d * q + m, q a 5-bit code packed as in Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK5_1 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24, "block_q5_1 is 24 bytes in ggml-common.h");

// x = d * q, q a signed byte.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "block_q8_0 is 34 bytes in ggml-common.h");

// x = d * q; s = d * sum(q) is kept for the dot products of the Q4_1/Q5_1 kernels.
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[kQK8_1];
};
static_assert(sizeof(BlockQ8_1) == 36, "block_q8_1 is 36 bytes in ggml-common.h");

// 16 sub-blocks of 16: x = d * (scales[i] & 15) * q - dmin * (scales[i] >> 4), q a 2-bit code.
// Element 128*h + 32*k + l (h < 2, k < 4, l < 32) is bits 2k..2k+1 of qs[32*h + l] and uses
// sub-block scale 8*h + 2*k + l/16.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84, "block_q2_K is 84 bytes in ggml-common.h");

// 16 sub-blocks of 16: x = d * (s - 32) * q, s a 6-bit scale, q in [-4, 3]. The element order and
// the 2 low bits are as in Q2_K; the high bit of element 128*h + 32*k + l is bit 4*h + k of
// hmask[l] and, when it is clear, 4 is subtracted. Scale packing: see unpack_q3_k_scales.
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110, "block_q3_K is 110 bytes in ggml-common.h");

// 8 sub-blocks of 32: x = d * sc * q - dmin * m, sc and m 6-bit (see unpack_k4_scale_min), q 4-bit.
// Element 64*g + l (l < 32) is the low nibble of qs[32*g + l], element 64*g + 32 + l the high one.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "block_q4_K is 144 bytes in ggml-common.h");

// As Q4_K plus a fifth bit: element 64*g + l takes bit 2*g of qh[l], element 64*g + 32 + l takes
// bit 2*g + 1.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176, "block_q5_K is 176 bytes in ggml-common.h");

// 16 sub-blocks of 16: x = d * scales[i] * (q - 32), q a 6-bit code. Element 128*h + 32*k + l:
// low 4 bits are the low (k < 2) or high (k >= 2) nibble of ql[64*h + 32*(k & 1) + l], high 2 bits
// are bits 2k..2k+1 of qh[32*h + l]; sub-block scale 8*h + 2*k + l/16.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210, "block_q6_K is 210 bytes in ggml-common.h");

// Activation format of the K-quant dot products: x = d * q, bsums[i] = sum of q over the 16-element
// group i.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
static_assert(sizeof(BlockQ8_K) == 292, "block_q8_K is 292 bytes in ggml-common.h");

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block. Layout of the 12 bytes
// (ggml-common.h block_q4_K, get_scale_min_k4 in ggml-quants.c): bytes 0..3 hold scales 0..3 in
// their low 6 bits, bytes 4..7 mins 0..3; byte 8+i holds the low 4 bits of scale 4+i (low nibble)
// and of min 4+i (high nibble), whose top 2 bits sit in bits 6..7 of bytes i and 4+i.
inline void unpack_k4_scale_min(const uint8_t* scales, int j, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// Inverse of unpack_k4_scale_min for 8 scales and 8 mins, each < 64.
inline void pack_k4_scales_mins(const uint8_t scale[8], const uint8_t min[8], uint8_t* scales) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>((scale[j] & 63) | ((scale[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>((min[j] & 63) | ((min[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((scale[j + 4] & 0x0f) | ((min[j + 4] & 0x0f) << 4));
  }
}

// The 16 signed scales (s - 32, in [-32, 31]) of a Q3_K block. Layout of the 12 bytes
// (dequantize_row_q3_K in ggml-quants.c): the low 4 bits of scale i are the low nibble of byte i
// for i < 8 and the high nibble of byte i-8 for i >= 8; its high 2 bits are bits 2*(i/4)..+1 of
// byte 8 + i%4.
inline void unpack_q3_k_scales(const uint8_t* packed, int8_t out[16]) {
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? (packed[i] & 0x0f) : (packed[i - 8] >> 4);
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    out[i] = static_cast<int8_t>((low | (high << 4)) - 32);
  }
}

// Inverse of unpack_q3_k_scales; each value in [-32, 31].
inline void pack_q3_k_scales(const int8_t in[16], uint8_t* packed) {
  for (int i = 0; i < 12; ++i) packed[i] = 0;
  for (int i = 0; i < 16; ++i) {
    const int u = in[i] + 32;
    if (i < 8) {
      packed[i] |= static_cast<uint8_t>(u & 0x0f);
    } else {
      packed[i - 8] |= static_cast<uint8_t>((u & 0x0f) << 4);
    }
    packed[8 + i % 4] |= static_cast<uint8_t>(((u >> 4) & 3) << (2 * (i / 4)));
  }
}

// Round to the nearest integer (ties to even, the default FP rounding mode), as the encoders need.
inline int round_to_int(float v) { return static_cast<int>(std::lrintf(v)); }

inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// The element with the largest magnitude, keeping its sign: the symmetric formats map it to their
// most negative code (-8 for Q4_0, -16 for Q5_0, ...) so the whole asymmetric code range is used,
// as ggml's reference quantizers do.
inline float signed_absmax(const float* x, int n) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  return max;
}

// Smallest and largest of n > 0 values.
inline void min_max(const float* x, int n, float* min, float* max) {
  *min = x[0];
  *max = x[0];
  for (int i = 1; i < n; ++i) {
    *min = std::fmin(*min, x[i]);
    *max = std::fmax(*max, x[i]);
  }
}

// Stores a half-precision scale and returns the value the decoder will see, so codes are chosen
// against the rounded scale.
inline float store_half(uint16_t* field, float value) {
  *field = float_to_fp16(value);
  return fp16_to_float(*field);
}

inline float inverse_or_zero(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

// Dot product of two fixed-length float arrays with 8 independent partial sums, written so the
// compiler turns it into one vector accumulator (a plain serial sum cannot be reordered).
template <int N>
inline float dot_fixed(const float* a, const float* b) {
  static_assert(N % 8 == 0, "length must be a multiple of 8");
  float partial[8] = {};
  for (int i = 0; i < N; i += 8) {
    for (int k = 0; k < 8; ++k) partial[k] += a[i + k] * b[i + k];
  }
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

// Row functions built from per-block decode/encode functions: every block is decoded into a small
// stack buffer, so none of them allocates. n must be a multiple of N (checked by the callers).
template <class Block, int N, void (*Decode)(const Block&, float*)>
inline void dequantize_blocks(const void* src, float* dst, int64_t n) {
  const Block* blocks = static_cast<const Block*>(src);
  for (int64_t b = 0; b < n / N; ++b) Decode(blocks[b], dst + b * N);
}

template <class Block, int N, void (*Encode)(const float*, Block&)>
inline void quantize_blocks(const float* src, void* dst, int64_t n) {
  Block* blocks = static_cast<Block*>(dst);
  for (int64_t b = 0; b < n / N; ++b) Encode(src + b * N, blocks[b]);
}

template <class Block, int N, void (*Decode)(const Block&, float*)>
inline float dot_blocks(const void* row, const float* x, int64_t n) {
  const Block* blocks = static_cast<const Block*>(row);
  float decoded[N];
  float sum = 0.0f;
  for (int64_t b = 0; b < n / N; ++b) {
    Decode(blocks[b], decoded);
    sum += dot_fixed<N>(decoded, x + b * N);
  }
  return sum;
}

// Defines the three row functions of a block format from its decode_<suffix> / encode_<suffix>.
#define FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(suffix, Block, N)                     \
  void dequantize_row_##suffix(const void* src, float* dst, int64_t n) {        \
    FRUGAL_CHECK(n % (N) == 0);                                                 \
    dequantize_blocks<Block, N, decode_##suffix>(src, dst, n);                  \
  }                                                                             \
  void quantize_row_##suffix(const float* src, void* dst, int64_t n) {          \
    FRUGAL_CHECK(n % (N) == 0);                                                 \
    quantize_blocks<Block, N, encode_##suffix>(src, dst, n);                    \
  }                                                                             \
  float dot_f32_##suffix(const void* row, const float* x, int64_t n) {          \
    FRUGAL_CHECK(n % (N) == 0);                                                 \
    return dot_blocks<Block, N, decode_##suffix>(row, x, n);                    \
  }

// Scalar reference row functions; n is a multiple of the block size (checked).
#define FRUGAL_DECLARE_ROW_FUNCTIONS(suffix)                               \
  void dequantize_row_##suffix(const void* src, float* dst, int64_t n);    \
  void quantize_row_##suffix(const float* src, void* dst, int64_t n);      \
  float dot_f32_##suffix(const void* row, const float* x, int64_t n);

FRUGAL_DECLARE_ROW_FUNCTIONS(f32)
FRUGAL_DECLARE_ROW_FUNCTIONS(f16)
FRUGAL_DECLARE_ROW_FUNCTIONS(bf16)
FRUGAL_DECLARE_ROW_FUNCTIONS(q4_0)
FRUGAL_DECLARE_ROW_FUNCTIONS(q4_1)
FRUGAL_DECLARE_ROW_FUNCTIONS(q5_0)
FRUGAL_DECLARE_ROW_FUNCTIONS(q5_1)
FRUGAL_DECLARE_ROW_FUNCTIONS(q8_0)
FRUGAL_DECLARE_ROW_FUNCTIONS(q8_1)
FRUGAL_DECLARE_ROW_FUNCTIONS(q2_k)
FRUGAL_DECLARE_ROW_FUNCTIONS(q3_k)
FRUGAL_DECLARE_ROW_FUNCTIONS(q4_k)
FRUGAL_DECLARE_ROW_FUNCTIONS(q5_k)
FRUGAL_DECLARE_ROW_FUNCTIONS(q6_k)
FRUGAL_DECLARE_ROW_FUNCTIONS(q8_k)

#undef FRUGAL_DECLARE_ROW_FUNCTIONS

}  // namespace frugal::quant
