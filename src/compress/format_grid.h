// Quantization grids of the GGML weight formats and of frugal's generic group layouts: fitting a
// block's scales (optionally importance-weighted), nearest codes, and bit-exact block encoding.
//
// Every grid is affine: element value = scale * q + offset with an integer code q in [qmin, qmax].
// For a GGML format the scale and offset are exactly what the decoder computes from the stored
// (rounded) parameters: fp16 d and m of Q4_0..Q8_0, or fp16 d/dmin times the 4/6/8-bit sub-block
// codes of the K-quants (ggml-common.h block layouts, see tensor/quant_blocks.h). So a GPTQ- or
// AWQ-style quantizer can pick codes on the grid and type_traits(t).dequantize_row gives back
// exactly the values it chose. The same holds for the generic group grids: their scales and
// offsets are fp16 values, and the layouts that store them are frugal's generic group types
// (tensor/generic_group.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "tensor/dtype.h"

namespace frugal::compress {

// Evenly spaced values scale * q + offset for integer codes q in [qmin, qmax]. value() performs
// the same float operations as the format decoders (a product, then one addition), so grid values
// and decoded weights are equal as floats.
struct AffineGrid {
  float scale = 0.0f;
  float offset = 0.0f;
  int qmin = 0;
  int qmax = 0;

  float value(int q) const { return scale * static_cast<float>(q) + offset; }
  // Code of the grid value nearest to x: (x - offset) / scale rounded half to even and clamped,
  // computed as the reference encoders do (multiplying by 1/scale). A zero scale gives code 0
  // clamped into range (all codes decode to `offset` then).
  int nearest(float x) const;
};

// How a grid is fitted to values: the plain min/max fit of round-to-nearest quantizers (for the
// GGML formats exactly the grid of the traits' quantize_row), or a search over scales and offsets
// that minimizes the importance-weighted squared error and is never worse than the min/max fit.
enum class GridFit { kMinMax, kSearch };

// ---- GGML formats ------------------------------------------------------------------------------

// Grid layout of one GGML block format.
struct FormatLayout {
  int64_t block_size = 0;  // elements per block
  int sub_size = 0;        // elements sharing one scale/offset (the block itself for Q4_0..Q8_0)
  int sub_count = 0;       // sub-blocks per block
  int qmin = 0, qmax = 0;  // code range of one element
  bool two_level = false;  // K-quants: sub-block scales are integer codes times the fp16 d/dmin
};

// True for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
bool format_grid_supported(DType type);
// The layout of a supported type (checked).
FormatLayout format_layout(DType type);

// The scale parameters of one block exactly as the block stores them.
struct BlockGrid {
  DType type = DType::Q8_0;
  uint16_t d = 0;  // fp16 bits of the block scale (the super-block scale of the K-quants)
  uint16_t m = 0;  // fp16 bits of the Q4_1/Q5_1 offset m, or the K-quant dmin (Q2_K/Q4_K/Q5_K)
  // K-quant sub-block codes: scale codes (Q2_K 0..15, Q3_K -32..31, Q4_K/Q5_K 0..63, Q6_K
  // -128..127) and min codes (Q2_K 0..15, Q4_K/Q5_K 0..63).
  int16_t scale_code[16] = {};
  int16_t min_code[16] = {};
};

// The grid of sub-block `sub` (0 for the 32-element formats) of a block.
AffineGrid sub_grid(const BlockGrid& grid, int sub);

// Fits the grid of one block to x (block_size values). `importance` (block_size values, may be
// null = all ones) weights each element's squared error, e.g. the diagonal of X^T X of the layer
// input over this block's columns (llama.cpp's "imatrix"). kSearch also tries the kMinMax grid and
// keeps whichever has the lower weighted error.
BlockGrid fit_block_grid(DType type, const float* x, const float* importance,
                         GridFit fit = GridFit::kSearch);

// K-quants only: refits the codes of one sub-block to x (sub_size values) with the block's fp16
// d/dmin fixed, keeping the current codes if nothing is better. GPTQ uses it when it reaches a
// sub-block whose weights changed since the block was fitted.
void refit_sub_block(BlockGrid& grid, int sub, const float* x, const float* importance);

// The nearest code of every element of a block (block_size values).
void nearest_codes(const BlockGrid& grid, const float* x, int8_t* q);
// The grid values of block codes: exactly what dequantize_row decodes from encode_block's bytes.
void grid_values(const BlockGrid& grid, const int8_t* q, float* out);
// Packs codes (each in its sub-block's [qmin, qmax], checked) and the parameters into one block
// of type_traits(grid.type).block_bytes bytes.
void encode_block(const BlockGrid& grid, const int8_t* q, void* out);
// The parameters stored in an encoded block (inverse of encode_block for the parameters).
BlockGrid read_block_grid(DType type, const void* block);

// Encodes a row (n a multiple of the block size) with fit_block_grid(kSearch) and nearest codes,
// keeping per block whichever of this and the traits quantize_row has the lower weighted error;
// so it is never worse than round-to-nearest. `importance` has n values or is null.
void quantize_row_weighted(DType type, const float* x, const float* importance, void* out,
                           int64_t n);

// Sum over i of importance[i] * (a[i] - b[i])^2 (importance null = all ones), in double.
double weighted_squared_error(const float* a, const float* b, const float* importance, int64_t n);

// ---- frugal's generic group grids -------------------------------------------------------------

// Groups of `group_size` consecutive elements of a row share a scale and offset, both values an
// fp16 can hold (what the stored layouts keep). Symmetric grids have offset 0 and codes in
// [-2^(bits-1), 2^(bits-1) - 1] (the scale's sign picks the side that gets the extra negative
// level); asymmetric grids have codes in [0, 2^bits - 1].
struct GenericGridSpec {
  int bits = 4;              // 2..8
  int64_t group_size = 128;  // <= 0 or >= row length: one group per row (per channel)
  bool symmetric = false;

  int qmin() const { return symmetric ? -(1 << (bits - 1)) : 0; }
  int qmax() const { return symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1; }
  // Elements per group in a row of n (the last group of a row may be shorter).
  int64_t group_length(int64_t n) const { return group_size <= 0 || group_size > n ? n : group_size; }
  int64_t group_count(int64_t n) const { return (n + group_length(n) - 1) / group_length(n); }
};

// Fits one group's grid to x (n values, importance as above). kMinMax is the grid of the generic
// group types' quantize_row (generic_group_minmax); kSearch rounds the searched scale and offset to
// fp16 and keeps it only if it beats kMinMax after rounding.
AffineGrid fit_generic_grid(const GenericGridSpec& spec, const float* x, const float* importance,
                            int64_t n, GridFit fit = GridFit::kSearch);

// Quantizes a row of n values: codes (n), grids (group_count(n)) and, if not null, values (n).
void quantize_row_generic(const GenericGridSpec& spec, const float* x, const float* importance,
                          int64_t n, GridFit fit, int16_t* codes, AffineGrid* grids, float* values);

// The frugal generic group type that stores `spec` for rows of `cols` elements, or nullopt when
// none can: bits outside 2..8, or a group size other than 32/64/128/256 or not dividing cols.
// A per-channel spec (group_size <= 0 or >= cols) is stored in the largest of 256, 128, 64, 32
// dividing cols with the row's one grid repeated in every block, which costs one extra fp16 scale
// (and offset) per block over a true per-channel layout (e.g. 0.125 bits per weight for g256
// asymmetric).
std::optional<DType> generic_storage_type(const GenericGridSpec& spec, int64_t cols);

// ---- Targets and quantized matrices (shared by GPTQ and AWQ) ----------------------------------

// What a weight matrix is quantized to: a GGML block format or a generic group grid.
struct QuantTarget {
  bool is_format = true;
  DType type = DType::Q4_K;
  GenericGridSpec generic;

  static QuantTarget format(DType type);
  static QuantTarget generic_grid(int bits, int64_t group_size, bool symmetric);
  // Columns per fitted group in rows of `cols`: the format block or the generic group length.
  int64_t group_size(int64_t cols) const;
  // Columns sharing one scale: the format sub-block or the generic group length.
  int64_t sub_size(int64_t cols) const;
  // "q4_K", or "int3 g128 asym" / "int4 per-channel sym".
  std::string name() const;
};

// Explains why rows of `cols` cannot be stored in `target` (unsupported type, bits out of range,
// row length not a multiple of the block size), or returns ok.
Status check_target(const QuantTarget& target, int64_t cols);

// A quantized row-major matrix. `data` holds the encoded rows for formats and for generic targets
// that have a storage type (generic_storage_type); for other generic targets it stays empty and
// the codes and grids are the result.
struct QuantizedMatrix {
  QuantTarget target;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;             // bytes per encoded row (0 when `data` is empty)
  std::vector<uint8_t> data;        // rows * row_bytes, as a GGUF tensor of the type stores them
  std::vector<int16_t> codes;       // generic: rows * cols codes
  std::vector<AffineGrid> grids;    // generic: rows * group_count(cols) grids
  std::vector<float> values;        // rows * cols dequantized values (what the layer computes with)
};

// The rows of a generic-target matrix encoded in its generic_storage_type (which must exist,
// checked), rows * row_bytes bytes. Checks that every grid is fp16-exact and every code in range,
// so dequantize_row of the result gives exactly m.values.
std::vector<uint8_t> encode_generic_matrix(const QuantizedMatrix& m);

// Round-to-nearest quantization of every row with the given fit (kMinMax on a format = the
// traits quantize_row; kSearch = quantize_row_weighted). `importance` has cols values or is null.
// The target must pass check_target (checked). Rows are split over `pool`'s threads if given
// (each row is quantized alone, so the result does not depend on the thread count).
QuantizedMatrix quantize_matrix(const QuantTarget& target, const float* w, int64_t rows,
                                int64_t cols, const float* importance, GridFit fit, ThreadPool* pool = nullptr);

}  // namespace frugal::compress
