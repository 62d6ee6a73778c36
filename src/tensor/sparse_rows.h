// Shared pieces of frugal's sparse row formats (sparse-q8, sparse-q4, nm-q8/nm-q4): unaligned mask
// and scale loads, the generated "<prefix><capacity>" type names, and the row loop of the loader
// checks with its "row N ..." message.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

#include "tensor/dtype.h"
#include "tensor/fp16.h"

namespace frugal::sparse_rows {

static_assert(std::endian::native == std::endian::little, "sparse masks and scales assume a little-endian host");

// The 64-bit mask at p (unaligned).
inline uint64_t load_mask(const uint8_t* p) {
  uint64_t m;
  std::memcpy(&m, p, 8);
  return m;
}

// The fp16 scale at p (unaligned), as a float.
inline float load_scale(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_float(h);
}

// A type name such as "sparse_q8_c32" (at most 15 characters and the terminator).
using TypeName = std::array<char, 16>;

// Names prefix + c for c = step, 2 step, ..., Count * step (c < 100), built at compile time so
// the traits tables can point at them.
template <size_t Count>
constexpr std::array<TypeName, Count> capacity_names(const char* prefix, int step) {
  std::array<TypeName, Count> names{};
  for (size_t i = 0; i < Count; ++i) {
    const int c = static_cast<int>(i + 1) * step;
    TypeName& name = names[i];
    size_t k = 0;
    for (; prefix[k] != '\0'; ++k) name[k] = prefix[k];
    if (c >= 10) name[k++] = static_cast<char>('0' + c / 10);
    name[k++] = static_cast<char>('0' + c % 10);
  }
  return names;
}

// True when every byte in [begin, end) is zero (the padding rule of every sparse format).
inline bool all_zero(const uint8_t* begin, const uint8_t* end) {
  for (const uint8_t* p = begin; p < end; ++p) {
    if (*p != 0) return false;
  }
  return true;
}

// The validate hook of a sparse format: runs check(row_bytes_pointer, &problem) on each of `rows`
// rows; the first that fails refuses the tensor with "row R <problem>".
template <class CheckRow>
bool validate_rows(const TypeTraits& traits, const uint8_t* data, int64_t rows, int64_t cols, std::string* why,
                   CheckRow check) {
  const size_t stride = row_bytes(traits, cols);
  std::string problem;
  for (int64_t r = 0; r < rows; ++r) {
    if (!check(data + static_cast<size_t>(r) * stride, &problem)) {
      *why = "row " + std::to_string(r) + " " + problem;
      return false;
    }
  }
  return true;
}

}  // namespace frugal::sparse_rows
