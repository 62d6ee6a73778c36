// AMX int8 prefill kernels (Intel AMX-TILE + AMX-INT8, TDPBUSD): 16 weight rows x 16 tokens per
// tile product for the integer weight types, bit-identical to the avx512vnni kernels of
// matmul_simd.h.
//
// The weights are decoded exactly as the VNNI prefill path decodes them (build_tile of
// matmul_simd.h, with the same Decode* structs and FastTile loaders, so codes, dw and mw are the
// same bytes and floats), then each sub-block's [step][row][4 bytes] codes are regrouped in place
// into rows of kSub bytes, the A operand of TDPBUSD (unsigned bytes, 16 rows; in a fixed
// permuted row order, see RowOrder). The driver quantizes the activations into groups of 16
// tokens (kAmxTokenGroup), whose [column / 4][token][4 bytes] codes are TDPBUSD's B layout as
// they stand: kSub / 4 tile rows of 64 bytes. One TDPBUSD per group and sub-block gives the exact
// int32 sums sum_i c[r][i] * q[t][i] that vpdpbusd gives (Intel SDM vol. 2, TDPBUSD: u8 x s8
// products, 4 per int32, added without saturation, like VPDPBUSD).
//
// The float epilogue is the VNNI kernel's, element for element and in the same order (sub-blocks
// in index order, one chain per output):
//   acc = fma(float(isum), dw[r] * xd[t], acc);  acc = fma(mw[r], xs[t], acc)
// with the product dw * xd rounded to float first and the same operand order, so every output
// has the same bits as the one-token decode path (batch invariance, tests/unit/batch_invariance_test.cpp).
// Here a register holds one weight row for the group's 16 tokens, so the 16x16 block of sums is
// transposed once at the end to store each token's outputs contiguously.
//
// What bounds the gain (measured on the Sapphire Rapids VM of issue 14): per 32-element sub-block
// the epilogue costs 4 vector operations per 16 outputs (convert, multiply, 2 FMAs) against the
// VNNI kernel's 12 (8 vpdpbusd plus the same 4), but TDPBUSD and TILESTORED do not overlap with
// that AVX-512 work (a micro-benchmark of the three alone and together adds their times), so the
// per-32-column scales that bit-identity requires leave AMX about 1.0-1.2x the VNNI kernel; the
// 16-element sub-blocks of Q2_K/Q3_K/Q6_K make it slower (amx_preferred).
#include <immintrin.h>

#include "kernels/matmul_simd_avx512.h"

#include "base/check.h"

namespace frugal::kernels {
namespace {

using Simd = SimdAvx512<true>;
// This file takes the decoders and build_tile from matmul_simd.h, not its activation quantizer.
[[maybe_unused]] constexpr auto* kUnusedQuantizer = quantize_simd;
constexpr int kRows = Simd::kLanes;  // 16 weight rows per tile
static_assert(kAmxTokenGroup == 16, "the B tile is one activation group of 16 tokens (64 bytes a row)");

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

// Tiles 0-3: int32 sums, 16 rows x 16 tokens (four sub-blocks in flight); 4-5: weight codes, 16
// rows x kSub bytes; 6-7: activation codes, kSub / 4 rows x 64 bytes (16 tokens x 4 codes).
void configure_tiles(int k_sub) {
  TileConfig config;
  for (int t = 0; t < 4; ++t) {
    config.colsb[t] = 64;
    config.rows[t] = 16;
  }
  for (int t = 4; t < 6; ++t) {
    config.colsb[t] = static_cast<uint16_t>(k_sub);
    config.rows[t] = 16;
    config.colsb[t + 2] = 64;
    config.rows[t + 2] = static_cast<uint8_t>(k_sub / 4);
  }
  compiler_barrier();  // GCC's _tile_loadconfig declares a read of only the first 8 bytes
  _tile_loadconfig(&config);
}

// One sub-block's codes from build_tile's [step][row][4 bytes] (register W[step] holds word
// `step` of the 16 rows) to rows of kSub bytes, in place, by 32- and 64-bit unpacks (and, for 8
// steps, a 128-bit interleave). The rows come out in the order kRowOrder<kSub> (cheaper than
// sorting them): stored row i is tile row kRowOrder[i], which the epilogue takes into account.
template <int kSub>
struct RowOrder {
  int r[16];
  constexpr RowOrder() : r() {
    for (int i = 0; i < 16; ++i) {
      // 4 steps: vector j holds rows j, 4 + j, 8 + j, 12 + j. 8 steps: vector 2j + h holds rows
      // 8h + j and 8h + 4 + j.
      r[i] = kSub == 16 ? 4 * (i % 4) + i / 4 : 8 * ((i / 2) % 2) + i / 4 + 4 * (i % 2);
    }
  }
};
template <int kSub>
inline constexpr RowOrder<kSub> kRowOrder{};

template <int kSub>
void steps_to_rows(uint8_t* sub_codes) {
  constexpr int kSteps = kSub / 4;
  __m512i w[kSteps];
  for (int j = 0; j < kSteps; ++j) w[j] = _mm512_load_si512(sub_codes + 64 * j);
  // u[4h + j], 128-bit lane k: steps 4h .. 4h + 3 of row 4k + j.
  __m512i u[kSteps];
  for (int h = 0; h < kSteps / 4; ++h) {
    const __m512i* x = w + 4 * h;
    const __m512i t0 = _mm512_unpacklo_epi32(x[0], x[1]), t1 = _mm512_unpackhi_epi32(x[0], x[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(x[2], x[3]), t3 = _mm512_unpackhi_epi32(x[2], x[3]);
    u[4 * h + 0] = _mm512_unpacklo_epi64(t0, t2);
    u[4 * h + 1] = _mm512_unpackhi_epi64(t0, t2);
    u[4 * h + 2] = _mm512_unpacklo_epi64(t1, t3);
    u[4 * h + 3] = _mm512_unpackhi_epi64(t1, t3);
  }
  if constexpr (kSteps == 4) {
    for (int j = 0; j < 4; ++j) _mm512_store_si512(sub_codes + 64 * j, u[j]);
  } else {
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for (int j = 0; j < 4; ++j) {
      _mm512_store_si512(sub_codes + 64 * (2 * j), _mm512_permutex2var_epi64(u[j], lo, u[4 + j]));
      _mm512_store_si512(sub_codes + 64 * (2 * j + 1), _mm512_permutex2var_epi64(u[j], hi, u[4 + j]));
    }
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

// TDPBUSD of one sub-block (weight codes `w`, [row][kSub]; activation codes `x`, one group's
// [column / 4][16 tokens][4]) into sum tile c (weights in tile a, activations in b), and the
// store of that tile as [row][16 tokens] int32. The tile numbers are part of the instructions
// (the intrinsics paste them into the assembly), hence a macro per tile set.
#define FRUGAL_AMX_TILE_SET(n, c, a, b)                              \
  template <int kSub>                                                 \
  inline void tile_dot_##n(const uint8_t* w, const int8_t* x) {       \
    compiler_barrier();                                               \
    _tile_loadd(a, w, kSub);                                          \
    _tile_loadd(b, x, 64);                                            \
    _tile_zero(c);                                                    \
    _tile_dpbusd(c, a, b);                                            \
  }                                                                   \
  inline void tile_store_##n(int32_t* sums) { _tile_stored(c, sums, 64); }
FRUGAL_AMX_TILE_SET(0, 0, 4, 6)
FRUGAL_AMX_TILE_SET(1, 1, 5, 7)
FRUGAL_AMX_TILE_SET(2, 2, 4, 6)
FRUGAL_AMX_TILE_SET(3, 3, 5, 7)
#undef FRUGAL_AMX_TILE_SET

// The VNNI kernel's float steps for one sub-block, rows in registers (acc[r] is tile row r; sum
// row i is tile row kRowOrder[i]), 16 tokens per vector.
template <int kSub>
inline void epilogue(const int32_t* sums, const float* dw, const float* mw, const float* xd_sub, const float* xs_sub,
                     __m512 acc[16]) {
  const __m512 xd = _mm512_loadu_ps(xd_sub), xs = _mm512_loadu_ps(xs_sub);
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) {
    const int r = kRowOrder<kSub>.r[i];
    const __m512 isum = _mm512_cvtepi32_ps(_mm512_load_si512(sums + 16 * i));
    acc[r] = _mm512_fmadd_ps(isum, _mm512_mul_ps(_mm512_set1_ps(dw[r]), xd), acc[r]);
    acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(mw[r]), xs, acc[r]);
  }
}

template <class D>
void amx_rows(const WeightMatrix& w, int64_t r0, int64_t r1, const QuantizedActivations& a, float* y, int64_t y_stride,
              uint8_t* scratch) {
  constexpr int K = D::kSub, L = kAmxTokenGroup;
  constexpr ActivationArray kD = K == 16 ? ActivationArray::kD16 : ActivationArray::kD32;
  FRUGAL_CHECK(a.lanes == L);
  const TileBuffers tb = tile_buffers<Simd>(scratch, w.cols);
  // build_tile leaves tb.temp (16 x 256 bytes) free once the codes are in place: it holds the
  // four sum blocks.
  int32_t* sums[4];
  for (int i = 0; i < 4; ++i) sums[i] = reinterpret_cast<int32_t*>(tb.temp) + 256 * i;
  const int64_t n_subs = w.cols / K;
  const int64_t n_groups = a.n_groups();
  const int64_t x_sub_bytes = K * L;  // activation code bytes of one sub-block in a group
  configure_tiles(K);
  for (int64_t rt = r0; rt < r1; rt += kRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kRows, r1 - rt));
    build_tile<Simd, D>(w, rt, nr, tb);
    for (int64_t s = 0; s < n_subs; ++s) steps_to_rows<K>(tb.codes + s * K * kRows);
    const uint8_t* wc = tb.codes;
    // Inputs wider than 4096 columns go in passes of 2048 (the pass's weight codes, 32 KB, stay
    // near the core while every group's activations stream by); each later pass continues the
    // running sums left in y (exact: a float stored and loaded back), so every output sees the
    // same chain of FMAs. Narrower inputs measured no faster in passes of 512 or 1024.
    const int64_t chunk = w.cols <= 4096 ? w.cols : 2048;
    const __mmask16 mask = static_cast<__mmask16>((1u << nr) - 1);
    for (int64_t c0 = 0; c0 < w.cols; c0 += chunk) {
      const int64_t sub0 = c0 / K, sub_end = std::min(w.cols, c0 + chunk) / K;
      for (int64_t g = 0; g < n_groups; ++g) {
        const int8_t* xc = a.codes(g);
        const float* xd = a.array(g, kD);
        const float* xs = a.array(g, D::kS);
        const int n_valid = static_cast<int>(std::min<int64_t>(L, a.n_tokens - g * L));
        __m512 acc[16];
        if (c0 == 0) {
          for (auto& v : acc) v = _mm512_setzero_ps();
        } else {
          for (int p = 0; p < L; ++p) {
            acc[p] = p < n_valid ? _mm512_maskz_loadu_ps(mask, y + (g * L + p) * y_stride + rt) : _mm512_setzero_ps();
          }
          transpose16(acc);
        }
        // Four sub-blocks in flight: the tile products of chunk c run while the epilogue of
        // chunk c - 1 reads the sums stored one chunk earlier (a tile store is not forwarded to
        // vector loads, and the tile unit's latency is long: the distance hides both).
        auto epi = [&](int64_t sub, const int32_t* sums) {
          epilogue<K>(sums, tb.dw + sub * kRows, tb.mw + sub * kRows, xd + sub * L, xs + sub * L, acc);
        };
        auto dots = [&](int64_t sub) {
          tile_dot_0<K>(wc + sub * K * kRows, xc + sub * x_sub_bytes);
          tile_dot_1<K>(wc + (sub + 1) * K * kRows, xc + (sub + 1) * x_sub_bytes);
          tile_dot_2<K>(wc + (sub + 2) * K * kRows, xc + (sub + 2) * x_sub_bytes);
          tile_dot_3<K>(wc + (sub + 3) * K * kRows, xc + (sub + 3) * x_sub_bytes);
        };
        auto stores = [&]() {
          tile_store_0(sums[0]);
          tile_store_1(sums[1]);
          tile_store_2(sums[2]);
          tile_store_3(sums[3]);
        };
        const int64_t chunked_end = sub0 + (sub_end - sub0) / 4 * 4;
        for (int64_t c = sub0; c < chunked_end; c += 4) {
          dots(c);
          if (c > sub0) {
            for (int i = 0; i < 4; ++i) epi(c - 4 + i, sums[i]);
          }
          stores();
        }
        if (chunked_end > sub0) {
          for (int i = 0; i < 4; ++i) epi(chunked_end - 4 + i, sums[i]);
        }
        for (int64_t sub = chunked_end; sub < sub_end; ++sub) {  // the last (sub_end - sub0) % 4
          tile_dot_0<K>(wc + sub * K * kRows, xc + sub * x_sub_bytes);
          tile_store_0(sums[0]);
          epi(sub, sums[0]);
        }
        transpose16(acc);
        for (int p = 0; p < n_valid; ++p) _mm512_mask_storeu_ps(y + (g * L + p) * y_stride + rt, mask, acc[p]);
      }
    }
  }
  _tile_release();
}

}  // namespace

bool amx_preferred(int kernel_index) {
  // Types with 16-element sub-blocks run one tile product and one epilogue per 16 columns: on
  // the host measured (docs in the report of issue 14) that is slower than the VNNI kernel.
  switch (kernel_index) {
    case kKernelQ4_0: case kKernelQ4_1: case kKernelQ5_0: case kKernelQ5_1: case kKernelQ8_0:
    case kKernelQ4_K: case kKernelQ5_K:
      return true;
    default:
      return false;
  }
}

QuantRowsFn amx_quant_rows(int kernel_index) {
  switch (kernel_index) {
    case kKernelQ4_0: return amx_rows<DecodeQ4_0>;
    case kKernelQ4_1: return amx_rows<DecodeQ4_1>;
    case kKernelQ5_0: return amx_rows<DecodeQ5_0>;
    case kKernelQ5_1: return amx_rows<DecodeQ5_1>;
    case kKernelQ8_0: return amx_rows<DecodeQ8_0Offset>;
    case kKernelQ4_K: return amx_rows<DecodeQ45_K<false>>;
    case kKernelQ5_K: return amx_rows<DecodeQ45_K<true>>;
    // Q2_K, Q3_K and Q6_K fold their 16-element sub-block scales per super-block in the VNNI
    // kernels (matmul_simd.h, kFoldWords), which a per-sub-block tile epilogue cannot reproduce
    // bit for bit; they were never amx_preferred, so they have no AMX kernel.
    default: return nullptr;
  }
}

}  // namespace frugal::kernels
