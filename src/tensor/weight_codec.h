// The weight codec table: one entry per stored weight format, the single source from which type
// lookup and names, the activation format of the integer kernels, the kernel-table slot, the
// quantizers' grid, the command-line names and llama.cpp's file-type ids are derived. Row layout
// and the reference row functions (decode, encode, dot, validate) stay in each format's TypeTraits
// (tensor/dtype.h), which the entry points to; kernels stay in kernels/, found by slot.
//
// Before this table a new format touched about 11 places (issue 10); adding one now means: its
// TypeTraits (layout and reference functions), one entry in kCodecs (weight_codec.cpp), and, if it
// should run fast, a kernel slot filled in the per-ISA tables. DEVELOPERS.md lists the steps.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "tensor/dtype.h"

namespace frugal {

// How the integer kernels of a weight type read the activations (the weight type's
// "vec_dot_type" in ggml): kernels/activation_quant.h lays these formats out.
enum class ActivationFormat {
  kNone,       // float activations (F32/F16/BF16 weights, and types without an integer kernel)
  kQ8Block32,  // ggml Q8_0 / Q8_1: d = amax/127 stored as fp16, codes round(x*127/amax)
  kQ8K,        // ggml Q8_K: d = max/-127 (signed max) in float, codes min(127, round(x/d))
};

// Slots of the per-ISA matmul kernel tables (kernels/matmul_kernels.h KernelTable): each codec
// names the slot whose kernels run it; several types may share one (every capacity of sparse-q8).
enum KernelType : int {
  kKernelQ4_0, kKernelQ4_1, kKernelQ5_0, kKernelQ5_1, kKernelQ8_0,
  kKernelQ2_K, kKernelQ3_K, kKernelQ4_K, kKernelQ5_K, kKernelQ6_K,
  kKernelF32, kKernelF16, kKernelBF16,
  kKernelSparseQ8,  // every capacity of sparse-q8 (tensor/sparse_q8.h); see matmul.cpp
  // frugal's generic group types (tensor/generic_group.h), one slot per bit width: every group
  // size and symmetry of that width shares the kernel, which reads them from the type (matmul_fq.h).
  kKernelFq2, kKernelFq3, kKernelFq4, kKernelFq5, kKernelFq6, kKernelFq7, kKernelFq8,
  kKernelSparseQ4,  // every capacity of sparse-q4 (tensor/sparse_q4.h); kernels in sparse_q4_kernels.h
  kKernelNmSparse,  // nm-q8 and nm-q4 (tensor/nm_sparse.h); kernels in nm_sparse_kernels.h
  kKernelTypeCount,
};
inline constexpr int kNoKernel = -1;  // dequantize-to-float fallback of the matmul driver

// How a format turns its stored parameters into sub-block grids (compress/format_grid.h fits and
// encodes them bit-exactly; code ranges as ggml-common.h's decoders read the stored bits).
enum class GridKind {
  kNone,               // no grid fitting (float, sparse and fq types have their own paths)
  kScale,              // x = d * q                      (Q8_0, Q4_0, Q5_0)
  kScaleMin,           // x = d * q + m                  (Q4_1, Q5_1)
  kTwoLevelAffine,     // x = d*sc * q - dmin*mc         (Q2_K, Q4_K, Q5_K)
  kTwoLevelSymmetric,  // x = d*sc * q, sc signed        (Q3_K, Q6_K)
};
struct CodecGrid {
  GridKind kind = GridKind::kNone;
  int sub = 0;           // elements per sub-block grid
  int qmin = 0, qmax = 0;
  int code_min = 0, code_max = 0;  // sub-block scale codes of the two-level formats
  int min_code_max = 0;            // sub-block min codes (0..min_code_max) of the two-level affine formats
};

struct WeightCodec {
  // Name on the command line (quantize/prune --format): the GGML name, or a frugal family name
  // such as "sparse-q8"; nullptr for types that only serve as activation blocks (q8_1, q8_K).
  const char* name;
  const char* alias;  // a second accepted spelling ("sparse_q8"), or nullptr
  DType type;         // the type `name` selects (a family: the member fit() refines per matrix)
  bool members_by_name;  // every member's traits name is accepted as well ("sparse_q8_c32")
  // The traits of a type id this format owns (one for a GGML type, a whole family for frugal's
  // parametrised formats), nullptr for any other id; and every member, for name lookup and tests.
  const TypeTraits* (*find)(uint32_t type_id);
  std::span<const TypeTraits> (*members)();
  ActivationFormat activation;  // what the integer kernels read (kNone: float or fallback path)
  int kernel;                   // KernelType slot, or kNoKernel
  int (*kernel_for)(DType type);  // nullptr, or the slot per member (fq: one per bit width)
  // Prefill expands tiles of rows to Q8_0 once and runs the Q8_0 kernel (the sparse formats,
  // whose one-token kernels are not the batched ones; see kernels/matmul.cpp).
  bool expand_for_prefill;
  bool exact_zero;            // a 0 weight decodes to exactly 0 (no block minimum): pruned weights stay 0
  int64_t llama_file_type;    // LLAMA_FTYPE of a model stored in this type (general.file_type), or -1
  // llama-quantize's type for rows that are not a multiple of the block (the K-quants on
  // 576-wide rows), else `type` itself.
  DType short_rows;
  CodecGrid grid;
  // The member that stores a rows x cols matrix of these values: the sparse families fit their
  // capacity or N:M pattern to the data. nullopt with the reason when no member can. nullptr:
  // the type is used as given.
  std::optional<DType> (*fit)(DType requested, const float* values, int64_t rows, int64_t cols, std::string* why);

  // The kernel slot of member `type` (kernel, or kernel_for's answer).
  int kernel_slot(DType type) const;
};

// Every codec, GGML types first in the order `frugal quantize --help` lists them.
std::span<const WeightCodec> weight_codecs();
// The codec owning a type id, or nullptr.
const WeightCodec* find_weight_codec(uint32_t type_id);
// The codec of a supported type (checked).
const WeightCodec& weight_codec(DType type);

// The GGML traits table of dtype.cpp (plain GGML types only; find_type_traits covers every codec).
const TypeTraits* find_ggml_traits(uint32_t type_id);

}  // namespace frugal
