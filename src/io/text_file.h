// Reads evaluation and calibration text: plain files, or bzip2-compressed ones (".bz2").
#pragma once

#include <string>

#include "base/status.h"

namespace frugal {

Result<std::string> read_text_file(const std::string& path);

}  // namespace frugal
