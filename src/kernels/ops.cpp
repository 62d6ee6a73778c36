// The per-row transformer operations of ops.h: each call goes to the implementation of the
// active ISA (ops_kernels.h; scalar twins in ops_reference.cpp, AVX2 in ops_avx2.cpp). RoPE is
// portable C++ here: its cost is rope_dim/2 sin/cos per token, nothing a vector unit would change.
#include "kernels/ops.h"

#include <cmath>

#include "kernels/ops_kernels.h"

namespace frugal {

namespace kernels {

const OpsTable& ops_table(Isa isa) { return isa == Isa::kScalar ? scalar_ops_table() : avx2_ops_table(); }

}  // namespace kernels

namespace {

inline const kernels::OpsTable& active_ops() { return kernels::ops_table(active_isa()); }

}  // namespace

void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* y) {
  active_ops().rms_norm(x, weight, eps, n, y);
}

void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t position,
          const float* inv_freq, RopeStyle style) {
  const int64_t half = rope_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float theta = static_cast<float>(position) * inv_freq[i];
    const float c = std::cos(theta), s = std::sin(theta);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* head = x + h * head_dim;
      const int64_t a = style == RopeStyle::kNormal ? 2 * i : i;
      const int64_t b = style == RopeStyle::kNormal ? 2 * i + 1 : i + half;
      const float x0 = head[a], x1 = head[b];
      head[a] = x0 * c - x1 * s;
      head[b] = x0 * s + x1 * c;
    }
  }
}

void swiglu(float* gate, const float* up, int64_t n) { active_ops().swiglu(gate, up, n); }

void geglu(float* gate, const float* up, int64_t n) { active_ops().geglu(gate, up, n); }

void softmax(float* x, int64_t n) { active_ops().softmax(x, n); }

void attend_one_head(const float* q, const float* k, const float* v, int64_t kv_stride,
                     int64_t first, int64_t last, int64_t head_dim, float scale, float* out) {
  active_ops().attend_f32(q, k, v, kv_stride, first, last, head_dim, scale, out);
}

void attend_one_head(const float* q, const uint16_t* k, const uint16_t* v, int64_t kv_stride,
                     int64_t first, int64_t last, int64_t head_dim, float scale, float* out) {
  active_ops().attend_f16(q, k, v, kv_stride, first, last, head_dim, scale, out);
}

void attend_one_head(const float* q, const KvRows& k, const KvRows& v, int64_t first, int64_t last, int64_t head_dim,
                     float scale, float* out) {
  active_ops().attend_kv(q, k, v, first, last, head_dim, scale, out);
}

void attend_one_head(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t first, int64_t last,
                     int64_t head_dim, float scale, float* out) {
  active_ops().attend_paged(q, k, v, first, last, head_dim, scale, out);
}

void attend_heads(const float* q, int64_t n_heads, const KvRows& k, const KvRows& v, int64_t first, int64_t last,
                  int64_t head_dim, float scale, float* out) {
  active_ops().attend_heads_kv(q, n_heads, k, v, first, last, head_dim, scale, out);
}

void attend_heads(const float* q, int64_t n_heads, const PagedKvRows& k, const PagedKvRows& v, int64_t first,
                  int64_t last, int64_t head_dim, float scale, float* out) {
  active_ops().attend_heads_paged(q, n_heads, k, v, first, last, head_dim, scale, out);
}

}  // namespace frugal
