// Chat templates: turns a conversation into the prompt text a chat-tuned model was trained on.
// The model's own tokenizer.chat_template (Jinja) is rendered by io/jinja.h; the built-in ChatML
// and Gemma formats are the fallbacks when a model has no template or its template fails.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "io/jinja.h"

namespace frugal {

enum class ChatFormat { kChatMl, kGemma };

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

const char* chat_format_name(ChatFormat format);

// Renders `messages` in a built-in format; with `add_generation_prompt` ends with the opening of
// the assistant turn.
std::string apply_chat_template(ChatFormat format, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt);

// Renders a Jinja chat template as Hugging Face's apply_chat_template does: globals messages,
// add_generation_prompt, bos_token, eos_token, tools=none (trim_blocks, lstrip_blocks).
Result<std::string> render_jinja_chat_template(const std::string& source, const std::vector<ChatMessage>& messages,
                                               bool add_generation_prompt, const std::string& bos_token,
                                               const std::string& eos_token);

// A model's chat template: its Jinja source (empty when the file has none), the texts of its BOS
// and EOS tokens, and the built-in format to fall back on.
struct ChatTemplate {
  std::string source;
  std::string bos_token;
  std::string eos_token;
  ChatFormat fallback = ChatFormat::kChatMl;

  bool has_source() const { return !source.empty(); }
  // The one entry point for callers (chat loop, `frugal template`, serve): the model's template
  // when it renders, else the fallback format. `used` (optional) gets "model template" or e.g.
  // "built-in chatml (the model has no chat template)". Never fails today, but returns a Result so
  // a caller that wants the model's template only can be given one later without a signature change.
  Result<std::string> apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                            std::string* used = nullptr) const;
  // The model's template only, with any variables (a dict: messages with tool_calls, tools,
  // add_generation_prompt, ...; bos_token/eos_token default to the model's, tools to none), for
  // callers that pass OpenAI-style messages through. Fails when there is no template.
  Result<std::string> render(const jinja::Value& variables) const;
};

}  // namespace frugal
