// The codec table (weight_codec.h): one entry per stored weight format, and the type lookup that
// derives from it (find_type_traits, type_traits, ggml_type_name's frugal ids).
#include "tensor/weight_codec.h"

#include "base/check.h"
#include "tensor/generic_group.h"
#include "tensor/nm_sparse.h"
#include "tensor/sparse_q4.h"
#include "tensor/sparse_q8.h"

namespace frugal {
namespace {

// A plain GGML type: one id, its traits in dtype.cpp's table.
template <DType T>
const TypeTraits* find_one(uint32_t type_id) {
  return type_id == static_cast<uint32_t>(T) ? find_ggml_traits(type_id) : nullptr;
}
template <DType T>
std::span<const TypeTraits> one() {
  return {find_ggml_traits(static_cast<uint32_t>(T)), 1};
}

template <int Bits>
const TypeTraits* find_nm(uint32_t type_id) {
  const TypeTraits* t = find_nm_traits(type_id);
  return t != nullptr && nm_pattern(t->type).bits == Bits ? t : nullptr;
}
template <int Bits>
std::span<const TypeTraits> nm_members() {
  const std::span<const TypeTraits> all = nm_all_traits();
  return Bits == 8 ? all.first(2) : all.last(2);  // nm_sparse.cpp lists the 8-bit pair first
}

// The bitmask families fit their capacity to the densest row (tensor/sparse_q8.h, sparse_q4.h);
// a row length that is not a multiple of 64 is left to the caller's block check.
std::optional<DType> fit_sparse_q8(DType requested, const float* values, int64_t rows, int64_t cols, std::string*) {
  return cols % kSparseBlock == 0 ? sparse_q8_type_for(values, rows, cols) : requested;
}
std::optional<DType> fit_sparse_q4(DType requested, const float* values, int64_t rows, int64_t cols, std::string*) {
  return cols % kSparseBlock == 0 ? sparse_q4_type_for(values, rows, cols) : requested;
}
// N:M: the pattern the pruned weights already follow (tensor/nm_sparse.h).
std::optional<DType> fit_nm(DType requested, const float* values, int64_t rows, int64_t cols, std::string* why) {
  return nm_type_for(nm_pattern(requested).bits, values, rows, cols, why);
}

// fq: one kernel slot per bit width (kernels/matmul_fq.h).
int fq_kernel(DType type) { return kKernelFq2 + generic_group_format(type)->bits - 2; }

using A = ActivationFormat;
using G = GridKind;

// A GGML type's entry.
template <DType T>
constexpr WeightCodec ggml(const char* name, A activation, int kernel, bool exact_zero, int64_t file_type,
                           CodecGrid grid = {}, DType short_rows = T) {
  return {name, nullptr, T, false, find_one<T>, one<T>, activation, kernel, nullptr, false, exact_zero, file_type,
          short_rows, grid, nullptr};
}

constexpr DType kSparseQ8Widest = static_cast<DType>(kSparseQ8TypeBase | 64);
constexpr DType kSparseQ4Widest = static_cast<DType>(kSparseQ4TypeBase | 64);
constexpr DType kNmQ8 = static_cast<DType>(kNmTypeBase | 8 << 8 | 2 << 4 | 4);
constexpr DType kNmQ4 = static_cast<DType>(kNmTypeBase | 4 << 8 | 2 << 4 | 4);
constexpr DType kFq4G128 = static_cast<DType>(kGenericTypeBase | 4 << 4 | 2);

// Grids: code ranges as ggml-common.h's decoders read the stored bits. Q8_0 codes stay in
// [-127, 127] like ggml's reference quantizer: -128 is storable, but the sign-trick int8 dot
// products negate weight codes and -128 has no negation in a byte.
// file types: LLAMA_FTYPE in llama.h (MOSTLY_Q4_0 = 2, ..., MOSTLY_Q6_K = 18, MOSTLY_BF16 = 32).
constexpr WeightCodec kCodecs[] = {
    ggml<DType::F32>("f32", A::kNone, kKernelF32, true, 0),
    ggml<DType::F16>("f16", A::kNone, kKernelF16, true, 1),
    ggml<DType::BF16>("bf16", A::kNone, kKernelBF16, true, 32),
    ggml<DType::Q8_0>("q8_0", A::kQ8Block32, kKernelQ8_0, true, 7, {G::kScale, 32, -127, 127}),
    ggml<DType::Q4_0>("q4_0", A::kQ8Block32, kKernelQ4_0, true, 2, {G::kScale, 32, -8, 7}),
    ggml<DType::Q4_1>("q4_1", A::kQ8Block32, kKernelQ4_1, false, 3, {G::kScaleMin, 32, 0, 15}),
    ggml<DType::Q5_0>("q5_0", A::kQ8Block32, kKernelQ5_0, true, 8, {G::kScale, 32, -16, 15}),
    ggml<DType::Q5_1>("q5_1", A::kQ8Block32, kKernelQ5_1, false, 9, {G::kScaleMin, 32, 0, 31}),
    ggml<DType::Q2_K>("q2_K", A::kQ8K, kKernelQ2_K, false, 10, {G::kTwoLevelAffine, 16, 0, 3, 0, 15, 15}, DType::Q4_0),
    ggml<DType::Q3_K>("q3_K", A::kQ8K, kKernelQ3_K, false, 12, {G::kTwoLevelSymmetric, 16, -4, 3, -32, 31, 0}, DType::Q4_0),
    ggml<DType::Q4_K>("q4_K", A::kQ8K, kKernelQ4_K, false, 15, {G::kTwoLevelAffine, 32, 0, 15, 0, 63, 63}, DType::Q5_0),
    ggml<DType::Q5_K>("q5_K", A::kQ8K, kKernelQ5_K, false, 17, {G::kTwoLevelAffine, 32, 0, 31, 0, 63, 63}, DType::Q5_1),
    ggml<DType::Q6_K>("q6_K", A::kQ8K, kKernelQ6_K, false, 18, {G::kTwoLevelSymmetric, 16, -32, 31, -128, 127, 0}, DType::Q8_0),
    // Activation block formats: readable in files, never a weight target on the command line.
    ggml<DType::Q8_1>(nullptr, A::kNone, kNoKernel, false, -1),
    ggml<DType::Q8_K>(nullptr, A::kNone, kNoKernel, false, -1),
    // frugal's own formats; every member's name ("sparse_q8_c32", "nm_q4_4of8", "fq3_g128") is
    // accepted on the command line too.
    {"sparse-q8", "sparse_q8", kSparseQ8Widest, true, find_sparse_q8_traits, sparse_q8_all_traits, A::kQ8Block32,
     kKernelSparseQ8, nullptr, true, true, -1, kSparseQ8Widest, {}, fit_sparse_q8},
    {"sparse-q4", "sparse_q4", kSparseQ4Widest, true, find_sparse_q4_traits, sparse_q4_all_traits, A::kQ8Block32,
     kKernelSparseQ4, nullptr, true, true, -1, kSparseQ4Widest, {}, fit_sparse_q4},
    {"nm-q8", "nm_q8", kNmQ8, true, find_nm<8>, nm_members<8>, A::kQ8Block32, kKernelNmSparse, nullptr, true, true, -1,
     kNmQ8, {}, fit_nm},
    {"nm-q4", "nm_q4", kNmQ4, true, find_nm<4>, nm_members<4>, A::kQ8Block32, kKernelNmSparse, nullptr, true, true, -1,
     kNmQ4, {}, fit_nm},
    // fq<bits>[s]_g<group> (tensor/generic_group.h): 32-element sub-blocks in every group; its
    // grids are fitted by compress/format_grid.h's generic path.
    {nullptr, nullptr, kFq4G128, true, find_generic_group_traits, generic_group_all_traits, A::kQ8Block32, kKernelFq2,
     fq_kernel, false, false, -1, kFq4G128, {}, nullptr},
};

}  // namespace

std::span<const WeightCodec> weight_codecs() { return kCodecs; }

const WeightCodec* find_weight_codec(uint32_t type_id) {
  for (const WeightCodec& c : kCodecs) {
    if (c.find(type_id) != nullptr) return &c;
  }
  return nullptr;
}

const WeightCodec& weight_codec(DType type) {
  const WeightCodec* c = find_weight_codec(static_cast<uint32_t>(type));
  FRUGAL_CHECK(c != nullptr);
  return *c;
}

int WeightCodec::kernel_slot(DType t) const { return kernel_for != nullptr ? kernel_for(t) : kernel; }

const TypeTraits* find_type_traits(uint32_t ggml_type_id) {
  for (const WeightCodec& c : kCodecs) {
    if (const TypeTraits* t = c.find(ggml_type_id)) return t;
  }
  return nullptr;
}

const TypeTraits& type_traits(DType type) {
  const TypeTraits* t = find_type_traits(static_cast<uint32_t>(type));
  FRUGAL_CHECK(t != nullptr);
  return *t;
}

}  // namespace frugal
