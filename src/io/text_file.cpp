// read_text_file: whole-file read with libbz2 decompression for ".bz2" names.
#include "io/text_file.h"

#include <bzlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace frugal {

Result<std::string> read_text_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) return Status::error("cannot open '" + path + "': " + std::strerror(errno));
  std::string out;
  char buffer[1 << 16];
  const bool compressed = path.size() > 4 && path.compare(path.size() - 4, 4, ".bz2") == 0;
  if (!compressed) {
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) out.append(buffer, n);
    if (std::ferror(file.get())) return Status::error("cannot read '" + path + "'");
    return out;
  }
  int error = BZ_OK;
  BZFILE* bz = BZ2_bzReadOpen(&error, file.get(), 0, 0, nullptr, 0);
  if (error != BZ_OK) return Status::error("'" + path + "' is not a bzip2 file");
  while (error == BZ_OK) {
    const int n = BZ2_bzRead(&error, bz, buffer, sizeof buffer);
    if ((error == BZ_OK || error == BZ_STREAM_END) && n > 0) out.append(buffer, static_cast<size_t>(n));
  }
  BZ2_bzReadClose(nullptr, bz);
  if (error != BZ_STREAM_END) return Status::error("'" + path + "' is a corrupt or truncated bzip2 file");
  return out;
}

}  // namespace frugal
