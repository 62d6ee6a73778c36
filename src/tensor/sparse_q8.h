// sparse-q8: frugal's bitmask sparse int8 weight format (issue 10). Pruned matrices keep only
// their non-zero weights, a 1-bit mask per weight says where they are, so decode (bound by memory
// bandwidth) reads fewer bytes: 50% sparse needs 5.25 bits per weight against Q8_0's 8.5.
//
// Format spec.
//
//   Type id    0x53510000 ("SQ" in the high half) | c, for a capacity c in {1, ..., 64}: the row
//              holds at most c non-zero values per 64 weights on average. One id per capacity keeps
//              every row the same size (rows are found by index, as for every other type) while
//              the non-zeros of a row may be spread unevenly over its blocks. The writer picks the
//              smallest c that fits the densest row of the matrix (sparse_q8_type_for); Wanda and
//              magnitude-per-row pruning give every row the same count, so no space is lost.
//   Name       "sparse_q8_c<c>" (the command line name "sparse-q8" picks c from the data).
//   Row        a row of n weights (n a multiple of 64) has nb = n / 64 blocks and n / 64 * (10 + c)
//              bytes, in three parts, all little-endian, no alignment:
//                masks   nb x uint64: bit j of mask b set <=> weight 64 b + j is non-zero
//                scales  nb x fp16:   block scale s_b
//                values  nb * c int8: the non-zero codes of the row in column order (block 0's
//                                     popcount(mask 0) codes, then block 1's, ...), then zero
//                                     padding up to nb * c bytes.
//              weight 64 b + j = s_b * q if bit j of mask b is set (q the next code), else 0.
//              A stored code is in [-127, 127] and never 0 (a zero weight has its mask bit clear).
//   Valid      the sum of popcount(mask b) over a row is at most nb * c (the loader checks every row
//              of every sparse tensor, so kernels may read values without bounds checks), and the
//              padding is zero.
//   bpw        (64 + 16 + 8 c) / 64: c = 32 (50% sparse) 5.25, c = 20 (70%) 3.75, c = 64 9.25.
//
// The reference quantize_row uses s_b = max |w| / 127 over the block (fp16), q = round(w / s_b);
// when the row has more non-zeros than nb * c it keeps the largest magnitudes (magnitude pruning
// down to the capacity), so any type can store any row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "tensor/dtype.h"

namespace frugal {

inline constexpr uint32_t kSparseQ8TypeBase = 0x53510000;  // "SQ"
inline constexpr int kSparseBlock = 64;

// The type of capacity c (1..64), or nullopt.
std::optional<DType> sparse_q8_type(int capacity);
// The capacity of a sparse-q8 type, or 0 for any other type.
int sparse_q8_capacity(DType type);
inline bool is_sparse_q8(DType type) { return sparse_q8_capacity(type) != 0; }
// The traits of a sparse-q8 type id, or nullptr (used by find_type_traits).
const TypeTraits* find_sparse_q8_traits(uint32_t type_id);
// Every sparse-q8 type, capacity 1 first (the codec table's member list).
std::span<const TypeTraits> sparse_q8_all_traits();
// The smallest-capacity sparse-q8 type that stores every row of a rows x cols matrix without
// dropping a non-zero (cols a multiple of 64).
DType sparse_q8_type_for(const float* values, int64_t rows, int64_t cols);
// Checks rows x cols stored weights of a sparse-q8 type (see Valid above); the message says which
// row is broken.
bool sparse_q8_validate(const TypeTraits& traits, const uint8_t* data, int64_t rows, int64_t cols, std::string* why);

// Row access for kernels: the parts of row `row` of n weights.
struct SparseQ8Row {
  const uint8_t* masks;   // nb x uint64 (unaligned)
  const uint8_t* scales;  // nb x fp16 (unaligned)
  const int8_t* values;
  const int8_t* values_end;  // end of the row
  int64_t blocks;
};
inline SparseQ8Row sparse_q8_row(const uint8_t* row, int64_t n, int capacity) {
  const int64_t nb = n / kSparseBlock;
  return {row, row + nb * 8, reinterpret_cast<const int8_t*>(row + nb * 10),
          reinterpret_cast<const int8_t*>(row + nb * (10 + capacity)), nb};
}

}  // namespace frugal
