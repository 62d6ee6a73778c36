// Row functions and the traits table of frugal's generic group layouts; the layout spec is in
// generic_group.h.
#include "tensor/generic_group.h"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <utility>

#include "base/check.h"
#include "tensor/fp16.h"
#include "tensor/quant_blocks.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace frugal {
namespace {

// The code stream is read and written as little-endian 64-bit words through memcpy.
static_assert(std::endian::native == std::endian::little, "generic group codes assume a little-endian host");

constexpr int kMinBits = 2, kMaxBits = 8;
constexpr int kBitWidths = kMaxBits - kMinBits + 1;
constexpr int kGroupSizes = 4;  // 32 << 0 .. 32 << 3
constexpr int kTypeCount = 2 * kBitWidths * kGroupSizes;
constexpr uint32_t kSymmetricBit = 0x1000;
constexpr uint16_t kFp16MaxFinite = 0x7bff;  // 65504

// One layout, as the id encodes it. Table index: symmetric, then bits, then group.
struct Combo {
  int bits;
  int group_log2;  // group = 32 << group_log2
  bool symmetric;
};

constexpr Combo combo_at(int index) {
  return {kMinBits + index / kGroupSizes % kBitWidths, index % kGroupSizes, index >= kBitWidths * kGroupSizes};
}

constexpr int index_of(int bits, int group_log2, bool symmetric) {
  return (symmetric ? kBitWidths * kGroupSizes : 0) + (bits - kMinBits) * kGroupSizes + group_log2;
}

constexpr uint32_t id_of(const Combo& c) {
  return kGenericTypeBase | (c.symmetric ? kSymmetricBit : 0u) | static_cast<uint32_t>(c.bits) << 4 |
         static_cast<uint32_t>(c.group_log2);
}

// "fq<bits>[s]_g<group>"; the longest, "fq8s_g256", takes 10 bytes with its terminator.
using Name = std::array<char, 12>;

constexpr Name name_of(const Combo& c) {
  Name name{};
  int k = 0;
  name[k++] = 'f';
  name[k++] = 'q';
  name[k++] = static_cast<char>('0' + c.bits);
  if (c.symmetric) name[k++] = 's';
  name[k++] = '_';
  name[k++] = 'g';
  const int group = 32 << c.group_log2;
  if (group >= 100) name[k++] = static_cast<char>('0' + group / 100);
  name[k++] = static_cast<char>('0' + group / 10 % 10);
  name[k++] = static_cast<char>('0' + group % 10);
  return name;
}

constexpr auto kNames = [] {
  std::array<Name, kTypeCount> names{};
  for (int i = 0; i < kTypeCount; ++i) names[static_cast<size_t>(i)] = name_of(combo_at(i));
  return names;
}();

// Nearest code given 1/scale, exactly as compress/format_grid computes it (clamp, then round half
// to even), so the traits' quantize_row and the min/max grid fit pick the same codes.
inline int nearest_code(float x, float offset, float inv_scale, int qmin, int qmax) {
  float t = (x - offset) * inv_scale;
  t = t >= static_cast<float>(qmin) ? t : static_cast<float>(qmin);
  t = t <= static_cast<float>(qmax) ? t : static_cast<float>(qmax);
  return static_cast<int>(std::rint(t));
}

// fp16 bits of v with magnitudes past the fp16 range saturated at 65504.
uint16_t saturated_fp16(float v) {
  uint16_t h = float_to_fp16(v);
  if ((h & 0x7fff) > kFp16MaxFinite) h = static_cast<uint16_t>((h & 0x8000) | kFp16MaxFinite);
  return h;
}

// The fp16 nearest to v whose magnitude is at least |v| (fp16 bit patterns order magnitudes).
uint16_t fp16_away_from_zero(float v) {
  uint16_t h = saturated_fp16(v);
  if (std::fabs(fp16_to_float(h)) < std::fabs(v) && (h & 0x7fff) < kFp16MaxFinite) ++h;
  return h;
}

// The largest fp16 that is <= v.
uint16_t fp16_round_down(float v) {
  uint16_t h = saturated_fp16(v);
  if (fp16_to_float(h) > v) {
    if ((h & 0x8000) == 0) {
      --h;  // positive: one step toward zero (v > 0 here, so h is not +0)
    } else if ((h & 0x7fff) < kFp16MaxFinite) {
      ++h;  // negative or -0: one step away from zero
    }
  }
  return h;
}

// Eight elements from the low 8 * Bits bits of a word of the code stream.
#if defined(__AVX2__)
// Code k sits at stream bit k * Bits, inside the 16 bits starting at byte k * Bits / 8 (its shift
// within that byte plus Bits is at most 15). One byte shuffle puts those two bytes in 32-bit lane k,
// one variable shift and a mask leave the code.
template <int Bits>
struct EightCodes {
  static constexpr std::array<int8_t, 32> kBytes = [] {
    std::array<int8_t, 32> bytes{};
    bytes.fill(-128);  // shuffle index with the top bit set: zero byte
    for (int k = 0; k < 8; ++k) {
      const int first = k * Bits / 8, lane_byte = 4 * (k % 4) + 16 * (k / 4);
      bytes[static_cast<size_t>(lane_byte)] = static_cast<int8_t>(first);
      if (first + 1 < 8) bytes[static_cast<size_t>(lane_byte + 1)] = static_cast<int8_t>(first + 1);
    }
    return bytes;
  }();
  static constexpr std::array<int32_t, 8> kShifts = [] {
    std::array<int32_t, 8> shifts{};
    for (int k = 0; k < 8; ++k) shifts[static_cast<size_t>(k)] = k * Bits % 8;
    return shifts;
  }();
};

template <int Bits, bool Symmetric>
inline void decode_eight(uint64_t word, float scale, float offset, float* y) {
  using Codes = EightCodes<Bits>;
  // The word is in both 128-bit halves, so the in-lane byte shuffle reaches all of it.
  const __m256i both = _mm256_set1_epi64x(static_cast<long long>(word));
  const __m256i bytes = _mm256_shuffle_epi8(both, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Codes::kBytes.data())));
  __m256i q = _mm256_srlv_epi32(bytes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Codes::kShifts.data())));
  q = _mm256_and_si256(q, _mm256_set1_epi32((1 << Bits) - 1));
  if constexpr (Symmetric) q = _mm256_sub_epi32(q, _mm256_set1_epi32(1 << (Bits - 1)));
  const __m256 product = _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(q));
  _mm256_storeu_ps(y, _mm256_add_ps(product, _mm256_set1_ps(offset)));
}
#else
template <int Bits, bool Symmetric>
inline void decode_eight(uint64_t word, float scale, float offset, float* y) {
  constexpr uint64_t kMask = (uint64_t{1} << Bits) - 1;
  constexpr int kBias = Symmetric ? 1 << (Bits - 1) : 0;
  for (int k = 0; k < 8; ++k) {
    const int q = static_cast<int>(word >> (k * Bits) & kMask) - kBias;
    y[k] = scale * static_cast<float>(q) + offset;
  }
}
#endif

// Decodes one block of Group elements (layout in generic_group.h). Eight codes fill exactly Bits
// bytes starting at byte c * Bits of the codes. Each group of eight is one unaligned 64-bit load;
// near the end of the block, where 8 bytes would run past the codes, the load takes the last 8
// code bytes instead (there are always at least 8) and shifts the wanted bytes down.
template <int Bits, bool Symmetric, int Group>
inline void decode_block(const uint8_t* block, float* y) {
  constexpr int kCodeBytes = Group * Bits / 8;
  static_assert(kCodeBytes >= 8);
  uint16_t h;
  std::memcpy(&h, block, sizeof h);
  const float scale = fp16_to_float(h);
  float offset = 0.0f;
  if constexpr (!Symmetric) {
    std::memcpy(&h, block + 2, sizeof h);
    offset = fp16_to_float(h);
  }
  const uint8_t* codes = block + (Symmetric ? 2 : 4);
  for (int c = 0; c < Group / 8; ++c) {
    const int start = c * Bits;
    uint64_t word;
    if (start + 8 <= kCodeBytes) {
      std::memcpy(&word, codes + start, sizeof word);
    } else {
      std::memcpy(&word, codes + kCodeBytes - 8, sizeof word);
      word >>= 8 * (start - (kCodeBytes - 8));
    }
    decode_eight<Bits, Symmetric>(word, scale, offset, y + 8 * c);
  }
}

// The three row functions of one layout.
template <int Bits, bool Symmetric, int Group>
struct RowFunctions {
  static constexpr GenericGroupFormat kFormat{Bits, Group, Symmetric};
  static constexpr size_t kBlockBytes = kFormat.block_bytes();

  static void dequantize(const void* src, float* dst, int64_t n) {
    FRUGAL_CHECK(n % Group == 0);
    const uint8_t* block = static_cast<const uint8_t*>(src);
    for (int64_t b = 0; b < n / Group; ++b) decode_block<Bits, Symmetric, Group>(block + b * kBlockBytes, dst + b * Group);
  }

  static void quantize(const float* src, void* dst, int64_t n) {
    FRUGAL_CHECK(n % Group == 0);
    uint8_t* block = static_cast<uint8_t*>(dst);
    int16_t q[Group];
    for (int64_t b = 0; b < n / Group; ++b) {
      const float* x = src + b * Group;
      const GenericGroupParams p = generic_group_minmax(x, Group, Bits, Symmetric);
      const float scale = fp16_to_float(p.scale);
      const float offset = Symmetric ? 0.0f : fp16_to_float(p.offset);
      const float inv = scale != 0.0f ? 1.0f / scale : 0.0f;
      for (int i = 0; i < Group; ++i) {
        q[i] = static_cast<int16_t>(nearest_code(x[i], offset, inv, kFormat.qmin(), kFormat.qmax()));
      }
      encode_generic_group_block(kFormat, p, q, block + b * kBlockBytes);
    }
  }

  static float dot(const void* row, const float* x, int64_t n) {
    FRUGAL_CHECK(n % Group == 0);
    const uint8_t* block = static_cast<const uint8_t*>(row);
    float decoded[Group];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / Group; ++b) {
      decode_block<Bits, Symmetric, Group>(block + b * kBlockBytes, decoded);
      sum += quant::dot_fixed<Group>(decoded, x + b * Group);
    }
    return sum;
  }
};

template <int Index>
constexpr TypeTraits traits_at() {
  constexpr Combo c = combo_at(Index);
  using Row = RowFunctions<c.bits, c.symmetric, (32 << c.group_log2)>;
  return TypeTraits{static_cast<DType>(id_of(c)), kNames[Index].data(), 32 << c.group_log2, Row::kBlockBytes,
                    &Row::dequantize, &Row::quantize, &Row::dot};
}

template <int... Index>
constexpr std::array<TypeTraits, kTypeCount> make_table(std::integer_sequence<int, Index...>) {
  return {traits_at<Index>()...};
}

constexpr std::array<TypeTraits, kTypeCount> kTable = make_table(std::make_integer_sequence<int, kTypeCount>{});

int group_log2_of(int64_t group) {
  for (int k = 0; k < kGroupSizes; ++k) {
    if (group == int64_t{32} << k) return k;
  }
  return -1;
}

}  // namespace

std::optional<DType> generic_group_type(int bits, int64_t group, bool symmetric) {
  const int log2 = group_log2_of(group);
  if (bits < kMinBits || bits > kMaxBits || log2 < 0) return std::nullopt;
  return static_cast<DType>(id_of({bits, log2, symmetric}));
}

std::optional<GenericGroupFormat> generic_group_format(DType type) {
  if (find_generic_group_traits(static_cast<uint32_t>(type)) == nullptr) return std::nullopt;
  const uint32_t low = static_cast<uint32_t>(type) & 0xffff;
  return GenericGroupFormat{static_cast<int>(low >> 4 & 0xf), int64_t{32} << (low & 0xf), (low & kSymmetricBit) != 0};
}

std::span<const TypeTraits> generic_group_all_traits() { return kTable; }

const TypeTraits* find_generic_group_traits(uint32_t type_id) {
  if ((type_id & 0xffff0000u) != kGenericTypeBase) return nullptr;
  const uint32_t low = type_id & 0xffff;
  if ((low & ~(kSymmetricBit | 0xffu)) != 0) return nullptr;
  const int bits = static_cast<int>(low >> 4 & 0xf);
  const int log2 = static_cast<int>(low & 0xf);
  if (bits < kMinBits || bits > kMaxBits || log2 >= kGroupSizes) return nullptr;
  return &kTable[static_cast<size_t>(index_of(bits, log2, (low & kSymmetricBit) != 0))];
}

GenericGroupParams generic_group_minmax(const float* x, int64_t n, int bits, bool symmetric) {
  FRUGAL_CHECK(bits >= kMinBits && bits <= kMaxBits && n > 0);
  GenericGroupParams p;
  if (symmetric) {
    const float m = quant::signed_absmax(x, static_cast<int>(n));
    p.scale = fp16_away_from_zero(m / static_cast<float>(-(1 << (bits - 1))));
  } else {
    float lo, hi;
    quant::min_max(x, static_cast<int>(n), &lo, &hi);
    p.offset = fp16_round_down(lo);
    p.scale = fp16_away_from_zero((hi - fp16_to_float(p.offset)) / static_cast<float>((1 << bits) - 1));
  }
  return p;
}

void encode_generic_group_block(const GenericGroupFormat& format, GenericGroupParams params, const int16_t* q,
                                void* out) {
  uint8_t* block = static_cast<uint8_t*>(out);
  std::memcpy(block, &params.scale, sizeof params.scale);
  if (!format.symmetric) std::memcpy(block + 2, &params.offset, sizeof params.offset);
  uint8_t* codes = block + (format.symmetric ? 2 : 4);
  const int bias = format.symmetric ? 1 << (format.bits - 1) : 0;
  for (int64_t i = 0; i < format.group; i += 8) {
    uint64_t word = 0;
    for (int k = 0; k < 8; ++k) {
      const int v = q[i + k];
      FRUGAL_CHECK(v >= format.qmin() && v <= format.qmax());
      word |= static_cast<uint64_t>(v + bias) << (k * format.bits);
    }
    std::memcpy(codes + i / 8 * format.bits, &word, static_cast<size_t>(format.bits));
  }
}

}  // namespace frugal
