// UTF-8 encoding of one code point, shared by the tokenizers and the Jinja interpreter (RFC 3629).
#pragma once

#include <cstdint>
#include <string>

namespace frugal {

// Appends the UTF-8 encoding of `code_point` (<= 0x10FFFF): 1 to 4 bytes.
void append_utf8(std::string& out, uint32_t code_point);

}  // namespace frugal
