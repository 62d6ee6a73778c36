// Builds the tokenizer and the chat template from a GGUF file's tokenizer.* metadata.
#pragma once

#include <memory>

#include "base/status.h"
#include "io/chat_template.h"
#include "io/gguf.h"
#include "io/tokenizer.h"

namespace frugal {

Result<VocabData> read_vocab(const GgufFile& file);
Result<std::unique_ptr<Tokenizer>> load_tokenizer(const GgufFile& file);
// The chat format named by tokenizer.chat_template (detected from its text), or by architecture.
ChatFormat detect_chat_format(const GgufFile& file);
// tokenizer.chat_template with the BOS/EOS token texts it refers to and the fallback format.
ChatTemplate read_chat_template(const GgufFile& file, const Tokenizer& tokenizer);

}  // namespace frugal
