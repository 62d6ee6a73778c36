// Scalar twins of the transformer ops (ops_kernels.h): the definitions as written in the papers
// cited in ops.h, in portable C++ with double accumulators. They are the ops of FRUGAL_ISA=scalar
// and what the twin tests compare every SIMD level against.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/ops_kernels.h"
#include "tensor/fp16.h"

namespace frugal::kernels {
namespace {

inline float to_float(float x) { return x; }
inline float to_float(uint16_t h) { return fp16_to_float(h); }

template <typename T>
double dot(const float* q, const T* k, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(q[i]) * to_float(k[i]);
  return sum;
}

// Two passes over the keys (the maximum score, then the normalized weighted sum), so no score
// array of unbounded length is needed: out = sum_j softmax(s)_j v_j with s_j = scale q.k_j.
// Output dimensions are done in slices of kSlice double accumulators on the stack (the decode
// loop must not allocate, also under FRUGAL_ISA=scalar); head sizes up to kSlice need one slice.
template <typename T>
void attend(const float* q, const T* k, const T* v, int64_t kv_stride, int64_t first, int64_t last, int64_t head_dim,
            float scale, float* out) {
  constexpr int64_t kSlice = 256;
  double max = -std::numeric_limits<double>::infinity();
  for (int64_t j = first; j <= last; ++j) max = std::max(max, scale * dot(q, k + j * kv_stride, head_dim));
  for (int64_t d0 = 0; d0 < head_dim; d0 += kSlice) {
    const int64_t nd = std::min(kSlice, head_dim - d0);
    double acc[kSlice] = {};
    double sum = 0;
    for (int64_t j = first; j <= last; ++j) {
      const double p = std::exp(scale * dot(q, k + j * kv_stride, head_dim) - max);
      sum += p;
      const T* vj = v + j * kv_stride + d0;
      for (int64_t d = 0; d < nd; ++d) acc[d] += p * to_float(vj[d]);
    }
    for (int64_t d = 0; d < nd; ++d) out[d0 + d] = static_cast<float>(acc[d] / sum);
  }
}

// Element i of a row of the cache in its stored type (the GGUF q8_0/q4_0 block layouts of ops.h).
double kv_element(const uint8_t* row, KvType type, int64_t i) {
  switch (type) {
    case KvType::kF16: {
      uint16_t h;
      std::memcpy(&h, row + 2 * i, 2);
      return fp16_to_float(h);
    }
    case KvType::kQ8_0: {
      const uint8_t* block = row + (i / 32) * 34;
      uint16_t d;
      std::memcpy(&d, block, 2);
      return static_cast<double>(fp16_to_float(d)) * static_cast<int8_t>(block[2 + i % 32]);
    }
    case KvType::kQ4_0: {
      const uint8_t* block = row + (i / 32) * 18;
      uint16_t d;
      std::memcpy(&d, block, 2);
      const int64_t j = i % 32;
      const int q = j < 16 ? (block[2 + j] & 0xF) : (block[2 + j - 16] >> 4);
      return static_cast<double>(fp16_to_float(d)) * (q - 8);
    }
  }
  return 0;
}

double kv_dot(const float* q, const uint8_t* row, KvType type, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(q[i]) * kv_element(row, type, i);
  return sum;
}

// Row j of a contiguous or a paged cache, so one definition serves both.
const uint8_t* row_of(const KvRows& rows, int64_t j) { return rows.data + j * rows.row_bytes; }
const uint8_t* row_of(const PagedKvRows& rows, int64_t j) { return rows.row(j); }

// q . k_j for a row of keys. f16 keys take the float query; q8_0/q4_0 keys take the query
// quantized to 8 bits per block of 32 (quantize_query_q8, as the SIMD kernels): the score is
// sum over blocks of d_q d_k sum_i q_i k_i with integer q_i, k_i.
struct KeyDot {
  const float* q;
  KvType type;
  int64_t n;
  int8_t qi[4096];  // model_config.cpp's bound on head_dim
  float qd[4096 / 32];
  KeyDot(const float* query, KvType key_type, int64_t head_dim) : q(query), type(key_type), n(head_dim) {
    if (type != KvType::kF16) quantize_query_q8(q, n, qi, qd);
  }
  double operator()(const uint8_t* row) const {
    if (type == KvType::kF16) return kv_dot(q, row, type, n);
    double sum = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
      double block = 0;
      for (int64_t i = 0; i < 32; ++i) block += static_cast<double>(qi[32 * b + i]) * kv_element(row, type, 32 * b + i);
      sum += static_cast<double>(qd[b]) * block;  // kv_element already carries d_k
    }
    return sum;
  }
};

template <typename Rows>
void attend_rows(const float* q, const Rows& k, const Rows& v, int64_t first, int64_t last, int64_t head_dim, float scale,
                 float* out) {
  constexpr int64_t kSlice = 256;
  const KeyDot key_dot(q, k.type, head_dim);
  double max = -std::numeric_limits<double>::infinity();
  for (int64_t j = first; j <= last; ++j) max = std::max(max, scale * key_dot(row_of(k, j)));
  for (int64_t d0 = 0; d0 < head_dim; d0 += kSlice) {
    const int64_t nd = std::min(kSlice, head_dim - d0);
    double acc[kSlice] = {};
    double sum = 0;
    for (int64_t j = first; j <= last; ++j) {
      const double p = std::exp(scale * key_dot(row_of(k, j)) - max);
      sum += p;
      for (int64_t d = 0; d < nd; ++d) acc[d] += p * kv_element(row_of(v, j), v.type, d0 + d);
    }
    for (int64_t d = 0; d < nd; ++d) out[d0 + d] = static_cast<float>(acc[d] / sum);
  }
}

}  // namespace

void attend_reference(const float* q, const KvRows& k, const KvRows& v, int64_t first, int64_t last, int64_t head_dim,
                      float scale, float* out) {
  attend_rows(q, k, v, first, last, head_dim, scale, out);
}

void attend_reference(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t first, int64_t last,
                      int64_t head_dim, float scale, float* out) {
  attend_rows(q, k, v, first, last, head_dim, scale, out);
}

void rms_norm_reference(const float* x, const float* weight, float eps, int64_t n, float* y) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * weight[i];
}

void swiglu_reference(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void geglu_reference(float* gate, const float* up, int64_t n) {
  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (Hendrycks & Gimpel 2016)
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    gate[i] = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x))) * up[i];
  }
}

void softmax_reference(float* x, int64_t n) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) max = std::max(max, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void attend_reference(const float* q, const float* k, const float* v, int64_t kv_stride, int64_t first, int64_t last,
                      int64_t head_dim, float scale, float* out) {
  attend(q, k, v, kv_stride, first, last, head_dim, scale, out);
}

void attend_reference(const float* q, const uint16_t* k, const uint16_t* v, int64_t kv_stride, int64_t first,
                      int64_t last, int64_t head_dim, float scale, float* out) {
  attend(q, k, v, kv_stride, first, last, head_dim, scale, out);
}

void attend_heads_reference(const float* q, int64_t n_heads, const KvRows& k, const KvRows& v, int64_t first,
                            int64_t last, int64_t head_dim, float scale, float* out) {
  for (int64_t h = 0; h < n_heads; ++h) attend_reference(q + h * head_dim, k, v, first, last, head_dim, scale, out + h * head_dim);
}

void attend_heads_reference(const float* q, int64_t n_heads, const PagedKvRows& k, const PagedKvRows& v, int64_t first,
                            int64_t last, int64_t head_dim, float scale, float* out) {
  for (int64_t h = 0; h < n_heads; ++h) attend_reference(q + h * head_dim, k, v, first, last, head_dim, scale, out + h * head_dim);
}

const OpsTable& scalar_ops_table() {
  static const OpsTable table = [] {
    OpsTable t{};
    t.isa = Isa::kScalar;
    t.rms_norm = rms_norm_reference;
    t.swiglu = swiglu_reference;
    t.geglu = geglu_reference;
    t.softmax = softmax_reference;
    t.attend_f32 = attend_reference;
    t.attend_f16 = attend_reference;
    t.attend_kv = attend_reference;
    t.attend_paged = attend_reference;
    t.attend_heads_kv = attend_heads_reference;
    t.attend_heads_paged = attend_heads_reference;
    return t;
  }();
  return table;
}

}  // namespace frugal::kernels
