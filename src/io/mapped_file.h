// Read-only memory map of a whole file: weights are used in place, never copied.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"

namespace frugal {

class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> open(const std::string& path);
  // A view of bytes already in memory (the caller keeps them alive), named `name` in messages.
  // Lets the fuzzers parse their input in place, where ASan sees every byte read past its end.
  static std::unique_ptr<MappedFile> borrow(const uint8_t* data, size_t size, std::string name);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Drops the pages wholly inside [p, p + n) from this process's resident set (madvise
  // MADV_DONTNEED on a read-only file mapping: the next read faults them back in from the file).
  // A streaming pass over a model calls it on each tensor it has consumed, so the input's pages
  // do not add up to the whole file in peak RSS. No effect on a borrowed buffer.
  void release(const uint8_t* p, size_t n) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;  // false for borrow(): nothing to unmap
};

}  // namespace frugal
