// Row functions, validation and the traits table of the sparse-q4 format; the spec is in
// sparse_q4.h.
#include "tensor/sparse_q4.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "tensor/fp16.h"
#include "tensor/sparse_rows.h"

namespace frugal {
namespace {

using sparse_rows::load_mask;
using sparse_rows::load_scale;

constexpr int kMaxCapacity = kSparseBlock;
constexpr int kCapacities = kMaxCapacity / 2;  // 2, 4, ..., 64

// The code of the k-th value of a block whose codes start at p.
int code_at(const uint8_t* p, int k) { return k & 1 ? p[k / 2] >> 4 : p[k / 2] & 0x0f; }

template <int C>
void dequantize(const void* src, float* dst, int64_t n) {
  const SparseQ4Row r = sparse_q4_row(static_cast<const uint8_t*>(src), n, C);
  const uint8_t* p = r.codes;
  for (int64_t b = 0; b < r.blocks; ++b) {
    uint64_t m = load_mask(r.masks + 8 * b);
    const float s = load_scale(r.scales + 2 * b);
    float* out = dst + b * kSparseBlock;
    std::fill(out, out + kSparseBlock, 0.0f);
    const int k = std::popcount(m);
    for (int i = 0; i < k; ++i, m &= m - 1) out[std::countr_zero(m)] = s * static_cast<float>(code_at(p, i) - 8);
    p += (k + 1) / 2;
  }
}

// Encodes one row into capacity c: keeps the largest magnitudes whose bytes fit in nb * c / 2
// (a value costs a byte when its block holds an even count so far, else it fills the pad nibble),
// quantizes each block with s = max|w| / 7.
void quantize_with_capacity(const float* src, uint8_t* dst, int64_t n, int c) {
  const int64_t nb = n / kSparseBlock;
  const int64_t budget = nb * c / 2;
  std::vector<uint8_t> keep(static_cast<size_t>(n), 0);
  std::vector<int> count(static_cast<size_t>(nb), 0);
  int64_t used = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (src[i] == 0.0f) continue;
    keep[i] = 1;
    used += count[i / kSparseBlock]++ % 2 == 0;
  }
  if (used > budget) {
    std::fill(keep.begin(), keep.end(), 0);
    std::fill(count.begin(), count.end(), 0);
    used = 0;
    std::vector<int64_t> order;
    for (int64_t i = 0; i < n; ++i) {
      if (src[i] != 0.0f) order.push_back(i);
    }
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      const float fa = std::fabs(src[a]), fb = std::fabs(src[b]);
      return fa > fb || (fa == fb && a < b);
    });
    for (int64_t i : order) {
      const int64_t cost = count[i / kSparseBlock] % 2 == 0;
      if (used + cost > budget) continue;  // a later value may still fill an odd block's pad
      keep[i] = 1;
      ++count[i / kSparseBlock];
      used += cost;
    }
  }
  std::memset(dst, 0, static_cast<size_t>(nb * 10 + budget));
  uint8_t* p = dst + nb * 10;
  for (int64_t b = 0; b < nb; ++b) {
    const float* x = src + b * kSparseBlock;
    float amax = 0.0f;
    for (int j = 0; j < kSparseBlock; ++j) {
      if (keep[b * kSparseBlock + j]) amax = std::max(amax, std::fabs(x[j]));
    }
    const uint16_t h = float_to_fp16(amax / 7.0f);
    const float s = fp16_to_float(h);
    const float inv = s > 0.0f ? 1.0f / s : 0.0f;
    uint64_t mask = 0;
    int k = 0;
    for (int j = 0; j < kSparseBlock; ++j) {
      if (!keep[b * kSparseBlock + j]) continue;
      const int q = static_cast<int>(std::clamp(std::nearbyint(x[j] * inv), -7.0f, 7.0f));
      if (q == 0) continue;  // rounds to zero: store it as a zero (mask bit clear)
      mask |= uint64_t{1} << j;
      p[k / 2] |= static_cast<uint8_t>((q + 8) << (k & 1 ? 4 : 0));
      ++k;
    }
    p += (k + 1) / 2;
    std::memcpy(dst + 8 * b, &mask, 8);
    std::memcpy(dst + nb * 8 + 2 * b, &h, 2);
  }
}

template <int C>
void quantize(const float* src, void* dst, int64_t n) {
  quantize_with_capacity(src, static_cast<uint8_t*>(dst), n, C);
}

template <int C>
float dot(const void* row, const float* x, int64_t n) {
  const SparseQ4Row r = sparse_q4_row(static_cast<const uint8_t*>(row), n, C);
  const uint8_t* p = r.codes;
  float sum = 0.0f;
  for (int64_t b = 0; b < r.blocks; ++b) {
    uint64_t m = load_mask(r.masks + 8 * b);
    const float* xb = x + b * kSparseBlock;
    const int k = std::popcount(m);
    float part = 0.0f;
    for (int i = 0; i < k; ++i, m &= m - 1) part += static_cast<float>(code_at(p, i) - 8) * xb[std::countr_zero(m)];
    p += (k + 1) / 2;
    sum += load_scale(r.scales + 2 * b) * part;
  }
  return sum;
}

bool validate(const TypeTraits& traits, const uint8_t* data, int64_t rows, int64_t cols, std::string* why) {
  const int c = sparse_q4_capacity(traits.type);
  return sparse_rows::validate_rows(traits, data, rows, cols, why, [&](const uint8_t* bytes, std::string* problem) {
    const SparseQ4Row row = sparse_q4_row(bytes, cols, c);
    int64_t used = 0;
    for (int64_t b = 0; b < row.blocks; ++b) used += (std::popcount(load_mask(row.masks + 8 * b)) + 1) / 2;
    const int64_t room = row.codes_end - row.codes;
    if (used > room) {
      *problem = "has mask bits set for " + std::to_string(used) + " bytes of codes but room for " + std::to_string(room);
      return false;
    }
    const uint8_t* p = row.codes;
    for (int64_t b = 0; b < row.blocks; ++b) {
      const int k = std::popcount(load_mask(row.masks + 8 * b));
      for (int i = 0; i < k; ++i) {
        const int u = code_at(p, i);
        if (u == 0 || u == 8) {
          *problem = "block " + std::to_string(b) + " stores a code " + std::to_string(u) + " outside [1, 15] \\ {8}";
          return false;
        }
      }
      if (k % 2 == 1 && (p[k / 2] >> 4) != 0) {
        *problem = "block " + std::to_string(b) + " has a non-zero pad nibble";
        return false;
      }
      p += (k + 1) / 2;
    }
    if (!sparse_rows::all_zero(p, row.codes_end)) {
      *problem = "has non-zero bytes past its " + std::to_string(used) + " bytes of codes";
      return false;
    }
    return true;
  });
}

constexpr auto kNames = sparse_rows::capacity_names<kCapacities>("sparse_q4_c", 2);

template <int... I>
constexpr std::array<TypeTraits, sizeof...(I)> make_traits(std::integer_sequence<int, I...>) {
  return {TypeTraits{static_cast<DType>(kSparseQ4TypeBase | (2 * (I + 1))), kNames[I].data(), kSparseBlock,
                     static_cast<size_t>(10 + I + 1), dequantize<2 * (I + 1)>, quantize<2 * (I + 1)>, dot<2 * (I + 1)>,
                     validate}...};
}

constexpr auto kTraits = make_traits(std::make_integer_sequence<int, kCapacities>{});

}  // namespace

std::optional<DType> sparse_q4_type(int capacity) {
  if (capacity < 2 || capacity > kMaxCapacity || capacity % 2 != 0) return std::nullopt;
  return static_cast<DType>(kSparseQ4TypeBase | static_cast<uint32_t>(capacity));
}

int sparse_q4_capacity(DType type) {
  const uint32_t id = static_cast<uint32_t>(type);
  if ((id & 0xffffff00u) != kSparseQ4TypeBase) return 0;
  const int c = static_cast<int>(id & 0xff);
  return c >= 2 && c <= kMaxCapacity && c % 2 == 0 ? c : 0;
}

std::span<const TypeTraits> sparse_q4_all_traits() { return kTraits; }

const TypeTraits* find_sparse_q4_traits(uint32_t type_id) {
  const int c = sparse_q4_capacity(static_cast<DType>(type_id));
  return c == 0 ? nullptr : &kTraits[c / 2 - 1];
}

DType sparse_q4_type_for(const float* values, int64_t rows, int64_t cols) {
  const int64_t nb = cols / kSparseBlock;
  int64_t densest = 1;  // bytes of codes
  for (int64_t r = 0; r < rows; ++r) {
    int64_t bytes = 0;
    for (int64_t b = 0; b < nb; ++b) {
      int k = 0;
      for (int j = 0; j < kSparseBlock; ++j) k += values[r * cols + b * kSparseBlock + j] != 0.0f;
      bytes += (k + 1) / 2;
    }
    densest = std::max(densest, bytes);
  }
  const int c = 2 * static_cast<int>(std::min<int64_t>(kMaxCapacity / 2, (densest + nb - 1) / nb));
  return *sparse_q4_type(c);
}

}  // namespace frugal
