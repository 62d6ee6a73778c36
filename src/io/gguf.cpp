// GgufFile: a bounds-checked cursor over the mapped bytes (see gguf.h for the layout).
#include "io/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <sstream>

namespace frugal {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kMaxDims = 4;             // GGML_MAX_DIMS

// Reads little-endian values and strings, failing (not crashing) past the end of the data.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t position() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename T>
  bool read(T* out) {
    if (remaining() < sizeof(T)) return false;
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool read_string(std::string* out) {
    uint64_t length = 0;
    if (!read(&length) || length > remaining()) return false;
    out->assign(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return true;
  }
  bool skip(uint64_t n) {
    if (n > remaining()) return false;
    pos_ += n;
    return true;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

size_t scalar_size(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    default:
      return 0;
  }
}

bool is_valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kFloat64); }

// Reads one scalar of `type` into `value`'s fields.
bool read_scalar(Cursor& c, GgufType type, GgufValue* value) {
  value->type = type;
  switch (type) {
    case GgufType::kUint8: { uint8_t v; if (!c.read(&v)) return false; value->uint_value = v; value->int_value = v; return true; }
    case GgufType::kInt8: { int8_t v; if (!c.read(&v)) return false; value->int_value = v; value->uint_value = static_cast<uint64_t>(v); return true; }
    case GgufType::kUint16: { uint16_t v; if (!c.read(&v)) return false; value->uint_value = v; value->int_value = v; return true; }
    case GgufType::kInt16: { int16_t v; if (!c.read(&v)) return false; value->int_value = v; value->uint_value = static_cast<uint64_t>(v); return true; }
    case GgufType::kUint32: { uint32_t v; if (!c.read(&v)) return false; value->uint_value = v; value->int_value = v; return true; }
    case GgufType::kInt32: { int32_t v; if (!c.read(&v)) return false; value->int_value = v; value->uint_value = static_cast<uint64_t>(v); return true; }
    // Past INT64_MAX the signed view saturates (a 2^64 - 1 must not read as -1).
    case GgufType::kUint64: { uint64_t v; if (!c.read(&v)) return false; value->uint_value = v; value->int_value = static_cast<int64_t>(std::min<uint64_t>(v, INT64_MAX)); return true; }
    case GgufType::kInt64: { int64_t v; if (!c.read(&v)) return false; value->int_value = v; value->uint_value = static_cast<uint64_t>(v); return true; }
    case GgufType::kFloat32: { float v; if (!c.read(&v)) return false; value->float_value = v; return true; }
    case GgufType::kFloat64: { double v; if (!c.read(&v)) return false; value->float_value = v; return true; }
    case GgufType::kBool: { uint8_t v; if (!c.read(&v)) return false; value->bool_value = v != 0; value->int_value = v != 0; return true; }
    case GgufType::kString: return c.read_string(&value->string_value);
    default: return false;
  }
}

Status read_value(Cursor& c, GgufType type, GgufValue* value, const std::string& key, int depth) {
  auto truncated = [&] { return Status::error("truncated GGUF file: metadata value of '" + key + "' runs past the end"); };
  if (type != GgufType::kArray) {
    return read_scalar(c, type, value) ? Status::ok() : truncated();
  }
  value->type = GgufType::kArray;
  uint32_t element_type = 0;
  uint64_t count = 0;
  if (!c.read(&element_type) || !c.read(&count)) return truncated();
  if (!is_valid_type(element_type)) {
    return Status::error("invalid GGUF file: metadata array '" + key + "' has unknown element type " + std::to_string(element_type));
  }
  value->element_type = static_cast<GgufType>(element_type);
  value->array_size = count;
  if (value->element_type == GgufType::kString) {
    // Each string needs at least its 8-byte length: reject absurd counts before reserving.
    if (count > c.remaining() / 8) return truncated();
    value->strings.resize(count);
    for (uint64_t i = 0; i < count; ++i) {
      if (!c.read_string(&value->strings[i])) return truncated();
    }
  } else if (value->element_type == GgufType::kArray) {
    if (depth > 4) return Status::error("invalid GGUF file: metadata array '" + key + "' nests too deeply");
    for (uint64_t i = 0; i < count; ++i) {
      GgufValue inner;
      uint32_t inner_type = static_cast<uint32_t>(GgufType::kArray);
      FRUGAL_RETURN_IF_ERROR(read_value(c, static_cast<GgufType>(inner_type), &inner, key, depth + 1));
    }
  } else {
    size_t size = scalar_size(value->element_type);
    if (count > c.remaining() / size) return truncated();
    value->numbers.resize(count);
    for (uint64_t i = 0; i < count; ++i) {
      GgufValue item;
      read_scalar(c, value->element_type, &item);
      value->numbers[i] = item.as_double();
    }
  }
  return Status::ok();
}

}  // namespace

const char* gguf_type_name(GgufType type) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};
  auto i = static_cast<uint32_t>(type);
  return i < 13 ? names[i] : "?";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kUint16: case GgufType::kInt16:
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kUint64: case GgufType::kInt64:
      return true;
    default:
      return false;
  }
}

bool GgufValue::is_number() const {
  return is_integer() || type == GgufType::kFloat32 || type == GgufType::kFloat64 || type == GgufType::kBool;
}

double GgufValue::as_double() const {
  if (type == GgufType::kFloat32 || type == GgufType::kFloat64) return float_value;
  if (type == GgufType::kUint64) return static_cast<double>(uint_value);
  return static_cast<double>(int_value);
}

int64_t GgufValue::as_int() const {
  if (type == GgufType::kFloat32 || type == GgufType::kFloat64) {
    // Converting a float outside int64's range is undefined: saturate (NaN reads as the minimum,
    // which every range check rejects).
    if (!(float_value >= -9.2e18)) return std::numeric_limits<int64_t>::min();
    if (float_value > 9.2e18) return std::numeric_limits<int64_t>::max();
    return static_cast<int64_t>(float_value);
  }
  return int_value;
}

std::string GgufValue::to_display_string(size_t max_items) const {
  std::ostringstream out;
  if (type == GgufType::kString) {
    std::string s = string_value.size() > 60 ? string_value.substr(0, 60) + "…" : string_value;
    for (char& ch : s) if (ch == '\n') ch = ' ';
    out << '"' << s << '"';
  } else if (type == GgufType::kArray) {
    out << "[" << gguf_type_name(element_type) << " x " << array_size << "]";
    if (max_items > 0 && (!strings.empty() || !numbers.empty())) {
      out << " {";
      size_t n = std::min<size_t>(max_items, strings.empty() ? numbers.size() : strings.size());
      for (size_t i = 0; i < n; ++i) {
        if (i) out << ", ";
        if (!strings.empty()) out << '"' << strings[i] << '"'; else out << numbers[i];
      }
      if (array_size > n) out << ", …";
      out << "}";
    }
  } else if (type == GgufType::kBool) {
    out << (bool_value ? "true" : "false");
  } else if (type == GgufType::kFloat32 || type == GgufType::kFloat64) {
    out << float_value;
  } else if (type == GgufType::kUint64) {
    out << uint_value;
  } else {
    out << int_value;
  }
  return out.str();
}

int64_t GgufTensorInfo::element_count() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path) {
  FRUGAL_ASSIGN_OR_RETURN(auto mapped, MappedFile::open(path));
  return parse(std::move(mapped));
}

Result<std::unique_ptr<GgufFile>> GgufFile::open_memory(const uint8_t* data, size_t size, const std::string& name) {
  return parse(MappedFile::borrow(data, size, name));
}

Result<std::unique_ptr<GgufFile>> GgufFile::parse(std::unique_ptr<MappedFile> mapped) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->file_ = std::move(mapped);
  const std::string& p = file->file_->path();
  if (file->file_->size() == 0) return Status::error("'" + p + "' is empty, not a GGUF model");
  Cursor c(file->file_->data(), file->file_->size());

  uint32_t magic = 0;
  if (!c.read(&magic) || magic != kGgufMagic) {
    return Status::error("'" + p + "' is not a GGUF file (bad magic; expected \"GGUF\")");
  }
  auto truncated = [&](const std::string& what) {
    return Status::error("'" + p + "' is truncated or corrupt: " + what + " runs past the end of the file");
  };
  if (!c.read(&file->version_)) return truncated("header");
  if (file->version_ != 2 && file->version_ != 3) {
    return Status::error("'" + p + "' has GGUF version " + std::to_string(file->version_) + "; frugal reads versions 2 and 3");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  if (!c.read(&n_tensors) || !c.read(&n_kv)) return truncated("header");
  // Every kv takes >= 12 bytes and every tensor info >= 24: bound the counts by the file size.
  if (n_kv > c.remaining() / 12) return truncated("metadata (count " + std::to_string(n_kv) + ")");
  if (n_tensors > c.remaining() / 24) return truncated("tensor infos (count " + std::to_string(n_tensors) + ")");

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    uint32_t type = 0;
    if (!c.read_string(&key) || !c.read(&type)) return truncated("metadata key " + std::to_string(i));
    if (!is_valid_type(type)) {
      return Status::error("'" + p + "' is corrupt: metadata '" + key + "' has unknown value type " + std::to_string(type));
    }
    GgufValue value;
    Status s = read_value(c, static_cast<GgufType>(type), &value, key, 0);
    if (!s.is_ok()) return Status::error("'" + p + "': " + s.message());
    if (file->kv_index_.count(key)) return Status::error("'" + p + "' is corrupt: duplicate metadata key '" + key + "'");
    file->kv_index_[key] = file->kvs_.size();
    file->kvs_.emplace_back(std::move(key), std::move(value));
  }

  if (const GgufValue* a = file->find("general.alignment")) {
    int64_t alignment = a->as_int();
    if (!a->is_integer() || alignment <= 0 || alignment > (1 << 20) || (alignment & (alignment - 1)) != 0) {
      return Status::error("'" + p + "' has an invalid general.alignment (must be a power of two)");
    }
    file->alignment_ = static_cast<size_t>(alignment);
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    uint32_t n_dims = 0;
    if (!c.read_string(&t.name) || !c.read(&n_dims)) return truncated("tensor info " + std::to_string(i));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return Status::error("'" + p + "' is corrupt: tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
    }
    t.dims.resize(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = 0;
      if (!c.read(&dim)) return truncated("tensor info '" + t.name + "'");
      if (dim == 0 || dim > (uint64_t{1} << 40)) {
        return Status::error("'" + p + "' is corrupt: tensor '" + t.name + "' has dimension " + std::to_string(dim));
      }
      t.dims[d] = static_cast<int64_t>(dim);
    }
    if (!c.read(&t.type_id) || !c.read(&t.offset)) return truncated("tensor info '" + t.name + "'");
    t.traits = find_type_traits(t.type_id);
    if (t.traits == nullptr) {
      return Status::error("'" + p + "': tensor '" + t.name + "' has type " + std::string(ggml_type_name(t.type_id)) +
                           ", which frugal does not support");
    }
    // Overflow-safe element count.
    int64_t count = 1;
    for (int64_t d : t.dims) {
      if (count > std::numeric_limits<int64_t>::max() / d) return Status::error("'" + p + "' is corrupt: tensor '" + t.name + "' is too large");
      count *= d;
    }
    if (t.dims[0] % t.traits->block_size != 0) {
      return Status::error("'" + p + "' is corrupt: tensor '" + t.name + "' row length " + std::to_string(t.dims[0]) +
                           " is not a multiple of the " + t.traits->name + " block size");
    }
    // Overflow-safe byte size: F32 2^31 x 2^31 is 2^64 bytes, which would wrap to 0 and pass the
    // bounds check below (also found by
    // fuzz/gguf_model_fuzzer.cpp: 2^22 x 2^40 F32).
    const uint64_t blocks = static_cast<uint64_t>(count / t.traits->block_size);
    if (t.traits->block_bytes != 0 && blocks > std::numeric_limits<size_t>::max() / t.traits->block_bytes) {
      return Status::error("'" + p + "' is corrupt: tensor '" + t.name + "' is too large");
    }
    t.bytes = static_cast<size_t>(blocks) * t.traits->block_bytes;
    if (file->tensor_index_.count(t.name)) return Status::error("'" + p + "' is corrupt: duplicate tensor '" + t.name + "'");
    file->tensor_index_[t.name] = file->tensors_.size();
    file->tensors_.push_back(std::move(t));
  }

  size_t data_start = (c.position() + file->alignment_ - 1) / file->alignment_ * file->alignment_;
  size_t size = file->file_->size();
  for (auto& t : file->tensors_) {
    if (t.offset % file->alignment_ != 0) {
      return Status::error("'" + p + "' is corrupt: tensor '" + t.name + "' data offset is not aligned");
    }
    if (data_start > size || t.offset > size - data_start || t.bytes > size - data_start - t.offset) {
      return Status::error("'" + p + "' is truncated or corrupt: tensor '" + t.name + "' data lies past the end of the file");
    }
    t.data = file->file_->data() + data_start + t.offset;
    // Formats with internal structure (sparse-q8 masks) are checked once here, so kernels need
    // no bounds checks.
    if (t.traits->validate != nullptr) {
      std::string why;
      const int64_t cols = t.dims[0];
      if (!t.traits->validate(*t.traits, t.data, t.element_count() / cols, cols, &why)) {
        return Status::error("'" + p + "' is corrupt: tensor '" + t.name + "' (" + t.traits->name + "): " + why);
      }
    }
  }
  return file;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second].second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Result<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return Status::error("missing metadata key '" + key + "'");
  if (v->type != GgufType::kString) return Status::error("metadata key '" + key + "' is not a string");
  return v->string_value;
}

Result<int64_t> GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return Status::error("missing metadata key '" + key + "'");
  if (!v->is_integer()) return Status::error("metadata key '" + key + "' is not an integer");
  return v->as_int();
}

Result<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return Status::error("missing metadata key '" + key + "'");
  if (!v->is_number()) return Status::error("metadata key '" + key + "' is not a number");
  return v->as_double();
}

std::string GgufFile::get_string_or(const std::string& key, const std::string& fallback) const {
  const GgufValue* v = find(key);
  return v != nullptr && v->type == GgufType::kString ? v->string_value : fallback;
}

int64_t GgufFile::get_int_or(const std::string& key, int64_t fallback) const {
  const GgufValue* v = find(key);
  return v != nullptr && v->is_number() ? v->as_int() : fallback;
}

double GgufFile::get_float_or(const std::string& key, double fallback) const {
  const GgufValue* v = find(key);
  return v != nullptr && v->is_number() ? v->as_double() : fallback;
}

bool GgufFile::get_bool_or(const std::string& key, bool fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  if (v->type == GgufType::kBool) return v->bool_value;
  return v->is_number() ? v->as_int() != 0 : fallback;
}

}  // namespace frugal
