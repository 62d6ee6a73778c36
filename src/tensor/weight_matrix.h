// A read-only view of a 2-D weight in its stored type: rows of `cols` elements, row-major,
// as GGUF stores a matrix whose dims are {cols, rows}.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/dtype.h"

namespace frugal {

struct WeightMatrix {
  const TypeTraits* traits = nullptr;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;

  // W8A8 (SmoothQuant, Xiao et al. 2022, arXiv:2211.10438; LLM.int8(), Dettmers et al. 2022,
  // arXiv:2208.07339): the input is quantized to int8 with one scale per token instead of one per
  // 32-element block, so an int8 weight with one scale per row computes the per-channel x
  // per-token product of those papers. Only for weight types read with Q8_0-style activations.
  bool per_token_input = false;
  // LLM.int8()'s mixed-precision decomposition: input columns whose magnitude reached the outlier
  // threshold on calibration data are left out of the int8 product and multiplied in 16-bit:
  // outlier_weights holds rows x n_outliers fp16 values (row-major), the weight's entries for the
  // input columns outlier_columns[0 .. n_outliers).
  const int32_t* outlier_columns = nullptr;
  const uint16_t* outlier_weights = nullptr;
  int64_t n_outliers = 0;

  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
  bool empty() const { return data == nullptr; }
};

}  // namespace frugal
