// The traits of the GGML weight formats (one entry per supported GGML type; the codec table in
// weight_codec.cpp adds frugal's own families and derives type lookup from both), GGML type names,
// and the row functions of the unquantized element types F32, F16 and BF16.
#include "tensor/dtype.h"

#include <array>
#include <cstdio>

#include "base/check.h"
#include "tensor/fp16.h"
#include "tensor/quant_blocks.h"
#include "tensor/weight_codec.h"

namespace frugal {
namespace quant {
namespace {

// Elements converted per step by the half-precision dot products (a stack buffer, no heap).
constexpr int kHalfChunk = 64;

template <float (*ToFloat)(uint16_t)>
void half_to_float_row(const void* src, float* dst, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = ToFloat(h[i]);
}

template <uint16_t (*FromFloat)(float)>
void float_to_half_row(const float* src, void* dst, int64_t n) {
  uint16_t* h = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) h[i] = FromFloat(src[i]);
}

template <float (*ToFloat)(uint16_t)>
float half_dot(const void* row, const float* x, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(row);
  float decoded[kHalfChunk];
  float sum = 0.0f;
  int64_t i = 0;
  for (; i + kHalfChunk <= n; i += kHalfChunk) {
    for (int k = 0; k < kHalfChunk; ++k) decoded[k] = ToFloat(h[i + k]);
    sum += dot_fixed<kHalfChunk>(decoded, x + i);
  }
  for (; i < n; ++i) sum += ToFloat(h[i]) * x[i];
  return sum;
}

}  // namespace

void dequantize_row_f32(const void* src, float* dst, int64_t n) {
  const float* f = static_cast<const float*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = f[i];
}

void quantize_row_f32(const float* src, void* dst, int64_t n) {
  float* f = static_cast<float*>(dst);
  for (int64_t i = 0; i < n; ++i) f[i] = src[i];
}

float dot_f32_f32(const void* row, const float* x, int64_t n) {
  const float* f = static_cast<const float*>(row);
  float sum = 0.0f;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) sum += dot_fixed<64>(f + i, x + i);
  for (; i < n; ++i) sum += f[i] * x[i];
  return sum;
}

void dequantize_row_f16(const void* src, float* dst, int64_t n) {
  half_to_float_row<fp16_to_float>(src, dst, n);
}
void quantize_row_f16(const float* src, void* dst, int64_t n) {
  float_to_half_row<float_to_fp16>(src, dst, n);
}
float dot_f32_f16(const void* row, const float* x, int64_t n) {
  return half_dot<fp16_to_float>(row, x, n);
}

void dequantize_row_bf16(const void* src, float* dst, int64_t n) {
  half_to_float_row<bf16_to_float>(src, dst, n);
}
void quantize_row_bf16(const float* src, void* dst, int64_t n) {
  float_to_half_row<float_to_bf16>(src, dst, n);
}
float dot_f32_bf16(const void* row, const float* x, int64_t n) {
  return half_dot<bf16_to_float>(row, x, n);
}

}  // namespace quant

namespace {

#define FRUGAL_TRAITS(TYPE, name, suffix, block_size, block_bytes)                          \
  TypeTraits {                                                                             \
    DType::TYPE, name, block_size, block_bytes, quant::dequantize_row_##suffix,            \
        quant::quantize_row_##suffix, quant::dot_f32_##suffix                              \
  }

constexpr TypeTraits kTraits[] = {
    FRUGAL_TRAITS(F32, "f32", f32, 1, sizeof(float)),
    FRUGAL_TRAITS(F16, "f16", f16, 1, sizeof(uint16_t)),
    FRUGAL_TRAITS(Q4_0, "q4_0", q4_0, quant::kQK4_0, sizeof(quant::BlockQ4_0)),
    FRUGAL_TRAITS(Q4_1, "q4_1", q4_1, quant::kQK4_1, sizeof(quant::BlockQ4_1)),
    FRUGAL_TRAITS(Q5_0, "q5_0", q5_0, quant::kQK5_0, sizeof(quant::BlockQ5_0)),
    FRUGAL_TRAITS(Q5_1, "q5_1", q5_1, quant::kQK5_1, sizeof(quant::BlockQ5_1)),
    FRUGAL_TRAITS(Q8_0, "q8_0", q8_0, quant::kQK8_0, sizeof(quant::BlockQ8_0)),
    FRUGAL_TRAITS(Q8_1, "q8_1", q8_1, quant::kQK8_1, sizeof(quant::BlockQ8_1)),
    FRUGAL_TRAITS(Q2_K, "q2_K", q2_k, quant::kQK_K, sizeof(quant::BlockQ2_K)),
    FRUGAL_TRAITS(Q3_K, "q3_K", q3_k, quant::kQK_K, sizeof(quant::BlockQ3_K)),
    FRUGAL_TRAITS(Q4_K, "q4_K", q4_k, quant::kQK_K, sizeof(quant::BlockQ4_K)),
    FRUGAL_TRAITS(Q5_K, "q5_K", q5_k, quant::kQK_K, sizeof(quant::BlockQ5_K)),
    FRUGAL_TRAITS(Q6_K, "q6_K", q6_k, quant::kQK_K, sizeof(quant::BlockQ6_K)),
    FRUGAL_TRAITS(Q8_K, "q8_K", q8_k, quant::kQK_K, sizeof(quant::BlockQ8_K)),
    FRUGAL_TRAITS(BF16, "bf16", bf16, 1, sizeof(uint16_t)),
};

#undef FRUGAL_TRAITS

// Names of all GGML type ids (ggml.h enum ggml_type, names as ggml_type_name prints them); ids
// whose support ggml removed keep a name that says so.
constexpr std::string_view kGgmlNames[] = {
    "f32",     "f16",     "q4_0",           "q4_1",           "q4_2 (removed)",
    "q4_3 (removed)",     "q5_0",           "q5_1",           "q8_0",
    "q8_1",    "q2_K",    "q3_K",           "q4_K",           "q5_K",
    "q6_K",    "q8_K",    "iq2_xxs",        "iq2_xs",         "iq3_xxs",
    "iq1_s",   "iq4_nl",  "iq3_s",          "iq2_s",          "iq4_xs",
    "i8",      "i16",     "i32",            "i64",            "f64",
    "iq1_m",   "bf16",    "q4_0_4_4 (removed)", "q4_0_4_8 (removed)", "q4_0_8_8 (removed)",
    "tq1_0",   "tq2_0",   "iq4_nl_4_4 (removed)", "iq4_nl_4_8 (removed)", "iq4_nl_8_8 (removed)",
    "mxfp4",   "nvfp4",   "q1_0",           "q2_0",
};

// Ids past the GGML table get "type N"; the strings are made once so the views stay valid.
constexpr uint32_t kNumberedNames = 256;

const std::array<std::array<char, 16>, kNumberedNames>& numbered_names() {
  static const auto names = [] {
    std::array<std::array<char, 16>, kNumberedNames> out{};
    for (uint32_t i = 0; i < kNumberedNames; ++i) {
      std::snprintf(out[i].data(), out[i].size(), "type %u", i);
    }
    return out;
  }();
  return names;
}

}  // namespace

const TypeTraits* find_ggml_traits(uint32_t type_id) {
  for (const TypeTraits& t : kTraits) {
    if (static_cast<uint32_t>(t.type) == type_id) return &t;
  }
  return nullptr;
}

std::string_view ggml_type_name(uint32_t ggml_type_id) {
  constexpr uint32_t known = sizeof(kGgmlNames) / sizeof(kGgmlNames[0]);
  if (ggml_type_id < known) return kGgmlNames[ggml_type_id];
  if (ggml_type_id < kNumberedNames) return numbered_names()[ggml_type_id].data();
  if (const TypeTraits* frugal_type = find_type_traits(ggml_type_id)) return frugal_type->name;  // weight_codec.cpp
  return "unknown type";
}

}  // namespace frugal
