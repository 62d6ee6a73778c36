// Chat templates: turns a conversation into the prompt text a chat-tuned model was trained on.
// Formats are recognised from tokenizer.chat_template rather than running its Jinja code.
#pragma once

#include <string>
#include <vector>

namespace frugal {

enum class ChatFormat { kChatMl, kGemma };

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

const char* chat_format_name(ChatFormat format);

// Renders `messages`; with `add_generation_prompt` ends with the opening of the assistant turn.
std::string apply_chat_template(ChatFormat format, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt);

}  // namespace frugal
