// sparse-q4: frugal's bitmask sparse 4-bit weight format (issue 10). The 4-bit sibling of
// sparse-q8 (tensor/sparse_q8.h): a 1-bit mask per weight plus the non-zero weights packed as
// 4-bit codes with one fp16 scale per 64 weights, so 50% sparse needs 3.25 bits per weight
// against Q4_0's 4.5.
//
// Format spec.
//
//   Type id    0x53340000 ("S4" in the high half) | c, for an even capacity c in {2, 4, ..., 64}:
//              the row holds at most c codes per 64 weights on average, counting the pad nibble of
//              a block with an odd number of codes (see Row). As for sparse-q8, one id per
//              capacity keeps rows the same size while the non-zeros may be spread unevenly over
//              the blocks; the writer picks the smallest c that fits the densest row
//              (sparse_q4_type_for).
//   Name       "sparse_q4_c<c>" (the command line name "sparse-q4" picks c from the data).
//   Row        a row of n weights (n a multiple of 64) has nb = n / 64 blocks and
//              n / 64 * (10 + c / 2) bytes, in three parts, little-endian, no alignment:
//                masks   nb x uint64: bit j of mask b set <=> weight 64 b + j is non-zero
//                scales  nb x fp16:   block scale s_b
//                codes   nb * c / 2 bytes: for each block in order, its k_b = popcount(mask b)
//                        4-bit codes in column order, two per byte (the first in the low
//                        nibble), in ceil(k_b / 2) bytes: a block with an odd k_b ends with a
//                        zero high nibble, so every block starts on a byte (the kernels unpack
//                        a block with one byte-aligned load and need no nibble shift). Then
//                        zero bytes up to nb * c / 2.
//              weight 64 b + j = s_b * (u - 8) if bit j of mask b is set (u the next code),
//              else 0. A stored code u is in [1, 15] and not 8 (the values -7..7 without 0;
//              symmetric, so the kernels need no per-row sum of the activations under the mask,
//              which a block minimum would cost).
//   Valid      the sum of ceil(popcount(mask b) / 2) over a row is at most nb * c / 2 (checked for
//              every row by the loader, so kernels read codes without bounds checks); pad nibbles
//              and trailing bytes are zero; codes are in [1, 15] \ {8}.
//   bpw        (64 + 16 + 4 c) / 64: c = 32 (50% sparse) 3.25, c = 20 (70%) 2.5, c = 64 5.25.
//              The pad nibbles cost nothing when every block holds an even count (the reference
//              quantizer's "c largest of every 64"); with counts spread at random over the blocks
//              half of them are odd, about 0.03 bpw, and per-row pruning to exactly half of
//              4096 columns then needs c = 34 (3.375 bpw).
//
// The reference quantize_row uses s_b = max |w| / 7 over the block (fp16), u = round(w / s_b) + 8;
// weights that round to 0 are stored as zeros (mask bit clear). A row with more non-zeros than its
// capacity keeps the largest magnitudes that fit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "tensor/dtype.h"
#include "tensor/sparse_q8.h"

namespace frugal {

inline constexpr uint32_t kSparseQ4TypeBase = 0x53340000;  // "S4"

// The type of capacity c (even, 2..64), or nullopt.
std::optional<DType> sparse_q4_type(int capacity);
// The capacity of a sparse-q4 type, or 0 for any other type.
int sparse_q4_capacity(DType type);
inline bool is_sparse_q4(DType type) { return sparse_q4_capacity(type) != 0; }
// Either bitmask sparse family (sparse-q8 or sparse-q4).
inline bool is_bitmask_sparse(DType type) { return is_sparse_q8(type) || is_sparse_q4(type); }
// The traits of a sparse-q4 type id, or nullptr (used by find_type_traits).
const TypeTraits* find_sparse_q4_traits(uint32_t type_id);
// Every sparse-q4 type, capacity 2 first (the codec table's member list).
std::span<const TypeTraits> sparse_q4_all_traits();
// The smallest-capacity sparse-q4 type that stores every row of a rows x cols matrix without
// dropping a non-zero (cols a multiple of 64).
DType sparse_q4_type_for(const float* values, int64_t rows, int64_t cols);

// Row access for kernels: the parts of row `row` of n weights. Block b's codes start at the
// running byte offset sum over earlier blocks of (popcount + 1) / 2.
struct SparseQ4Row {
  const uint8_t* masks;   // nb x uint64 (unaligned)
  const uint8_t* scales;  // nb x fp16 (unaligned)
  const uint8_t* codes;
  const uint8_t* codes_end;  // end of the row
  int64_t blocks;
};
inline SparseQ4Row sparse_q4_row(const uint8_t* row, int64_t n, int capacity) {
  const int64_t nb = n / kSparseBlock;
  return {row, row + nb * 8, row + nb * 10, row + nb * (10 + capacity / 2), nb};
}

}  // namespace frugal
