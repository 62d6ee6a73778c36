// Scalar reference decode, round-to-nearest encode and float dot product of the 32-element block
// formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q8_1 (layouts in quant_blocks.h / ggml-common.h).
#include <cmath>

#include "base/check.h"
#include "tensor/fp16.h"
#include "tensor/quant_blocks.h"

namespace frugal::quant {
namespace {

// The fifth bit of element j in a Q5_0/Q5_1 block: bit j of the little-endian word qh.
uint32_t load_qh(const uint8_t qh[4]) {
  return static_cast<uint32_t>(qh[0]) | (static_cast<uint32_t>(qh[1]) << 8) |
         (static_cast<uint32_t>(qh[2]) << 16) | (static_cast<uint32_t>(qh[3]) << 24);
}

void store_qh(uint32_t bits, uint8_t qh[4]) {
  for (int i = 0; i < 4; ++i) qh[i] = static_cast<uint8_t>(bits >> (8 * i));
}

// ---- Q4_0 ----

void decode_q4_0(const BlockQ4_0& b, float* y) {
  const float d = fp16_to_float(b.d);
  for (int j = 0; j < kQK4_0 / 2; ++j) {
    y[j] = d * static_cast<float>((b.qs[j] & 0x0f) - 8);
    y[j + kQK4_0 / 2] = d * static_cast<float>((b.qs[j] >> 4) - 8);
  }
}

void encode_q4_0(const float* x, BlockQ4_0& b) {
  const float d = store_half(&b.d, signed_absmax(x, kQK4_0) / -8.0f);
  const float id = inverse_or_zero(d);
  for (int j = 0; j < kQK4_0 / 2; ++j) {
    const int q0 = clamp_int(round_to_int(x[j] * id) + 8, 0, 15);
    const int q1 = clamp_int(round_to_int(x[j + kQK4_0 / 2] * id) + 8, 0, 15);
    b.qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

// ---- Q4_1 ----

void decode_q4_1(const BlockQ4_1& b, float* y) {
  const float d = fp16_to_float(b.d);
  const float m = fp16_to_float(b.m);
  for (int j = 0; j < kQK4_1 / 2; ++j) {
    y[j] = d * static_cast<float>(b.qs[j] & 0x0f) + m;
    y[j + kQK4_1 / 2] = d * static_cast<float>(b.qs[j] >> 4) + m;
  }
}

void encode_q4_1(const float* x, BlockQ4_1& b) {
  float min, max;
  min_max(x, kQK4_1, &min, &max);
  const float d = store_half(&b.d, (max - min) / 15.0f);
  const float m = store_half(&b.m, min);
  const float id = inverse_or_zero(d);
  for (int j = 0; j < kQK4_1 / 2; ++j) {
    const int q0 = clamp_int(round_to_int((x[j] - m) * id), 0, 15);
    const int q1 = clamp_int(round_to_int((x[j + kQK4_1 / 2] - m) * id), 0, 15);
    b.qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

// ---- Q5_0 ----

void decode_q5_0(const BlockQ5_0& b, float* y) {
  const float d = fp16_to_float(b.d);
  const uint32_t qh = load_qh(b.qh);
  for (int j = 0; j < kQK5_0 / 2; ++j) {
    const int q0 = (b.qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1) << 4);
    const int q1 = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
    y[j] = d * static_cast<float>(q0 - 16);
    y[j + kQK5_0 / 2] = d * static_cast<float>(q1 - 16);
  }
}

void encode_q5_0(const float* x, BlockQ5_0& b) {
  const float d = store_half(&b.d, signed_absmax(x, kQK5_0) / -16.0f);
  const float id = inverse_or_zero(d);
  uint32_t qh = 0;
  for (int j = 0; j < kQK5_0 / 2; ++j) {
    const int q0 = clamp_int(round_to_int(x[j] * id) + 16, 0, 31);
    const int q1 = clamp_int(round_to_int(x[j + kQK5_0 / 2] * id) + 16, 0, 31);
    b.qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
    qh |= static_cast<uint32_t>(q0 >> 4) << j;
    qh |= static_cast<uint32_t>(q1 >> 4) << (j + 16);
  }
  store_qh(qh, b.qh);
}

// ---- Q5_1 ----

void decode_q5_1(const BlockQ5_1& b, float* y) {
  const float d = fp16_to_float(b.d);
  const float m = fp16_to_float(b.m);
  const uint32_t qh = load_qh(b.qh);
  for (int j = 0; j < kQK5_1 / 2; ++j) {
    const int q0 = (b.qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1) << 4);
    const int q1 = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
    y[j] = d * static_cast<float>(q0) + m;
    y[j + kQK5_1 / 2] = d * static_cast<float>(q1) + m;
  }
}

void encode_q5_1(const float* x, BlockQ5_1& b) {
  float min, max;
  min_max(x, kQK5_1, &min, &max);
  const float d = store_half(&b.d, (max - min) / 31.0f);
  const float m = store_half(&b.m, min);
  const float id = inverse_or_zero(d);
  uint32_t qh = 0;
  for (int j = 0; j < kQK5_1 / 2; ++j) {
    const int q0 = clamp_int(round_to_int((x[j] - m) * id), 0, 31);
    const int q1 = clamp_int(round_to_int((x[j + kQK5_1 / 2] - m) * id), 0, 31);
    b.qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
    qh |= static_cast<uint32_t>(q0 >> 4) << j;
    qh |= static_cast<uint32_t>(q1 >> 4) << (j + 16);
  }
  store_qh(qh, b.qh);
}

// ---- Q8_0 / Q8_1 ----

float absmax(const float* x, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  return amax;
}

void decode_q8_0(const BlockQ8_0& b, float* y) {
  const float d = fp16_to_float(b.d);
  for (int j = 0; j < kQK8_0; ++j) y[j] = d * static_cast<float>(b.qs[j]);
}

void encode_q8_0(const float* x, BlockQ8_0& b) {
  const float d = store_half(&b.d, absmax(x, kQK8_0) / 127.0f);
  const float id = inverse_or_zero(d);
  for (int j = 0; j < kQK8_0; ++j) {
    b.qs[j] = static_cast<int8_t>(clamp_int(round_to_int(x[j] * id), -127, 127));
  }
}

void decode_q8_1(const BlockQ8_1& b, float* y) {
  const float d = fp16_to_float(b.d);
  for (int j = 0; j < kQK8_1; ++j) y[j] = d * static_cast<float>(b.qs[j]);
}

void encode_q8_1(const float* x, BlockQ8_1& b) {
  const float d = store_half(&b.d, absmax(x, kQK8_1) / 127.0f);
  const float id = inverse_or_zero(d);
  int sum = 0;
  for (int j = 0; j < kQK8_1; ++j) {
    b.qs[j] = static_cast<int8_t>(clamp_int(round_to_int(x[j] * id), -127, 127));
    sum += b.qs[j];
  }
  // s = d * sum(q), as quantize_row_q8_1_ref stores it.
  b.s = float_to_fp16(d * static_cast<float>(sum));
}

}  // namespace

FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q4_0, BlockQ4_0, kQK4_0)
FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q4_1, BlockQ4_1, kQK4_1)
FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q5_0, BlockQ5_0, kQK5_0)
FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q5_1, BlockQ5_1, kQK5_1)
FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q8_0, BlockQ8_0, kQK8_0)
FRUGAL_DEFINE_BLOCK_ROW_FUNCTIONS(q8_1, BlockQ8_1, kQK8_1)

}  // namespace frugal::quant
