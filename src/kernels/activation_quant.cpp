// Layout of quantized activations and the scalar reference quantizers (the twins of the SIMD ones
// in matmul_simd.h; both must give identical bytes). Numerics follow ggml: quantize_row_q8_0/_q8_1
// (ggml-cpu/arch/x86/quants.c: d = amax/127 rounded to fp16, codes round-to-nearest-even of
// x*127/amax) and quantize_row_q8_K_ref (ggml-quants.c: iscale = -127/max, d = 1/iscale).
#include "kernels/activation_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "tensor/fp16.h"

namespace frugal::kernels {
namespace {

size_t round_up_64(size_t n) { return (n + 63) / 64 * 64; }

// Round to nearest, ties to even: what _mm256_cvtps_epi32 does under the default MXCSR and what
// ggml's nearest_int and _mm256_round_ps(_MM_ROUND_NEAREST) do. Codes saturate to int8 as the
// SIMD path's packs do; NaN and values past int's range (only a corrupt model's activations reach
// them) give -128, _mm256_cvtps_epi32's INT_MIN saturated, instead of undefined behaviour in the
// conversion and the code sums (found by fuzz/gguf_model_fuzzer.cpp).
int round_even(float v) {
  if (!(std::fabs(v) < 2147483648.0f)) return -128;
  return std::clamp(static_cast<int>(std::nearbyint(v)), -128, 127);
}

// Writes block b (32 elements at xb) of one token with the scale d = amax/127, the way Q8_0 does.
// Columns listed in [*skip, skip_end) (sorted; the cursor advances past those in this block) get
// code 0.
void store_block32(const float* xb, int64_t b, float amax, int lane, const QuantizedActivations& out, int64_t group,
                   const int32_t*& skip, const int32_t* skip_end) {
  const float d = amax / 127.0f;
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  const float d_half = fp16_to_float(float_to_fp16(d));
  int8_t* codes = out.codes(group);
  int sum = 0;
  for (int i = 0; i < 32; ++i) {
    const int64_t k = b * 32 + i;
    int q = round_even(xb[i] * id);
    if (skip != skip_end && *skip == k) {
      ++skip;
      q = 0;
    }
    codes[((k / 4) * out.lanes + lane) * 4 + k % 4] = static_cast<int8_t>(q);
    sum += q;
  }
  out.array(group, ActivationArray::kD32)[b * out.lanes + lane] = d_half;
  out.array(group, ActivationArray::kS32)[b * out.lanes + lane] = d_half * static_cast<float>(sum);
  out.array(group, ActivationArray::kH32)[b * out.lanes + lane] = fp16_to_float(float_to_fp16(d * static_cast<float>(sum)));
}

void quantize_token_q8_block32(const float* x, int64_t cols, int lane, const QuantizedActivations& out, int64_t group) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
    const int32_t* none = nullptr;
    store_block32(xb, b, amax, lane, out, group, none, nullptr);
  }
}

void quantize_token_q8k(const float* x, int64_t cols, int lane, const QuantizedActivations& out, int64_t group) {
  int8_t* codes = out.codes(group);
  float* d32 = out.array(group, ActivationArray::kD32);
  float* s32 = out.array(group, ActivationArray::kS32);
  float* d16 = out.array(group, ActivationArray::kD16);
  float* s16 = out.array(group, ActivationArray::kS16);
  int32_t* p16 = reinterpret_cast<int32_t*>(out.array(group, ActivationArray::kP16));
  for (int64_t b = 0; b < cols / 256; ++b) {
    const float* xb = x + b * 256;
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < 256; ++i) {
      if (std::fabs(xb[i]) > amax) {
        amax = std::fabs(xb[i]);
        max = xb[i];
      }
    }
    const float iscale = amax != 0.0f ? -127.0f / max : 0.0f;
    const float d = amax != 0.0f ? 1.0f / iscale : 0.0f;
    int sums[16] = {};
    for (int i = 0; i < 256; ++i) {
      int q = round_even(iscale * xb[i]);
      if (q > 127) q = 127;
      const int64_t k = b * 256 + i;
      codes[((k / 4) * out.lanes + lane) * 4 + k % 4] = static_cast<int8_t>(q);
      sums[i / 16] += q;
    }
    for (int j = 0; j < 16; ++j) {
      d16[(b * 16 + j) * out.lanes + lane] = d;
      s16[(b * 16 + j) * out.lanes + lane] = d * static_cast<float>(sums[j]);
    }
    for (int j = 0; j < 8; ++j) {
      d32[(b * 8 + j) * out.lanes + lane] = d;
      s32[(b * 8 + j) * out.lanes + lane] = d * static_cast<float>(sums[2 * j] + sums[2 * j + 1]);
      p16[(b * 8 + j) * out.lanes + lane] = pack_sum_pair(sums[2 * j], sums[2 * j + 1]);
    }
  }
}

// Zeroes lane `lane` of a group (codes and arrays), for the padding tokens of the last group.
void zero_lane(const QuantizedActivations& out, int64_t group, int lane) {
  int8_t* codes = out.codes(group);
  for (int64_t k4 = 0; k4 < out.cols / 4; ++k4) std::memset(codes + (k4 * out.lanes + lane) * 4, 0, 4);
  float* arrays = out.array(group, ActivationArray::kD32);
  const int64_t n = (reinterpret_cast<float*>(out.data + (group + 1) * out.group_bytes) - arrays) / out.lanes;
  for (int64_t i = 0; i < n; ++i) arrays[i * out.lanes + lane] = 0.0f;
}

}  // namespace

ActivationFormat activation_format_for(DType weight_type) {
  const WeightCodec* codec = find_weight_codec(static_cast<uint32_t>(weight_type));
  return codec != nullptr ? codec->activation : ActivationFormat::kNone;
}

size_t activation_group_bytes(ActivationFormat format, int64_t cols, int lanes) {
  if (format == ActivationFormat::kNone) return 0;
  const size_t codes = static_cast<size_t>(cols) * lanes;
  size_t arrays = 0;
  if (format == ActivationFormat::kQ8Block32) arrays = 3 * static_cast<size_t>(cols / 32);
  if (format == ActivationFormat::kQ8K) arrays = 3 * static_cast<size_t>(cols / 32) + 2 * static_cast<size_t>(cols / 16);
  return round_up_64(codes + arrays * lanes * sizeof(float));
}

size_t activation_bytes(ActivationFormat format, int64_t cols, int64_t n_tokens) {
  const int lanes = group_lanes(n_tokens);
  const int64_t groups = (n_tokens + lanes - 1) / lanes;
  return static_cast<size_t>(groups) * activation_group_bytes(format, cols, lanes);
}

float* QuantizedActivations::array(int64_t group, ActivationArray which) const {
  float* base = reinterpret_cast<float*>(data + group * group_bytes + static_cast<size_t>(cols) * lanes);
  const int64_t n32 = cols / 32 * lanes, n16 = cols / 16 * lanes;
  switch (which) {
    case ActivationArray::kD32: return base;
    case ActivationArray::kS32: return base + n32;
    case ActivationArray::kH32: return format == ActivationFormat::kQ8Block32 ? base + 2 * n32 : nullptr;
    case ActivationArray::kD16: return format == ActivationFormat::kQ8K ? base + 2 * n32 : nullptr;
    case ActivationArray::kS16: return format == ActivationFormat::kQ8K ? base + 2 * n32 + n16 : nullptr;
    case ActivationArray::kP16: return format == ActivationFormat::kQ8K ? base + 2 * n32 + 2 * n16 : nullptr;
  }
  return nullptr;
}

QuantizedActivations make_activation_view(ActivationFormat format, int64_t cols, int64_t n_tokens, void* data) {
  return make_activation_view(format, cols, n_tokens, group_lanes(n_tokens), data);
}

size_t activation_bytes(ActivationFormat format, int64_t cols, int64_t n_tokens, int lanes) {
  const int64_t groups = (n_tokens + lanes - 1) / lanes;
  return static_cast<size_t>(groups) * activation_group_bytes(format, cols, lanes);
}

QuantizedActivations make_activation_view(ActivationFormat format, int64_t cols, int64_t n_tokens, int lanes,
                                          void* data) {
  FRUGAL_CHECK(format != ActivationFormat::kNone && lanes >= 1);
  FRUGAL_CHECK(cols % (format == ActivationFormat::kQ8K ? 256 : 32) == 0);
  QuantizedActivations a;
  a.format = format;
  a.cols = cols;
  a.n_tokens = n_tokens;
  a.lanes = lanes;
  a.data = static_cast<uint8_t*>(data);
  a.group_bytes = activation_group_bytes(format, cols, a.lanes);
  return a;
}

void quantize_activations_reference(const float* x, int64_t x_stride, int64_t group_begin, int64_t group_end,
                                    const QuantizedActivations& out) {
  for (int64_t g = group_begin; g < group_end; ++g) {
    for (int lane = 0; lane < out.lanes; ++lane) {
      const int64_t t = g * out.lanes + lane;
      if (t >= out.n_tokens) {
        zero_lane(out, g, lane);
      } else if (out.format == ActivationFormat::kQ8Block32) {
        quantize_token_q8_block32(x + t * x_stride, out.cols, lane, out, g);
      } else {
        quantize_token_q8k(x + t * x_stride, out.cols, lane, out, g);
      }
    }
  }
}

void quantize_activations_per_token(const float* x, int64_t x_stride, int64_t group_begin, int64_t group_end,
                                    const int32_t* skip, int64_t n_skip, const QuantizedActivations& out) {
  FRUGAL_CHECK(out.format == ActivationFormat::kQ8Block32);
  for (int64_t g = group_begin; g < group_end; ++g) {
    for (int lane = 0; lane < out.lanes; ++lane) {
      const int64_t t = g * out.lanes + lane;
      if (t >= out.n_tokens) {
        zero_lane(out, g, lane);
        continue;
      }
      const float* xt = x + t * x_stride;
      // `skip` is sorted ascending (checked by the model loader): walk it alongside the columns.
      float amax = 0.0f;
      for (int64_t k = 0, next = 0; k < out.cols; ++k) {
        if (next < n_skip && skip[next] == k) {
          ++next;
        } else {
          amax = std::fmax(amax, std::fabs(xt[k]));
        }
      }
      const int32_t* cursor = skip;
      for (int64_t b = 0; b < out.cols / 32; ++b) store_block32(xt + b * 32, b, amax, lane, out, g, cursor, skip + n_skip);
    }
  }
}

}  // namespace frugal::kernels
