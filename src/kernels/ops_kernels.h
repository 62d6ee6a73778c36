// Internal interface between the transformer ops (ops.cpp: the public functions of ops.h, which
// dispatch on the active ISA) and their per-ISA implementations (ops_reference.cpp for the scalar
// twins, ops_avx2.cpp for AVX2 + FMA + F16C).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu_features.h"
#include "kernels/ops.h"

namespace frugal::kernels {

using RmsNormFn = void (*)(const float* x, const float* weight, float eps, int64_t n, float* y);
using GluFn = void (*)(float* gate, const float* up, int64_t n);
using SoftmaxFn = void (*)(float* x, int64_t n);
using AttendF32Fn = void (*)(const float* q, const float* k, const float* v, int64_t kv_stride, int64_t first,
                             int64_t last, int64_t head_dim, float scale, float* out);
using AttendF16Fn = void (*)(const float* q, const uint16_t* k, const uint16_t* v, int64_t kv_stride,
                             int64_t first, int64_t last, int64_t head_dim, float scale, float* out);
using AttendKvFn = void (*)(const float* q, const KvRows& k, const KvRows& v, int64_t first, int64_t last,
                            int64_t head_dim, float scale, float* out);
using AttendPagedFn = void (*)(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t first, int64_t last,
                               int64_t head_dim, float scale, float* out);
using AttendHeadsKvFn = void (*)(const float* q, int64_t n_heads, const KvRows& k, const KvRows& v, int64_t first,
                                 int64_t last, int64_t head_dim, float scale, float* out);
using AttendHeadsPagedFn = void (*)(const float* q, int64_t n_heads, const PagedKvRows& k, const PagedKvRows& v,
                                    int64_t first, int64_t last, int64_t head_dim, float scale, float* out);

// One level's implementations of the ops in ops.h (same contracts; RoPE has no SIMD form: its
// cost is rope_dim/2 sin/cos per token, and it stays portable C++ in ops.cpp).
struct OpsTable {
  Isa isa;
  RmsNormFn rms_norm;
  GluFn swiglu;
  GluFn geglu;
  SoftmaxFn softmax;
  AttendF32Fn attend_f32;  // head_dim a multiple of 8 (checked when the model config is read)
  AttendF16Fn attend_f16;
  AttendKvFn attend_kv;  // any KvType for keys and values (head_dim a multiple of 32 for block types)
  AttendPagedFn attend_paged;  // attend_kv over a paged cache's block table
  // attend_kv / attend_paged for n_heads query heads sharing the KV head (q and out: heads
  // head_dim apart), each head's output bit-identical to attend_kv / attend_paged on it alone.
  AttendHeadsKvFn attend_heads_kv;
  AttendHeadsPagedFn attend_heads_paged;
};

// The table of one level (AVX-512 levels use the AVX2 ops: at head_dim 64-256 and the FFN widths
// of small models these are bound by memory and exp throughput, not vector width).
const OpsTable& ops_table(Isa isa);

const OpsTable& scalar_ops_table();  // ops_reference.cpp
const OpsTable& avx2_ops_table();    // ops_avx2.cpp

// The query of attention over q8_0/q4_0 keys, quantized once per head to 8 bits in blocks of 32
// (absmax scale d = max|q|/127 per block, kept in float) so Q.K runs on integer dot products of a
// block's 32 products (as llama.cpp's q8_0 x q8_0 dot); both the AVX2 kernels and their scalar
// twins use this one definition, so they see the same integers. n is a multiple of 32.
inline void quantize_query_q8(const float* q, int64_t n, int8_t* qi, float* d) {
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(q[b * 32 + i]));
    d[b] = amax / 127.0f;
    const float id = amax > 0 ? 127.0f / amax : 0.0f;
    for (int64_t i = 0; i < 32; ++i) qi[b * 32 + i] = static_cast<int8_t>(std::nearbyint(q[b * 32 + i] * id));  // inlined as one rounding instruction (lround is a libm call per element)
  }
}

// Scalar twins (ops_reference.cpp), also the ops of Isa::kScalar: textbook definitions with
// double accumulators, no SIMD.
void rms_norm_reference(const float* x, const float* weight, float eps, int64_t n, float* y);
void swiglu_reference(float* gate, const float* up, int64_t n);
void geglu_reference(float* gate, const float* up, int64_t n);
void softmax_reference(float* x, int64_t n);
void attend_reference(const float* q, const float* k, const float* v, int64_t kv_stride, int64_t first, int64_t last,
                      int64_t head_dim, float scale, float* out);
void attend_reference(const float* q, const uint16_t* k, const uint16_t* v, int64_t kv_stride, int64_t first,
                      int64_t last, int64_t head_dim, float scale, float* out);
void attend_reference(const float* q, const KvRows& k, const KvRows& v, int64_t first, int64_t last, int64_t head_dim,
                      float scale, float* out);
void attend_reference(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t first, int64_t last,
                      int64_t head_dim, float scale, float* out);
// The grouped forms: attend_reference on each head in turn.
void attend_heads_reference(const float* q, int64_t n_heads, const KvRows& k, const KvRows& v, int64_t first,
                            int64_t last, int64_t head_dim, float scale, float* out);
void attend_heads_reference(const float* q, int64_t n_heads, const PagedKvRows& k, const PagedKvRows& v, int64_t first,
                            int64_t last, int64_t head_dim, float scale, float* out);

}  // namespace frugal::kernels
