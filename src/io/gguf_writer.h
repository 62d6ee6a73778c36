// GGUF v3 writer: metadata and tensors in, one file out, written to a temporary name and renamed
// so that a failure never leaves a half-written model behind.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/gguf.h"

namespace frugal {

class GgufWriter {
 public:
  explicit GgufWriter(size_t alignment = 32) : alignment_(alignment) {}

  void set_string(const std::string& key, const std::string& value);
  void set_uint32(const std::string& key, uint32_t value);
  void set_int32(const std::string& key, int32_t value);
  void set_float32(const std::string& key, float value);
  void set_bool(const std::string& key, bool value);
  void set_string_array(const std::string& key, const std::vector<std::string>& values);
  void set_float32_array(const std::string& key, const std::vector<float>& values);
  void set_int32_array(const std::string& key, const std::vector<int32_t>& values);
  // Copies a metadata value read from another file (for writing a transformed model).
  void set_value(const std::string& key, const GgufValue& value);

  // `dims` in GGML order (dims[0] = row length); `bytes` holds the encoded data of `type`.
  void add_tensor(const std::string& name, DType type, std::vector<int64_t> dims, std::vector<uint8_t> bytes);

  Status write(const std::string& path) const;

 private:
  struct Entry {
    std::string key;
    std::vector<uint8_t> encoded;  // type id + value, as stored in the file
  };
  struct Tensor {
    std::string name;
    DType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> bytes;
  };
  void put(const std::string& key, std::vector<uint8_t> encoded);

  size_t alignment_;
  std::vector<Entry> entries_;
  std::vector<Tensor> tensors_;
};

}  // namespace frugal
