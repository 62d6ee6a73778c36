// frugal's own stored weight layouts for generic group quantization (2 to 8 bits, groups of 32 to
// 256 elements, symmetric or asymmetric): layouts llama.cpp has no type for, e.g. 3-bit with groups
// of 128. They are GGUF tensor types with ids outside GGML's range, registered in the one traits
// table (tensor/dtype.h), so frugal loads, runs and writes them like any other format. llama.cpp
// cannot load files that use them.
//
// Format spec.
//
//   Type id    0x46510000 ("FQ" in the high half) | 0x1000 if symmetric | bits << 4 | log2(group / 32)
//              bits in {2, ..., 8}, group in {32, 64, 128, 256}; no other id near the base is valid.
//   Name       "fq<bits>[s]_g<group>", e.g. fq3_g128 (asymmetric), fq3s_g128 (symmetric).
//   Block      one block per group of `group` consecutive elements of a row, no padding:
//                [fp16 scale][fp16 offset, asymmetric only][codes: group * bits / 8 bytes]
//              fp16 fields are little-endian IEEE binary16. The codes are a little-endian bit
//              stream: element i of the group occupies stream bits [i * bits, (i + 1) * bits),
//              stream bit k being bit (k % 8) of code byte k / 8.
//   Decoding   asymmetric: stored code u in [0, 2^bits - 1] is q = u; value = scale * q + offset.
//              symmetric:  stored u = q + 2^(bits-1) for a signed q in [-2^(bits-1), 2^(bits-1) - 1];
//                          value = scale * q + 0.0f (offset zero).
//              Computed in float exactly as compress::AffineGrid::value computes it. The product is
//              exact (an 11-bit fp16 significand times a code of at most 8 bits fits a float), so
//              the value is scale * q + offset rounded once, whether or not the compiler fuses the
//              multiply-add; quantizers that pick codes on such a grid get back bit-identical
//              weights from dequantize_row.
//
// The traits' quantize_row is plain min/max round-to-nearest (generic_group_minmax below, then the
// nearest code); calibrated quantizers (GPTQ, AWQ) fit their own grids and encode them with
// encode_generic_group_block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "tensor/dtype.h"

namespace frugal {

inline constexpr uint32_t kGenericTypeBase = 0x46510000;  // "FQ"

struct GenericGroupFormat {
  int bits = 4;         // 2..8
  int64_t group = 128;  // 32, 64, 128 or 256 elements per block
  bool symmetric = false;

  // Range of the code q in value = scale * q + offset.
  constexpr int qmin() const { return symmetric ? -(1 << (bits - 1)) : 0; }
  constexpr int qmax() const { return symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1; }
  constexpr size_t block_bytes() const {
    return (symmetric ? 2 : 4) + static_cast<size_t>(group * bits / 8);
  }
};

// The type storing that layout, or nullopt when bits or group are outside the ranges above.
std::optional<DType> generic_group_type(int bits, int64_t group, bool symmetric);
// The layout of a generic group type, or nullopt for any other type.
std::optional<GenericGroupFormat> generic_group_format(DType type);
// The traits of a generic group type id, or nullptr for any other id (used by find_type_traits).
const TypeTraits* find_generic_group_traits(uint32_t type_id);
// Every generic group type (the codec table's member list).
std::span<const TypeTraits> generic_group_all_traits();

// fp16 bits of one block's scale and offset (offset unused by symmetric layouts).
struct GenericGroupParams {
  uint16_t scale = 0;
  uint16_t offset = 0;
};

// The min/max parameters of n values for codes of `bits` bits: what quantize_row stores.
// Asymmetric: offset = the block minimum rounded down to fp16, scale = (max - offset) / qmax
// rounded up to fp16. Symmetric: scale = m / qmin rounded away from zero to fp16, m the value of
// largest magnitude (so m gets code qmin, the end of the code range with the extra level, as
// ggml's Q4_0 does; values of the other sign beyond scale * qmax clip to qmax). The directed
// rounding keeps the fp16 grid covering the values, so every value not clipped that way lies
// within half a step of the grid. Magnitudes past the fp16 range saturate at 65504.
GenericGroupParams generic_group_minmax(const float* x, int64_t n, int bits, bool symmetric);

// Packs one block: the parameters and `format.group` codes q, each in [qmin, qmax] (checked).
void encode_generic_group_block(const GenericGroupFormat& format, GenericGroupParams params,
                                const int16_t* q, void* out);

}  // namespace frugal
