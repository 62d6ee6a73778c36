// The fast Walsh–Hadamard transform for the KV cache's head rotation (see kv_rotation.h).
#include "kv/kv_rotation.h"

#include <cmath>

namespace frugal {

bool kv_rotation_applies(KvType type, int64_t head_dim) {
  const bool power_of_two = head_dim >= 2 && (head_dim & (head_dim - 1)) == 0;
  return type != KvType::kF16 && power_of_two;
}

void hadamard_transform(float* x, int64_t n) {
  // Sylvester's construction H_2n = [[H_n, H_n], [H_n, -H_n]] unrolled: at stage `half`, pairs
  // (j, j + half) within each block of 2·half become (a + b, a - b). The loops are branch-free
  // and contiguous, so the compiler vectorizes the inner one.
  for (int64_t half = 1; half < n; half *= 2) {
    for (int64_t block = 0; block < n; block += 2 * half) {
      float* a = x + block;
      float* b = x + block + half;
      for (int64_t j = 0; j < half; ++j) {
        const float sum = a[j] + b[j], difference = a[j] - b[j];
        a[j] = sum;
        b[j] = difference;
      }
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (int64_t i = 0; i < n; ++i) x[i] *= scale;
}

void hadamard_transform_heads(float* x, int64_t n_heads, int64_t head_dim) {
  for (int64_t h = 0; h < n_heads; ++h) hadamard_transform(x + h * head_dim, head_dim);
}

}  // namespace frugal
