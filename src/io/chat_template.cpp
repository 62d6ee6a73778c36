// ChatML (<|im_start|>role\n…<|im_end|>) and Gemma (<start_of_turn>user|model\n…<end_of_turn>).
#include "io/chat_template.h"

namespace frugal {

const char* chat_format_name(ChatFormat format) {
  return format == ChatFormat::kGemma ? "gemma" : "chatml";
}

std::string apply_chat_template(ChatFormat format, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt) {
  std::string out;
  if (format == ChatFormat::kChatMl) {
    for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
    return out;
  }
  // Gemma has no system role: its template prepends the system text to the first user turn.
  std::string pending_system;
  for (const auto& m : messages) {
    if (m.role == "system") {
      pending_system += m.content + "\n\n";
      continue;
    }
    const std::string role = m.role == "assistant" ? "model" : m.role;
    out += "<start_of_turn>" + role + "\n";
    if (role == "user") {
      out += pending_system;
      pending_system.clear();
    }
    out += m.content + "<end_of_turn>\n";
  }
  if (add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

}  // namespace frugal
