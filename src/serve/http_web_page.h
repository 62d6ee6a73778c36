// The chat page served at GET / (src/serve/web/index.html, embedded into the binary at build time).
#pragma once

#include <string>

namespace frugal::serve {

const std::string& web_index_html();

}  // namespace frugal::serve
