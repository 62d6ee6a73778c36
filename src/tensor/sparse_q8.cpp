// Row functions, validation and the traits table of the sparse-q8 format; the spec is in
// sparse_q8.h.
#include "tensor/sparse_q8.h"

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

template <int C>
void dequantize(const void* src, float* dst, int64_t n) {
  const SparseQ8Row r = sparse_q8_row(static_cast<const uint8_t*>(src), n, C);
  const int8_t* v = r.values;
  for (int64_t b = 0; b < r.blocks; ++b) {
    uint64_t m = load_mask(r.masks + 8 * b);
    const float s = load_scale(r.scales + 2 * b);
    float* out = dst + b * kSparseBlock;
    std::fill(out, out + kSparseBlock, 0.0f);
    while (m != 0) {
      out[std::countr_zero(m)] = s * static_cast<float>(*v++);
      m &= m - 1;
    }
  }
}

// Encodes one row into capacity c: keeps at most nb * c non-zeros (the largest magnitudes, ties by
// column), quantizes each block with s = max|w| / 127.
void quantize_with_capacity(const float* src, uint8_t* dst, int64_t n, int c) {
  const int64_t nb = n / kSparseBlock;
  const int64_t cap = nb * c;
  std::vector<uint8_t> keep(static_cast<size_t>(n), 0);
  int64_t nnz = 0;
  for (int64_t i = 0; i < n; ++i) nnz += src[i] != 0.0f;
  if (nnz <= cap) {
    for (int64_t i = 0; i < n; ++i) keep[i] = src[i] != 0.0f;
  } else {
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      const float fa = std::fabs(src[a]), fb = std::fabs(src[b]);
      return fa > fb || (fa == fb && a < b);
    });
    for (int64_t i = 0; i < cap; ++i) keep[order[i]] = 1;
  }
  std::memset(dst, 0, static_cast<size_t>(nb * (10 + c)));
  int8_t* v = reinterpret_cast<int8_t*>(dst + nb * 10);
  for (int64_t b = 0; b < nb; ++b) {
    const float* x = src + b * kSparseBlock;
    float amax = 0.0f;
    for (int j = 0; j < kSparseBlock; ++j) {
      if (keep[b * kSparseBlock + j]) amax = std::max(amax, std::fabs(x[j]));
    }
    const uint16_t h = float_to_fp16(amax / 127.0f);
    const float s = fp16_to_float(h);
    const float inv = s > 0.0f ? 1.0f / s : 0.0f;
    uint64_t mask = 0;
    for (int j = 0; j < kSparseBlock; ++j) {
      if (!keep[b * kSparseBlock + j]) continue;
      const int q = static_cast<int>(std::clamp(std::nearbyint(x[j] * inv), -127.0f, 127.0f));
      if (q == 0) continue;  // rounds to zero: store it as a zero (mask bit clear)
      mask |= uint64_t{1} << j;
      *v++ = static_cast<int8_t>(q);
    }
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
  const SparseQ8Row r = sparse_q8_row(static_cast<const uint8_t*>(row), n, C);
  const int8_t* v = r.values;
  float sum = 0.0f;
  for (int64_t b = 0; b < r.blocks; ++b) {
    uint64_t m = load_mask(r.masks + 8 * b);
    const float* xb = x + b * kSparseBlock;
    float part = 0.0f;
    while (m != 0) {
      part += static_cast<float>(*v++) * xb[std::countr_zero(m)];
      m &= m - 1;
    }
    sum += load_scale(r.scales + 2 * b) * part;
  }
  return sum;
}

bool validate(const TypeTraits& traits, const uint8_t* data, int64_t rows, int64_t cols, std::string* why) {
  const int c = sparse_q8_capacity(traits.type);
  return sparse_rows::validate_rows(traits, data, rows, cols, why, [&](const uint8_t* bytes, std::string* problem) {
    const SparseQ8Row row = sparse_q8_row(bytes, cols, c);
    int64_t nnz = 0;
    for (int64_t b = 0; b < row.blocks; ++b) nnz += std::popcount(load_mask(row.masks + 8 * b));
    const int64_t cap = row.blocks * c;
    if (nnz > cap) {
      *problem = "has " + std::to_string(nnz) + " mask bits set but room for " + std::to_string(cap) + " values";
      return false;
    }
    if (!sparse_rows::all_zero(reinterpret_cast<const uint8_t*>(row.values + nnz), reinterpret_cast<const uint8_t*>(row.values_end))) {
      *problem = "has non-zero bytes past its " + std::to_string(nnz) + " values";
      return false;
    }
    for (const int8_t* p = row.values; p < row.values + nnz; ++p) {
      if (*p == 0 || *p == -128) {
        *problem = "stores a code " + std::to_string(*p) + " outside [-127, -1] u [1, 127]";
        return false;
      }
    }
    return true;
  });
}

constexpr auto kNames = sparse_rows::capacity_names<kMaxCapacity>("sparse_q8_c", 1);

template <int... I>
constexpr std::array<TypeTraits, sizeof...(I)> make_traits(std::integer_sequence<int, I...>) {
  return {TypeTraits{static_cast<DType>(kSparseQ8TypeBase | (I + 1)), kNames[I].data(), kSparseBlock,
                     static_cast<size_t>(10 + I + 1), dequantize<I + 1>, quantize<I + 1>, dot<I + 1>, validate}...};
}

constexpr auto kTraits = make_traits(std::make_integer_sequence<int, kMaxCapacity>{});

}  // namespace

std::optional<DType> sparse_q8_type(int capacity) {
  if (capacity < 1 || capacity > kMaxCapacity) return std::nullopt;
  return static_cast<DType>(kSparseQ8TypeBase | static_cast<uint32_t>(capacity));
}

int sparse_q8_capacity(DType type) {
  const uint32_t id = static_cast<uint32_t>(type);
  if ((id & 0xffffff00u) != kSparseQ8TypeBase) return 0;
  const int c = static_cast<int>(id & 0xff);
  return c >= 1 && c <= kMaxCapacity ? c : 0;
}

std::span<const TypeTraits> sparse_q8_all_traits() { return kTraits; }

const TypeTraits* find_sparse_q8_traits(uint32_t type_id) {
  const int c = sparse_q8_capacity(static_cast<DType>(type_id));
  return c == 0 ? nullptr : &kTraits[c - 1];
}

DType sparse_q8_type_for(const float* values, int64_t rows, int64_t cols) {
  const int64_t nb = cols / kSparseBlock;
  int64_t densest = 1;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t nnz = 0;
    for (int64_t i = 0; i < cols; ++i) nnz += values[r * cols + i] != 0.0f;
    densest = std::max(densest, nnz);
  }
  const int c = static_cast<int>(std::min<int64_t>(kMaxCapacity, (densest + nb - 1) / nb));
  return *sparse_q8_type(c);
}

bool sparse_q8_validate(const TypeTraits& traits, const uint8_t* data, int64_t rows, int64_t cols, std::string* why) {
  return validate(traits, data, rows, cols, why);
}

}  // namespace frugal
