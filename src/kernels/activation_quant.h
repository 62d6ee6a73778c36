// Activations quantized to 8 bits once per matmul input, the way llama.cpp does it (the weight
// type's "vec_dot_type": Q8_0/Q8_1 blocks of 32, or Q8_K super-blocks of 256), laid out for the
// integer kernels: tokens in groups of 8 whose 4-byte code groups are interleaved.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/dtype.h"
#include "tensor/weight_codec.h"

namespace frugal::kernels {

// Tokens per group: the integer kernels broadcast one token's 4 codes at a time and these 8
// tokens' codes for the same 4 columns sit in one 32-byte line. A single token (decode) is stored
// with groups of 1, so its codes are contiguous and take no more cache than they need.
inline constexpr int kTokenGroup = 8;
inline int group_lanes(int64_t n_tokens) { return n_tokens == 1 ? 1 : kTokenGroup; }
// Tokens per group of the AMX prefill kernels (matmul_amx.cpp): a group's codes for 4 columns are
// one 64-byte row of a TDPBUSD B tile (16 tokens x 4 bytes).
inline constexpr int kAmxTokenGroup = 16;

// Each weight format's codec names the format its kernels read (tensor/weight_codec.h).
using frugal::ActivationFormat;

// Per-sub-block float arrays stored with the codes (each [cols/sub][kTokenGroup] floats):
//   kD32/kD16: the activation scale d of the 32/16-element sub-block (Q8_K: the super-block d),
//   kS32/kS16: d * sum(codes) of the sub-block (exact float product; used by offset and min terms),
//   kH32:      fp16(d_unrounded * sum(codes)), the "s" field of ggml's block_q8_1 that
//              ggml_vec_dot_q4_1_q8_1 multiplies the weight minimum with,
//   kP16 (Q8_K only, [cols/32][kTokenGroup] int32 words, read through a cast): the integer code
//              sums of 16-element sub-blocks 2p and 2p + 1 as the low and high int16 of word p
//              (|sum| <= 16 * 127), the vpdpwssd operand of the 16-element K-quants' offset and
//              minimum terms (kernels fold those per 256-element super-block, matmul_simd.h).
enum class ActivationArray { kD32, kS32, kH32, kD16, kS16, kP16 };

// The kP16 word of two sub-block code sums.
inline int32_t pack_sum_pair(int lo, int hi) {
  return static_cast<int32_t>((static_cast<uint32_t>(lo) & 0xffffu) | (static_cast<uint32_t>(hi) << 16));
}

// Which format the integer kernels of a weight type read (kNone: float path).
ActivationFormat activation_format_for(DType weight_type);

// Bytes of one group of `lanes` tokens with `cols` columns (a multiple of 64, so groups stay
// cache-line aligned). Layout: codes [cols/4][lanes][4] int8, then the format's arrays.
size_t activation_group_bytes(ActivationFormat format, int64_t cols, int lanes);
// Bytes for n_tokens tokens (whole groups of group_lanes(n_tokens)).
size_t activation_bytes(ActivationFormat format, int64_t cols, int64_t n_tokens);
// The same with groups of `lanes` tokens (kAmxTokenGroup for the AMX kernels).
size_t activation_bytes(ActivationFormat format, int64_t cols, int64_t n_tokens, int lanes);

// A view of quantized activations (group g at data + g * group_bytes).
struct QuantizedActivations {
  ActivationFormat format = ActivationFormat::kNone;
  int64_t cols = 0;
  int64_t n_tokens = 0;
  int lanes = kTokenGroup;  // tokens per group
  uint8_t* data = nullptr;
  size_t group_bytes = 0;

  int64_t n_groups() const { return (n_tokens + lanes - 1) / lanes; }
  int8_t* codes(int64_t group) const { return reinterpret_cast<int8_t*>(data + group * group_bytes); }
  float* array(int64_t group, ActivationArray which) const;
  // Code of token t, column k; scale arrays of token t (for scalar code and tests).
  int8_t code(int64_t t, int64_t k) const { return codes(t / lanes)[((k / 4) * lanes + t % lanes) * 4 + k % 4]; }
  float value(int64_t t, ActivationArray which, int64_t sub) const {
    return array(t / lanes, which)[sub * lanes + t % lanes];
  }
};

// Formats `data` as a view for n_tokens tokens of `cols` columns (groups of group_lanes(n_tokens)).
QuantizedActivations make_activation_view(ActivationFormat format, int64_t cols, int64_t n_tokens, void* data);
// The same with groups of `lanes` tokens (every quantizer takes any lane count).
QuantizedActivations make_activation_view(ActivationFormat format, int64_t cols, int64_t n_tokens, int lanes, void* data);

// Scalar reference quantizer: quantizes tokens of the whole groups [group_begin, group_end) from x
// (token t at x + t * x_stride); lanes past out.n_tokens in the last group are zeroed.
void quantize_activations_reference(const float* x, int64_t x_stride, int64_t group_begin, int64_t group_end,
                                    const QuantizedActivations& out);

// W8A8 quantizer (Q8Block32 layout only): each token gets one scale d = amax/127 (fp16-rounded as
// Q8_0 does) over all its columns, written into every 32-element block, so block-wise integer
// kernels compute the per-token product exactly. Columns listed in `skip` (LLM.int8() outlier
// columns, handled in float) are quantized as zeros and do not count towards amax. Same lane
// padding as quantize_activations_reference.
void quantize_activations_per_token(const float* x, int64_t x_stride, int64_t group_begin, int64_t group_end,
                                    const int32_t* skip, int64_t n_skip, const QuantizedActivations& out);

}  // namespace frugal::kernels
