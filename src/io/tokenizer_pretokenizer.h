// The regex pre-tokenizer of byte-level BPE (GPT-2 style): splits text into words before BPE,
// with the patterns chosen by the GGUF tokenizer.ggml.pre name. Runs on PCRE2 (UTF + UCP).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace frugal::detail {

class RegexPreTokenizer {
 public:
  // The patterns llama.cpp uses for a tokenizer.ggml.pre name. `ignore_merges` is set for the
  // families whose Hugging Face BPE model has ignore_merges (a word that is itself a token is
  // taken whole). Unknown names fall back to the GPT-2 pattern with a warning on stderr.
  static Result<RegexPreTokenizer> for_pre_name(std::string_view pre, bool* ignore_merges);
  // Patterns applied one after another: each splits every piece the previous one produced into
  // its matches and the text between them (Hugging Face "Isolated" split behaviour).
  static Result<RegexPreTokenizer> from_patterns(const std::vector<std::string>& patterns);

  // Splits valid UTF-8 `text` into words, appended to `words` as [begin, end) byte ranges that
  // cover the text in order.
  void split(std::string_view text, std::vector<std::pair<size_t, size_t>>& words) const;

  struct Stage;  // one compiled pattern (PCRE2 code), defined in the .cpp

 private:
  std::vector<std::shared_ptr<const Stage>> stages_;
};

}  // namespace frugal::detail
