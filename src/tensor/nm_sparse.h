// nm-q8 / nm-q4: frugal's N:M sparse weight formats (issue 10): at most N non-zeros in every M
// consecutive weights of a row (2:4 and 4:8, half the weights), the kept values stored as int8 or
// 4-bit codes at a fixed place per block, so the kernels need no running offsets and no capacity.
//
// Format spec.
//
//   Type ids   0x4E4D0000 ("NM") | bits << 8 | N << 4 | M, bits in {8, 4}, N:M in {2:4, 4:8}.
//   Names      "nm_q8_2of4", "nm_q8_4of8", "nm_q4_2of4", "nm_q4_4of8" (the command line names
//              "nm-q8" and "nm-q4" pick the pattern from the data: 2:4 if every group of 4 holds at
//              most 2 non-zeros, else 4:8 if every group of 8 holds at most 4).
//   Positions  the N positions in a group of M are stored as the group's M bits of a 64-bit mask per
//              64 weights (bit j set <=> weight j is kept). For 2:4 that is 4 bits per group, the
//              same as two 2-bit positions; for 4:8 8 bits, less than four 3-bit positions (12):
//              a bitmask is never larger than the position list at these ratios, and it is what
//              the decode kernels use directly (vpexpandb takes the mask as is; positions would
//              first have to be turned into one).
//   Row        a row of n weights (n a multiple of 64) has nb = n / 64 blocks and nb * (10 + 32 *
//              bits / 8) bytes, little-endian, no alignment:
//                masks   nb x uint64, at most N bits set in each aligned group of M bits
//                scales  nb x fp16: block scale s_b
//                values  nb slots of 32 values (64 * N / M), block b's slot at 32 b: its
//                        popcount(mask b) values in column order, then zeros. bits = 8: int8 codes
//                        q in [-127, 127] \ {0}; bits = 4: two codes per byte (first in the low
//                        nibble), u in [1, 15] \ {8}, q = u - 8.
//              weight 64 b + j = s_b * q if bit j of mask b is set (q the next value), else 0.
//   Valid      every group of M mask bits has at most N set; codes as above; padding zero.
//   bpw        nm-q8 (64 + 16 + 256) / 64 = 5.25, nm-q4 (64 + 16 + 128) / 64 = 3.25.
//
// The reference quantize_row keeps the N largest magnitudes of every group of M (so any row can be
// stored) and uses s_b = max |w| / 127 (int8) or / 7 (4-bit) over the kept weights of the block.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "tensor/dtype.h"
#include "tensor/sparse_q8.h"

namespace frugal {

inline constexpr uint32_t kNmTypeBase = 0x4E4D0000;  // "NM"
inline constexpr int kNmSlot = 32;                    // values per 64-block (N / M = 1 / 2)

struct NmPattern {
  int bits = 0;  // 8 or 4; 0: not an N:M type
  int n = 0;
  int m = 0;
};

// The type of bits (8 or 4) and N:M (2:4 or 4:8), or nullopt.
std::optional<DType> nm_type(int bits, int n, int m);
// The pattern of an N:M type, bits == 0 for any other type.
NmPattern nm_pattern(DType type);
inline bool is_nm_sparse(DType type) { return nm_pattern(type).bits != 0; }
// The traits of an N:M type id, or nullptr (used by find_type_traits).
const TypeTraits* find_nm_traits(uint32_t type_id);
// Every N:M type: nm_q8_2of4, nm_q8_4of8, nm_q4_2of4, nm_q4_4of8 (the codec table's member lists).
std::span<const TypeTraits> nm_all_traits();
// The N:M type of `bits` whose pattern every row of the matrix already follows (2:4 before 4:8),
// or an empty optional with the reason in *why.
std::optional<DType> nm_type_for(int bits, const float* values, int64_t rows, int64_t cols, std::string* why);

// Row access for kernels.
struct NmRow {
  const uint8_t* masks;   // nb x uint64 (unaligned)
  const uint8_t* scales;  // nb x fp16 (unaligned)
  const uint8_t* values;  // nb slots of kNmSlot * bits / 8 bytes
  int64_t blocks;
};
inline NmRow nm_row(const uint8_t* row, int64_t n) {
  const int64_t nb = n / kSparseBlock;
  return {row, row + nb * 8, row + nb * 10, nb};
}

}  // namespace frugal
