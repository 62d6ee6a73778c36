// GGUF v3 writer: metadata and tensors in, one file out (in memory or streamed tensor by tensor),
// written to a temporary name and renamed so that a failure never leaves a half-written model behind.
#pragma once

#include <cstdint>
#include <cstdio>
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

  // Writes everything added with add_tensor at once (all tensor data held in memory).
  Status write(const std::string& path) const;

  // Streaming: the same file without holding the tensor data. declare() every tensor in file
  // order (name and dims fix the header's size), begin() writes the header to a temporary file,
  // write_next() appends each tensor's data as it is produced (its type is given then), finish()
  // rewrites the header's type and offset fields in place and renames the file. If finish() is
  // never reached (an error, an early return) the destructor removes the temporary file, so no
  // half-written output is left behind. Memory: the header plus the tensor being written.
  void declare(const std::string& name, std::vector<int64_t> dims);
  Status begin(const std::string& path);
  Status write_next(DType type, const uint8_t* data, size_t bytes);
  Status finish();
  ~GgufWriter();

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
  // Header bytes (padded to the alignment) for tensors_'s names, dims, types and `offsets`.
  std::vector<uint8_t> header(const std::vector<uint64_t>& offsets) const;
  Status fail(const std::string& what);

  size_t alignment_;
  std::vector<Entry> entries_;
  std::vector<Tensor> tensors_;
  // Streaming state.
  std::string path_, temp_;
  FILE* file_ = nullptr;
  size_t next_ = 0;
  uint64_t data_offset_ = 0;  // bytes of tensor data (with padding) written so far
  std::vector<uint64_t> offsets_;
  bool failed_ = false;
};

}  // namespace frugal
