// TextStreamer: UTF-8-safe, stop-string-aware incremental detokenization (see the header).
#include "serve/openai_text_stream.h"

#include <algorithm>

namespace frugal::serve {

size_t utf8_complete_prefix(std::string_view bytes) {
  const size_t n = bytes.size();
  // A sequence is at most 4 bytes: look back over at most 3 continuation bytes for its lead.
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    const auto c = static_cast<unsigned char>(bytes[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    return back < need ? n - back : n;
  }
  return n;  // only continuation bytes (invalid): nothing to wait for
}

TextStreamer::TextStreamer(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

std::string TextStreamer::push(std::string_view bytes) {
  if (stopped_) return {};
  pending_.append(bytes);
  // A complete stop string anywhere in the held text ends the answer just before it.
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) first = std::min(first, pending_.find(stop));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  size_t safe = utf8_complete_prefix(pending_);
  // Hold back the longest tail that is the start of a stop string: it may still complete.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t k = std::min(stop.size() - 1, safe); k > hold; --k) {
      if (pending_.compare(safe - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  safe -= hold;
  std::string out = pending_.substr(0, safe);
  pending_.erase(0, safe);
  return out;
}

std::string TextStreamer::finish() {
  if (stopped_) return {};
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace frugal::serve
