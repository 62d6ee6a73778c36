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

  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
  bool empty() const { return data == nullptr; }
};

}  // namespace frugal
