// Weight and activation element types, and the one traits table that defines each stored format
// (block layout, dequantize, reference quantize, dot product against float activations).
// Type ids and block layouts follow the GGUF/GGML specification (ggml docs/gguf.md, ggml-common.h
// block structs), so files written by frugal load in llama.cpp and vice versa. Layouts GGML lacks
// (e.g. 3-bit with groups of 128) are frugal's own types, with ids outside GGML's range
// (tensor/generic_group.h); only frugal runs those.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace frugal {

// Numeric ids are the GGML type ids stored in GGUF tensor infos. frugal's generic group types are
// further values of this type, made by generic_group_type (tensor/generic_group.h).
enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
};

struct TypeTraits {
  DType type;
  const char* name;       // as llama.cpp prints it, e.g. "q4_1"
  int64_t block_size;     // elements per block
  size_t block_bytes;     // bytes per block
  // Decodes n elements (n a multiple of block_size) from `src` into `dst`.
  void (*dequantize_row)(const void* src, float* dst, int64_t n);
  // Round-to-nearest encoding of n floats into blocks (reference quality, not a tuned quantizer).
  void (*quantize_row)(const float* src, void* dst, int64_t n);
  // Dot product of n stored elements with n float activations.
  float (*dot_f32)(const void* row, const float* x, int64_t n);
  // Formats whose bytes can be inconsistent beyond their size (sparse-q8: mask popcounts against
  // the room for values) check a loaded tensor of rows x cols here; false with a message refuses it.
  bool (*validate)(const TypeTraits& traits, const uint8_t* data, int64_t rows, int64_t cols, std::string* why) = nullptr;
};

// The traits for a GGML or frugal type id, or nullptr when frugal does not support that type
// (looked up through the codec table, tensor/weight_codec.h).
const TypeTraits* find_type_traits(uint32_t ggml_type_id);
// The traits for a supported type (checked).
const TypeTraits& type_traits(DType type);
// Name for any GGML id, including ones frugal does not support ("type 23" for unknown ids), and for
// frugal's generic group ids ("fq3_g128").
std::string_view ggml_type_name(uint32_t ggml_type_id);

// Bytes used by a row of n elements; n must be a multiple of the block size.
inline size_t row_bytes(const TypeTraits& t, int64_t n) {
  return static_cast<size_t>(n / t.block_size) * t.block_bytes;
}

}  // namespace frugal
