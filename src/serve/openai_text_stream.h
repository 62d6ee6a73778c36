// Incremental detokenization for streamed answers: token bytes in, text out that never splits a
// UTF-8 character and never shows a stop string (or a piece of one that may still complete).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace frugal::serve {

// Length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence (RFC 3629):
// a trailing lead byte whose continuation bytes have not all arrived is held back. Invalid bytes
// are not held (they can never become valid); the JSON writer replaces them with U+FFFD.
size_t utf8_complete_prefix(std::string_view bytes);

class TextStreamer {
 public:
  explicit TextStreamer(std::vector<std::string> stops = {});

  // Appends the bytes of one generated token and returns the text that is now safe to send.
  // When a stop string completes, returns the text before it, and stopped() turns true: the
  // caller cancels the sequence; the stop string and anything after it are never sent.
  std::string push(std::string_view bytes);
  // End of the sequence: whatever is still held back (an incomplete stop prefix is plain text now).
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace frugal::serve
