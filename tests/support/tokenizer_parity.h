// Token-id parity with llama.cpp's llama-tokenize on a varied set of strings (shared by the
// real-model tests of every tokenizer kind).
#pragma once

#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace frugal::testing {

// Accents, CJK, Cyrillic, Arabic, emoji with joiners, code, numbers, contractions, whitespace
// runs, special-token text, and the empty string.
const std::vector<std::string>& tokenizer_cases();

// For every case: ids from `tokenizer` equal `llama-tokenize -m model_path --ids`, and decoding
// the ids gives the text back. Reports failures through GoogleTest.
void expect_same_ids_as_llama_tokenize(const Tokenizer& tokenizer, const std::string& model_path);

}  // namespace frugal::testing
