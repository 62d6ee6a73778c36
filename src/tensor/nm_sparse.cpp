// Row functions, validation and the traits table of the N:M sparse formats; the spec is in
// nm_sparse.h.
#include "tensor/nm_sparse.h"

#include <algorithm>
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

constexpr int slot_bytes(int bits) { return kNmSlot * bits / 8; }

// Value k of a slot.
template <int Bits>
int value_at(const uint8_t* slot, int k) {
  if constexpr (Bits == 8) {
    return static_cast<int8_t>(slot[k]);
  } else {
    return ((k & 1 ? slot[k / 2] >> 4 : slot[k / 2]) & 0x0f) - 8;
  }
}

template <int Bits>
void dequantize(const void* src, float* dst, int64_t n) {
  const NmRow r = nm_row(static_cast<const uint8_t*>(src), n);
  for (int64_t b = 0; b < r.blocks; ++b) {
    uint64_t m = load_mask(r.masks + 8 * b);
    const float s = load_scale(r.scales + 2 * b);
    const uint8_t* slot = r.values + b * slot_bytes(Bits);
    float* out = dst + b * kSparseBlock;
    std::fill(out, out + kSparseBlock, 0.0f);
    for (int k = 0; m != 0; ++k, m &= m - 1) out[std::countr_zero(m)] = s * static_cast<float>(value_at<Bits>(slot, k));
  }
}

template <int Bits, int N, int M>
void quantize(const float* src, void* dst_v, int64_t n) {
  uint8_t* dst = static_cast<uint8_t*>(dst_v);
  const int64_t nb = n / kSparseBlock;
  constexpr int qmax = Bits == 8 ? 127 : 7;
  std::memset(dst, 0, static_cast<size_t>(nb * (10 + slot_bytes(Bits))));
  for (int64_t b = 0; b < nb; ++b) {
    const float* x = src + b * kSparseBlock;
    // The N largest magnitudes of each group of M (ties by column), non-zero ones only.
    uint64_t keep = 0;
    for (int g = 0; g < kSparseBlock; g += M) {
      int idx[M];
      for (int j = 0; j < M; ++j) idx[j] = g + j;
      // Ties by column, spelled out: std::sort, not std::stable_sort, whose temporary buffer GCC 12's
      // libstdc++ frees in a way AddressSanitizer reports as an alloc-dealloc mismatch.
      std::sort(idx, idx + M, [&](int a, int c) {
        const float fa = std::fabs(x[a]), fc = std::fabs(x[c]);
        return fa > fc || (fa == fc && a < c);
      });
      for (int j = 0; j < N; ++j) {
        if (x[idx[j]] != 0.0f) keep |= uint64_t{1} << idx[j];
      }
    }
    float amax = 0.0f;
    for (int j = 0; j < kSparseBlock; ++j) {
      if (keep >> j & 1) amax = std::max(amax, std::fabs(x[j]));
    }
    const uint16_t h = float_to_fp16(amax / static_cast<float>(qmax));
    const float s = fp16_to_float(h);
    const float inv = s > 0.0f ? 1.0f / s : 0.0f;
    uint64_t mask = 0;
    uint8_t* slot = dst + nb * 10 + b * slot_bytes(Bits);
    int k = 0;
    for (int j = 0; j < kSparseBlock; ++j) {
      if (!(keep >> j & 1)) continue;
      const int q = static_cast<int>(std::clamp(std::nearbyint(x[j] * inv), static_cast<float>(-qmax), static_cast<float>(qmax)));
      if (q == 0) continue;  // rounds to zero: stored as a zero (mask bit clear)
      mask |= uint64_t{1} << j;
      if constexpr (Bits == 8) {
        slot[k] = static_cast<uint8_t>(static_cast<int8_t>(q));
      } else {
        slot[k / 2] |= static_cast<uint8_t>((q + 8) << (k & 1 ? 4 : 0));
      }
      ++k;
    }
    std::memcpy(dst + 8 * b, &mask, 8);
    std::memcpy(dst + nb * 8 + 2 * b, &h, 2);
  }
}

template <int Bits>
float dot(const void* row, const float* x, int64_t n) {
  const NmRow r = nm_row(static_cast<const uint8_t*>(row), n);
  float sum = 0.0f;
  for (int64_t b = 0; b < r.blocks; ++b) {
    uint64_t m = load_mask(r.masks + 8 * b);
    const uint8_t* slot = r.values + b * slot_bytes(Bits);
    const float* xb = x + b * kSparseBlock;
    float part = 0.0f;
    for (int k = 0; m != 0; ++k, m &= m - 1) part += static_cast<float>(value_at<Bits>(slot, k)) * xb[std::countr_zero(m)];
    sum += load_scale(r.scales + 2 * b) * part;
  }
  return sum;
}

template <int Bits, int N, int M>
bool validate(const TypeTraits& traits, const uint8_t* data, int64_t rows, int64_t cols, std::string* why) {
  constexpr uint64_t group = (uint64_t{1} << M) - 1;
  return sparse_rows::validate_rows(traits, data, rows, cols, why, [&](const uint8_t* bytes, std::string* problem) {
    const NmRow row = nm_row(bytes, cols);
    for (int64_t b = 0; b < row.blocks; ++b) {
      const uint64_t m = load_mask(row.masks + 8 * b);
      for (int g = 0; g < kSparseBlock; g += M) {
        if (std::popcount(m >> g & group) > N) {
          *problem = "block " + std::to_string(b) + " has more than " + std::to_string(N) + " mask bits set in the group of " +
                     std::to_string(M) + " at " + std::to_string(g);
          return false;
        }
      }
      const int k = std::popcount(m);  // at most 32 by the group check
      const uint8_t* slot = row.values + b * slot_bytes(Bits);
      for (int i = 0; i < kNmSlot; ++i) {
        const int raw = Bits == 8 ? static_cast<int8_t>(slot[i]) : (i & 1 ? slot[i / 2] >> 4 : slot[i / 2]) & 0x0f;
        const bool bad = i < k ? (Bits == 8 ? raw == 0 || raw == -128 : raw == 0 || raw == 8) : raw != 0;
        if (bad) {
          *problem = "block " + std::to_string(b) +
                     (i < k ? " stores a code " + std::to_string(raw) + " outside the format's non-zero codes"
                            : " has a non-zero code past its " + std::to_string(k) + " values");
          return false;
        }
      }
    }
    return true;
  });
}

template <int Bits, int N, int M>
constexpr TypeTraits make(const char* name) {
  return TypeTraits{static_cast<DType>(kNmTypeBase | Bits << 8 | N << 4 | M), name, kSparseBlock,
                    static_cast<size_t>(10 + slot_bytes(Bits)), dequantize<Bits>, quantize<Bits, N, M>, dot<Bits>,
                    validate<Bits, N, M>};
}

constexpr TypeTraits kTraits[] = {make<8, 2, 4>("nm_q8_2of4"), make<8, 4, 8>("nm_q8_4of8"), make<4, 2, 4>("nm_q4_2of4"),
                                  make<4, 4, 8>("nm_q4_4of8")};

}  // namespace

std::optional<DType> nm_type(int bits, int n, int m) {
  if ((bits != 8 && bits != 4) || !((n == 2 && m == 4) || (n == 4 && m == 8))) return std::nullopt;
  return static_cast<DType>(kNmTypeBase | static_cast<uint32_t>(bits << 8 | n << 4 | m));
}

NmPattern nm_pattern(DType type) {
  const TypeTraits* t = find_nm_traits(static_cast<uint32_t>(type));
  if (t == nullptr) return {};
  const uint32_t id = static_cast<uint32_t>(type);
  return {static_cast<int>(id >> 8 & 0xff), static_cast<int>(id >> 4 & 0xf), static_cast<int>(id & 0xf)};
}

std::span<const TypeTraits> nm_all_traits() { return kTraits; }

const TypeTraits* find_nm_traits(uint32_t type_id) {
  for (const TypeTraits& t : kTraits) {
    if (static_cast<uint32_t>(t.type) == type_id) return &t;
  }
  return nullptr;
}

std::optional<DType> nm_type_for(int bits, const float* values, int64_t rows, int64_t cols, std::string* why) {
  if (cols % kSparseBlock != 0) {
    *why = "rows of " + std::to_string(cols) + " weights, not a multiple of 64";
    return std::nullopt;
  }
  for (const auto& [n, m] : {std::pair{2, 4}, std::pair{4, 8}}) {
    bool fits = true;
    for (int64_t i = 0; i < rows * cols && fits; i += m) {
      int nnz = 0;
      for (int j = 0; j < m; ++j) nnz += values[i + j] != 0.0f;
      fits = nnz <= n;
    }
    if (fits) return nm_type(bits, n, m);
  }
  *why = "the weights are not 2:4 or 4:8 sparse (prune with --pattern 2:4 or 4:8 first)";
  return std::nullopt;
}

}  // namespace frugal
