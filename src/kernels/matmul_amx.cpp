// AMX int8 prefill kernels (Intel AMX-TILE + AMX-INT8, TDPBUSD): rows x many tokens of the
// integer weight types, bit-identical to the avx512vnni kernels of matmul_simd.h.
//
// The weights are decoded exactly as the VNNI prefill path decodes them (build_tile of
// matmul_simd.h, with the same Decode* structs and FastTile loaders, so codes, dw and mw are the
// same bytes and floats), then each sub-block's [step][row][4 bytes] codes are regrouped in place
// into [row][kSub bytes], the A operand of TDPBUSD (unsigned bytes, 16 rows). The activations
// are already in TDPBUSD's B layout: a group of 8 tokens stores [column / 4][token][4 bytes]
// (activation_quant.h), i.e. kSub / 4 tile rows of 32 bytes. One TDPBUSD per group and sub-block
// gives the exact int32 sums sum_i c[r][i] * q[t][i] that vpdpbusd gives (Intel SDM vol. 2,
// TDPBUSD: u8 x s8 products, 4 per int32, added without saturation, like VPDPBUSD).
//
// The float epilogue is the VNNI kernel's, element for element and in the same order (sub-blocks
// in index order, one chain per output):
//   acc = fma(float(isum), dw[r] * xd[t], acc);  acc = fma(mw[r], xs[t], acc)
// with the product dw * xd rounded to float first and the same operand order, so every output
// has the same bits as the one-token decode path (batch invariance, tests/unit/batch_invariance_test.cpp).
// Here a register holds one weight row for 16 tokens (two groups), so the 16x16 block of sums is
// transposed once at the end to store each token's outputs contiguously.
//
// Per sub-block the epilogue costs 4 vector operations per 16 outputs (convert, multiply, 2 FMAs)
// against the VNNI kernel's 12 (8 vpdpbusd plus the same 4): the per-32-element scales bound the
// gain, not the tile unit.
#include <immintrin.h>

#include "kernels/matmul_simd_avx512.h"

namespace frugal::kernels {
namespace {

using Simd = SimdAvx512<true>;
// This file takes the decoders and build_tile from matmul_simd.h, not its activation quantizer.
[[maybe_unused]] constexpr auto* kUnusedQuantizer = quantize_simd;
constexpr int kRows = Simd::kLanes;  // 16 weight rows per tile
static_assert(kTokenGroup == 8, "the B tile is one activation group of 8 tokens (32 bytes a row)");

// GCC's tile load intrinsics (amxtileintrin.h) are asm statements without a memory operand or
// clobber: without this the compiler could move the stores that fill a tile's memory after the
// load that reads it. Costs no instruction.
inline void compiler_barrier() { __asm__ volatile("" ::: "memory"); }

// LDTILECFG's 64-byte operand (Intel SDM vol. 1, 18.2 "tile configuration", palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0-3: int32 sums, 16 rows x 8 tokens (two sub-blocks in flight, two groups each);
// 4-5: weight codes, 16 rows x kSub bytes; 6-7: activation codes, kSub / 4 rows x 32 bytes.
void configure_tiles(int k_sub) {
  TileConfig config;
  for (int t = 0; t < 4; ++t) {
    config.colsb[t] = 32;
    config.rows[t] = 16;
  }
  for (int t = 4; t < 6; ++t) {
    config.colsb[t] = static_cast<uint16_t>(k_sub);
    config.rows[t] = 16;
  }
  for (int t = 6; t < 8; ++t) {
    config.colsb[t] = 32;
    config.rows[t] = static_cast<uint8_t>(k_sub / 4);
  }
  compiler_barrier();  // GCC's _tile_loadconfig declares a read of only the first 8 bytes
  _tile_loadconfig(&config);
}

// One sub-block's codes from build_tile's [step][row][4 bytes] (words W[step][row]) to
// [row][kSub bytes] (words N[row][step]), in place.
template <int kSub>
void steps_to_rows(uint8_t* sub_codes) {
  constexpr int kSteps = kSub / 4, kRowsPerVector = 16 / kSteps;
  alignas(64) int32_t copy[kSteps * 16];
  std::memcpy(copy, sub_codes, sizeof copy);
  const __m512i p = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  // Word p of output vector v: row v * kRowsPerVector + p / kSteps, step p % kSteps.
  const __m512i step = _mm512_and_si512(p, _mm512_set1_epi32(kSteps - 1));
  const __m512i row_in_vector = _mm512_srli_epi32(p, kSteps == 8 ? 3 : 2);
  for (int v = 0; v < kSteps; ++v) {
    const __m512i row = _mm512_add_epi32(row_in_vector, _mm512_set1_epi32(v * kRowsPerVector));
    const __m512i index = _mm512_add_epi32(_mm512_slli_epi32(step, 4), row);
    _mm512_storeu_si512(sub_codes + 64 * v, _mm512_i32gather_epi32(index, copy, 4));
  }
}

// 16 vectors of 16 floats, transposed in registers (unpack, in-lane shuffle, 128-bit shuffles).
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4i + j], 128-bit lane k: column 4k + j of rows 4i .. 4i + 3.
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88), w1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
    r[j] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
    r[4 + j] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
  }
}

// The activations of one pair of groups (16 tokens): codes (the second may be a zero block that
// does not advance) and the per-sub-block scale arrays.
struct TokenPair {
  const int8_t* codes[2];
  int64_t codes_step[2];  // bytes per sub-block (0 for the zero stand-in)
  const float* xd[2];
  const float* xs[2];
  int64_t array_step[2];  // floats per sub-block (0 for the stand-in)
};

// TDPBUSD of one sub-block for both groups into tiles c0, c0 + 1 (weight codes in tile a), stored
// to `sums` as [row][16 tokens] int32. Tile numbers are part of the instructions (the intrinsics
// paste them into the assembly), hence a macro for the two sets of tiles.
#define FRUGAL_AMX_TILE_SUMS(name, c0, c1, a)                                               \
  template <int kSub>                                                                        \
  inline void name(const uint8_t* a_codes, const TokenPair& tp, int64_t sub, int32_t* sums) { \
    compiler_barrier();                                                                      \
    _tile_loadd(a, a_codes, kSub);                                                           \
    _tile_loadd(6, tp.codes[0] + sub * tp.codes_step[0], 32);                                \
    _tile_loadd(7, tp.codes[1] + sub * tp.codes_step[1], 32);                                \
    _tile_zero(c0);                                                                          \
    _tile_zero(c1);                                                                          \
    _tile_dpbusd(c0, a, 6);                                                                  \
    _tile_dpbusd(c1, a, 7);                                                                  \
    _tile_stored(c0, sums, 64);                                                              \
    _tile_stored(c1, sums + 8, 64);                                                          \
  }
FRUGAL_AMX_TILE_SUMS(tile_sums_even, 0, 1, 4)
FRUGAL_AMX_TILE_SUMS(tile_sums_odd, 2, 3, 5)
#undef FRUGAL_AMX_TILE_SUMS

// The VNNI kernel's float steps for one sub-block, rows in registers, 16 tokens per vector.
inline void epilogue(const int32_t* sums, const float* dw, const float* mw, const TokenPair& tp, int64_t sub,
                     __m512 acc[16]) {
  const __m512 xd = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(tp.xd[0] + sub * tp.array_step[0])),
                                       _mm256_loadu_ps(tp.xd[1] + sub * tp.array_step[1]), 1);
  const __m512 xs = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(tp.xs[0] + sub * tp.array_step[0])),
                                       _mm256_loadu_ps(tp.xs[1] + sub * tp.array_step[1]), 1);
#pragma GCC unroll 16
  for (int r = 0; r < 16; ++r) {
    const __m512 isum = _mm512_cvtepi32_ps(_mm512_load_si512(sums + 16 * r));
    acc[r] = _mm512_fmadd_ps(isum, _mm512_mul_ps(_mm512_set1_ps(dw[r]), xd), acc[r]);
    acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(mw[r]), xs, acc[r]);
  }
}

template <class D>
void amx_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y, int64_t y_stride,
              uint8_t* scratch) {
  constexpr int K = D::kSub;
  constexpr ActivationArray kD = K == 16 ? ActivationArray::kD16 : ActivationArray::kD32;
  const TileBuffers tb = tile_buffers<Simd>(scratch, w.cols);
  // build_tile is done with tb.temp once the codes are in place: it holds the two sum blocks and
  // the zero stand-in for a missing second group.
  int32_t* sums[2] = {reinterpret_cast<int32_t*>(tb.temp), reinterpret_cast<int32_t*>(tb.temp) + 256};
  int8_t* zero_codes = reinterpret_cast<int8_t*>(tb.temp + 2048);  // K / 4 rows of 32 bytes
  float* zero_floats = reinterpret_cast<float*>(tb.temp + 2048 + 256);
  const int64_t n_subs = w.cols / K;
  const int64_t n_groups = a.n_groups();
  configure_tiles(K);
  for (int64_t rt = r0; rt < r1; rt += kRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kRows, r1 - rt));
    build_tile<Simd, D>(w, rt, nr, tb);
    for (int64_t s = 0; s < n_subs; ++s) steps_to_rows<K>(tb.codes + s * K * kRows);
    std::memset(zero_codes, 0, 256);
    std::memset(zero_floats, 0, 64);
    for (int64_t g = 0; g < n_groups; g += 2) {
      TokenPair tp;
      for (int i = 0; i < 2; ++i) {
        if (g + i < n_groups) {
          tp.codes[i] = a.codes(g + i);
          tp.codes_step[i] = K * a.lanes;
          tp.xd[i] = a.array(g + i, kD);
          tp.xs[i] = a.array(g + i, D::kS);
          tp.array_step[i] = a.lanes;
        } else {
          tp.codes[i] = zero_codes;
          tp.codes_step[i] = 0;
          tp.xd[i] = tp.xs[i] = zero_floats;
          tp.array_step[i] = 0;
        }
      }
      __m512 acc[16];
      for (auto& v : acc) v = _mm512_setzero_ps();
      // Two sub-blocks in flight: the tile sums of s + 1 are issued before the epilogue of s.
      tile_sums_even<K>(tb.codes, tp, 0, sums[0]);
      int64_t s = 0;
      for (; s + 2 <= n_subs; s += 2) {
        tile_sums_odd<K>(tb.codes + (s + 1) * K * kRows, tp, s + 1, sums[1]);
        epilogue(sums[0], tb.dw + s * kRows, tb.mw + s * kRows, tp, s, acc);
        if (s + 2 < n_subs) tile_sums_even<K>(tb.codes + (s + 2) * K * kRows, tp, s + 2, sums[0]);
        epilogue(sums[1], tb.dw + (s + 1) * kRows, tb.mw + (s + 1) * kRows, tp, s + 1, acc);
      }
      if (s < n_subs) epilogue(sums[0], tb.dw + s * kRows, tb.mw + s * kRows, tp, s, acc);
      transpose16(acc);
      const __mmask16 mask = static_cast<__mmask16>((1u << nr) - 1);
      for (int p = 0; p < 16; ++p) {
        const int64_t t = g * a.lanes + p % 8 + (p / 8) * a.lanes;
        if (t < a.n_tokens && (p < 8 || g + 1 < n_groups)) _mm512_mask_storeu_ps(y + t * y_stride + rt, mask, acc[p]);
      }
    }
  }
  _tile_release();
}

}  // namespace

QuantRowsFn amx_quant_rows(int kernel_index) {
  switch (kernel_index) {
    case kKernelQ4_0: return amx_rows<DecodeQ4_0>;
    case kKernelQ4_1: return amx_rows<DecodeQ4_1>;
    case kKernelQ5_0: return amx_rows<DecodeQ5_0>;
    case kKernelQ5_1: return amx_rows<DecodeQ5_1>;
    case kKernelQ8_0: return amx_rows<DecodeQ8_0Offset>;
    case kKernelQ2_K: return amx_rows<DecodeQ2_K>;
    case kKernelQ3_K: return amx_rows<DecodeQ3_K>;
    case kKernelQ4_K: return amx_rows<DecodeQ45_K<false>>;
    case kKernelQ5_K: return amx_rows<DecodeQ45_K<true>>;
    case kKernelQ6_K: return amx_rows<DecodeQ6_K>;
    default: return nullptr;
  }
}

}  // namespace frugal::kernels
