// GgufWriter: serializes metadata and tensors in GGUF v3 layout (ggml docs/gguf.md).
#include "io/gguf_writer.h"

#include "base/temp_files.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace frugal {
namespace {

template <typename T>
void append(std::vector<uint8_t>& out, T value) {
  const auto* p = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

void append_string(std::vector<uint8_t>& out, const std::string& s) {
  append<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

void append_typed_scalar(std::vector<uint8_t>& out, GgufType type, double number) {
  switch (type) {
    case GgufType::kUint8: append<uint8_t>(out, static_cast<uint8_t>(number)); break;
    case GgufType::kInt8: append<int8_t>(out, static_cast<int8_t>(number)); break;
    case GgufType::kUint16: append<uint16_t>(out, static_cast<uint16_t>(number)); break;
    case GgufType::kInt16: append<int16_t>(out, static_cast<int16_t>(number)); break;
    case GgufType::kUint32: append<uint32_t>(out, static_cast<uint32_t>(number)); break;
    case GgufType::kInt32: append<int32_t>(out, static_cast<int32_t>(number)); break;
    case GgufType::kUint64: append<uint64_t>(out, static_cast<uint64_t>(number)); break;
    case GgufType::kInt64: append<int64_t>(out, static_cast<int64_t>(number)); break;
    case GgufType::kFloat32: append<float>(out, static_cast<float>(number)); break;
    case GgufType::kFloat64: append<double>(out, number); break;
    case GgufType::kBool: append<uint8_t>(out, number != 0 ? 1 : 0); break;
    default: break;
  }
}

}  // namespace

void GgufWriter::put(const std::string& key, std::vector<uint8_t> encoded) {
  for (auto& e : entries_) {
    if (e.key == key) {
      e.encoded = std::move(encoded);
      return;
    }
  }
  entries_.push_back({key, std::move(encoded)});
}

void GgufWriter::set_string(const std::string& key, const std::string& value) {
  std::vector<uint8_t> e;
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kString));
  append_string(e, value);
  put(key, std::move(e));
}

void GgufWriter::set_uint32(const std::string& key, uint32_t value) {
  std::vector<uint8_t> e;
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kUint32));
  append<uint32_t>(e, value);
  put(key, std::move(e));
}

void GgufWriter::set_int32(const std::string& key, int32_t value) {
  std::vector<uint8_t> e;
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kInt32));
  append<int32_t>(e, value);
  put(key, std::move(e));
}

void GgufWriter::set_float32(const std::string& key, float value) {
  std::vector<uint8_t> e;
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kFloat32));
  append<float>(e, value);
  put(key, std::move(e));
}

void GgufWriter::set_bool(const std::string& key, bool value) {
  std::vector<uint8_t> e;
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kBool));
  append<uint8_t>(e, value ? 1 : 0);
  put(key, std::move(e));
}

void GgufWriter::set_string_array(const std::string& key, const std::vector<std::string>& values) {
  std::vector<uint8_t> e;
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kArray));
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kString));
  append<uint64_t>(e, values.size());
  for (const auto& s : values) append_string(e, s);
  put(key, std::move(e));
}

void GgufWriter::set_float32_array(const std::string& key, const std::vector<float>& values) {
  std::vector<uint8_t> e;
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kArray));
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kFloat32));
  append<uint64_t>(e, values.size());
  for (float v : values) append<float>(e, v);
  put(key, std::move(e));
}

void GgufWriter::set_int32_array(const std::string& key, const std::vector<int32_t>& values) {
  std::vector<uint8_t> e;
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kArray));
  append<uint32_t>(e, static_cast<uint32_t>(GgufType::kInt32));
  append<uint64_t>(e, values.size());
  for (int32_t v : values) append<int32_t>(e, v);
  put(key, std::move(e));
}

void GgufWriter::set_value(const std::string& key, const GgufValue& value) {
  std::vector<uint8_t> e;
  append<uint32_t>(e, static_cast<uint32_t>(value.type));
  if (value.type == GgufType::kString) {
    append_string(e, value.string_value);
  } else if (value.type == GgufType::kArray) {
    append<uint32_t>(e, static_cast<uint32_t>(value.element_type));
    if (value.element_type == GgufType::kString) {
      append<uint64_t>(e, value.strings.size());
      for (const auto& s : value.strings) append_string(e, s);
    } else if (value.element_type == GgufType::kArray) {
      append<uint64_t>(e, 0);  // nested arrays are not kept by the reader
    } else {
      append<uint64_t>(e, value.numbers.size());
      for (double n : value.numbers) append_typed_scalar(e, value.element_type, n);
    }
  } else if (value.type == GgufType::kUint64) {
    append<uint64_t>(e, value.uint_value);
  } else if (value.type == GgufType::kInt64) {
    append<int64_t>(e, value.int_value);
  } else {
    append_typed_scalar(e, value.type, value.as_double());
  }
  put(key, std::move(e));
}

void GgufWriter::add_tensor(const std::string& name, DType type, std::vector<int64_t> dims, std::vector<uint8_t> bytes) {
  tensors_.push_back({name, type, std::move(dims), std::move(bytes)});
}

std::vector<uint8_t> GgufWriter::header(const std::vector<uint64_t>& offsets) const {
  std::vector<uint8_t> head;
  append<uint32_t>(head, 0x46554747);
  append<uint32_t>(head, 3);
  append<uint64_t>(head, tensors_.size());
  bool has_alignment = false;
  for (const auto& e : entries_) has_alignment |= e.key == "general.alignment";
  append<uint64_t>(head, entries_.size() + (alignment_ != 32 && !has_alignment ? 1 : 0));
  for (const auto& e : entries_) {
    append_string(head, e.key);
    head.insert(head.end(), e.encoded.begin(), e.encoded.end());
  }
  if (alignment_ != 32 && !has_alignment) {
    append_string(head, "general.alignment");
    append<uint32_t>(head, static_cast<uint32_t>(GgufType::kUint32));
    append<uint32_t>(head, static_cast<uint32_t>(alignment_));
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    append_string(head, t.name);
    append<uint32_t>(head, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) append<uint64_t>(head, static_cast<uint64_t>(d));
    append<uint32_t>(head, static_cast<uint32_t>(t.type));
    append<uint64_t>(head, offsets[i]);
  }
  head.resize((head.size() + alignment_ - 1) / alignment_ * alignment_, 0);
  return head;
}

Status GgufWriter::write(const std::string& path) const {
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors_) {
    offsets.push_back(offset);
    offset += (t.bytes.size() + alignment_ - 1) / alignment_ * alignment_;
  }
  const std::vector<uint8_t> head = header(offsets);

  std::string temp = path + ".tmp-" + std::to_string(getpid());
  register_temp_file(temp);  // removed by a SIGINT/SIGTERM handler if one is installed
  FILE* f = std::fopen(temp.c_str(), "wb");
  if (f == nullptr) {
    unregister_temp_file(temp);
    return Status::error("cannot write '" + path + "': " + std::strerror(errno));
  }
  bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
  std::vector<uint8_t> pad(alignment_, 0);
  for (size_t i = 0; ok && i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    // An empty tensor writes nothing (fwrite must not be given the null data() of an empty vector).
    if (!t.bytes.empty()) ok = std::fwrite(t.bytes.data(), 1, t.bytes.size(), f) == t.bytes.size();
    size_t padding = (alignment_ - t.bytes.size() % alignment_) % alignment_;
    if (ok && padding) ok = std::fwrite(pad.data(), 1, padding, f) == padding;
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(temp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(temp.c_str());
    unregister_temp_file(temp);
    return Status::error("cannot write '" + path + "': " + std::strerror(err));
  }
  unregister_temp_file(temp);
  return Status::ok();
}

void GgufWriter::declare(const std::string& name, std::vector<int64_t> dims) {
  // The type is a placeholder until write_next: the header's size depends only on names and
  // dims, because each type and offset is a fixed-width field rewritten by finish().
  tensors_.push_back({name, DType::F32, std::move(dims), {}});
}

GgufWriter::~GgufWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(temp_.c_str());
    unregister_temp_file(temp_);
  }
}

Status GgufWriter::fail(const std::string& what) {
  const int err = errno;
  failed_ = true;
  if (file_ != nullptr) {
    std::fclose(file_);
    file_ = nullptr;
    std::remove(temp_.c_str());
    unregister_temp_file(temp_);
  }
  return Status::error("cannot write '" + path_ + "': " + what + (err != 0 ? std::string(": ") + std::strerror(err) : ""));
}

Status GgufWriter::begin(const std::string& path) {
  if (file_ != nullptr) return Status::error("GgufWriter::begin called twice for '" + path + "'");
  for (const auto& t : tensors_) {
    if (!t.bytes.empty()) return Status::error("GgufWriter: '" + t.name + "' was added with data; streaming takes declare() only");
  }
  path_ = path;
  temp_ = path + ".tmp-" + std::to_string(getpid());
  next_ = 0;
  data_offset_ = 0;
  failed_ = false;
  offsets_.assign(tensors_.size(), 0);
  errno = 0;
  register_temp_file(temp_);  // removed by a SIGINT/SIGTERM handler if one is installed
  file_ = std::fopen(temp_.c_str(), "wb");
  if (file_ == nullptr) return fail("cannot create the temporary file");
  // Provisional header: right size, final metadata, types and offsets filled in by finish().
  const std::vector<uint8_t> head = header(offsets_);
  if (std::fwrite(head.data(), 1, head.size(), file_) != head.size()) return fail("header");
  return Status::ok();
}

Status GgufWriter::write_next(DType type, const uint8_t* data, size_t bytes) {
  if (file_ == nullptr) return Status::error("GgufWriter::write_next without a successful begin()");
  if (next_ >= tensors_.size()) return fail("more tensors written than declared");
  Tensor& t = tensors_[next_];
  // The size must match the declared shape, or a reader would see the wrong extent.
  const TypeTraits* traits = find_type_traits(static_cast<uint32_t>(type));
  if (traits != nullptr && !t.dims.empty() && t.dims[0] % traits->block_size == 0) {
    int64_t rows = 1;
    for (size_t d = 1; d < t.dims.size(); ++d) rows *= t.dims[d];
    const size_t expected = static_cast<size_t>(rows) * row_bytes(*traits, t.dims[0]);
    if (expected != bytes) {
      return fail("tensor '" + t.name + "' has " + std::to_string(bytes) + " bytes, its shape and type need " + std::to_string(expected));
    }
  }
  t.type = type;
  offsets_[next_] = data_offset_;
  errno = 0;
  if (bytes > 0 && std::fwrite(data, 1, bytes, file_) != bytes) return fail("data of '" + t.name + "'");
  static const uint8_t pad[256] = {};
  const size_t padding = (alignment_ - bytes % alignment_) % alignment_;
  if (padding > 0 && std::fwrite(pad, 1, padding, file_) != padding) return fail("padding of '" + t.name + "'");
  data_offset_ += bytes + padding;
  ++next_;
  return Status::ok();
}

Status GgufWriter::finish() {
  if (file_ == nullptr) return Status::error("GgufWriter::finish without a successful begin()");
  if (next_ != tensors_.size()) {
    return fail(std::to_string(tensors_.size() - next_) + " declared tensors were never written");
  }
  const std::vector<uint8_t> head = header(offsets_);
  errno = 0;
  if (std::fseek(file_, 0, SEEK_SET) != 0 || std::fwrite(head.data(), 1, head.size(), file_) != head.size()) {
    return fail("header");
  }
  FILE* f = file_;
  file_ = nullptr;
  if (std::fclose(f) != 0) {
    std::remove(temp_.c_str());
    unregister_temp_file(temp_);
    return Status::error("cannot write '" + path_ + "': " + std::strerror(errno));
  }
  if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    std::remove(temp_.c_str());
    unregister_temp_file(temp_);
    return Status::error("cannot write '" + path_ + "': " + std::strerror(err));
  }
  unregister_temp_file(temp_);
  return Status::ok();
}

}  // namespace frugal
