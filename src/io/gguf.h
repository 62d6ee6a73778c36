// GGUF v2/v3 reader over a memory map: metadata of every kind, tensor infos, alignment.
// Format: ggml docs/gguf.md (header "GGUF", version, tensor count, kv count; kvs; tensor infos;
// padding to general.alignment; tensor data).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/mapped_file.h"
#include "tensor/dtype.h"

namespace frugal {

enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

const char* gguf_type_name(GgufType type);

// One metadata value. Scalars live in the field that fits their kind; arrays of strings in
// `strings`, numeric/bool arrays in `numbers` (as double: metadata arrays hold token types,
// scores, layer counts, all exact in a double), arrays of arrays only by count.
struct GgufValue {
  GgufType type = GgufType::kUint8;
  GgufType element_type = GgufType::kUint8;  // for arrays
  uint64_t uint_value = 0;
  int64_t int_value = 0;
  double float_value = 0;
  bool bool_value = false;
  std::string string_value;
  std::vector<std::string> strings;
  std::vector<double> numbers;
  uint64_t array_size = 0;

  bool is_integer() const;
  bool is_number() const;  // integer, float or bool
  // Numeric value of a scalar as double / int64.
  double as_double() const;
  int64_t as_int() const;
  std::string to_display_string(size_t max_items = 8) const;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // GGML order: dims[0] is the contiguous (row) length
  uint32_t type_id = 0;
  const TypeTraits* traits = nullptr;  // never null after a successful open
  uint64_t offset = 0;                 // from the start of the data section
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  int64_t element_count() const;
};

class GgufFile {
 public:
  // Maps and parses `path`; every size and offset is checked against the file length, so a
  // truncated or hostile file gives an error, never an out-of-bounds read.
  static Result<std::unique_ptr<GgufFile>> open(const std::string& path);
  // The same parse over bytes the caller keeps alive (fuzzing, tests); `name` appears in messages.
  static Result<std::unique_ptr<GgufFile>> open_memory(const uint8_t* data, size_t size, const std::string& name);

  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  size_t file_size() const { return file_->size(); }
  const std::string& path() const { return file_->path(); }
  // Drops a consumed tensor's pages from the resident set (MappedFile::release).
  void release(const GgufTensorInfo& t) const { file_->release(t.data, t.bytes); }

  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kvs_; }
  const GgufValue* find(const std::string& key) const;

  // Typed look-ups: an error that names the key when it is missing or of the wrong kind.
  Result<std::string> get_string(const std::string& key) const;
  Result<int64_t> get_int(const std::string& key) const;
  Result<double> get_float(const std::string& key) const;
  // Optional look-ups with a default.
  std::string get_string_or(const std::string& key, const std::string& fallback) const;
  int64_t get_int_or(const std::string& key, int64_t fallback) const;
  double get_float_or(const std::string& key, double fallback) const;
  bool get_bool_or(const std::string& key, bool fallback) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;

 private:
  GgufFile() = default;
  static Result<std::unique_ptr<GgufFile>> parse(std::unique_ptr<MappedFile> mapped);
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> kvs_;
  std::map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace frugal
