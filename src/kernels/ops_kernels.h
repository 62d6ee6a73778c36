// Internal interface between the transformer ops (ops.cpp: the public functions of ops.h, which
// dispatch on the active ISA) and their per-ISA implementations (ops_reference.cpp for the scalar
// twins, ops_avx2.cpp for AVX2 + FMA + F16C).
#pragma once

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
};

// The table of one level (AVX-512 levels use the AVX2 ops: at head_dim 64-256 and the FFN widths
// of small models these are bound by memory and exp throughput, not vector width).
const OpsTable& ops_table(Isa isa);

const OpsTable& scalar_ops_table();  // ops_reference.cpp
const OpsTable& avx2_ops_table();    // ops_avx2.cpp

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

}  // namespace frugal::kernels
