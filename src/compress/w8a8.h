// Eight-bit weights with eight-bit activations: the numerical cores of SmoothQuant (Xiao et al.
// 2022, arXiv:2211.10438) and LLM.int8() (Dettmers et al. 2022, arXiv:2208.07339).
//
// Both store each weight row as int8 with one scale per output channel ("vector-wise"), in the
// Q8_0 block layout with the row's scale repeated in every block, so llama.cpp loads the files and
// frugal's int8 x int8 kernels run them; at run time frugal quantizes every input token to int8
// with one scale (WeightMatrix::per_token_input).
//  - SmoothQuant migrates activation outliers into the weights: input channel j is divided by
//    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) (folded into the preceding RMSNorm) and the
//    weight column multiplied by s_j, which leaves the float product unchanged.
//  - LLM.int8() keeps the input columns whose magnitude reaches a threshold (6.0 in the paper)
//    out of the int8 product and multiplies them in 16-bit ("mixed-precision decomposition"). The
//    paper finds outliers per batch at run time; frugal fixes the columns on calibration data.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace frugal::compress {

// Per input column, max over tokens of |x| (x: tokens x cols, row-major).
std::vector<float> column_abs_max(const float* x, int64_t tokens, int64_t cols);

// Per input column, max over the rows of all given weights of |w| (each rows_i x cols).
std::vector<float> weight_column_abs_max(std::span<const float* const> weights, std::span<const int64_t> rows,
                                         int64_t cols);

// SmoothQuant's smoothing factors s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), clamped to at
// least 1e-5 as the reference implementation does; columns that are zero in X or W get s = 1.
std::vector<float> smoothquant_scales(std::span<const float> activation_max, std::span<const float> weight_max,
                                      float alpha);

// Input columns (ascending) whose largest calibration magnitude reached `threshold`.
std::vector<int32_t> outlier_columns(std::span<const float> activation_max, float threshold);

struct Int8Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> q8_0;       // rows x cols/32 Q8_0 blocks; outlier columns hold code 0
  std::vector<int32_t> outliers;   // the 16-bit columns (may be empty)
  std::vector<uint16_t> outlier_weight;  // rows x outliers.size() fp16 values
  std::vector<float> values;       // rows x cols: what the layer multiplies with (dequantized)
};

// Vector-wise int8 quantization of W (rows x cols, cols a multiple of 32): per row
// d = fp16(max|w| / 127) over the columns that are not outliers, codes round(w / d). The
// outlier columns are stored as fp16 in outlier_weight.
Int8Matrix quantize_int8_per_channel(const float* w, int64_t rows, int64_t cols, std::span<const int32_t> outliers = {});

}  // namespace frugal::compress
