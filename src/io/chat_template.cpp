// Chat prompts: the model's Jinja template (io/jinja.h), with the built-in ChatML
// (<|im_start|>role\n…<|im_end|>) and Gemma (<start_of_turn>user|model\n…<end_of_turn>) as fallbacks.
#include "io/chat_template.h"

#include "io/jinja.h"

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

Result<std::string> render_jinja_chat_template(const std::string& source, const std::vector<ChatMessage>& messages,
                                               bool add_generation_prompt, const std::string& bos_token,
                                               const std::string& eos_token) {
  auto tmpl = jinja::Template::parse(source);
  if (!tmpl) return tmpl.status();
  jinja::Value list = jinja::Value::array();
  for (const auto& m : messages) {
    jinja::Value message = jinja::Value::object();
    message.set("role", m.role);
    message.set("content", m.content);
    list.push_back(message);
  }
  jinja::Value globals = jinja::Value::object();
  globals.set("messages", list);
  globals.set("add_generation_prompt", add_generation_prompt);
  globals.set("bos_token", bos_token);
  globals.set("eos_token", eos_token);
  globals.set("tools", jinja::Value::none());
  return tmpl->render(globals);
}

Result<std::string> ChatTemplate::render(const jinja::Value& variables) const {
  if (!has_source()) return Status::error("the model has no chat template (tokenizer.chat_template)");
  auto tmpl = jinja::Template::parse(source);
  if (!tmpl) return tmpl.status();
  jinja::Value globals = jinja::Value::object();
  globals.set("bos_token", bos_token);
  globals.set("eos_token", eos_token);
  globals.set("tools", jinja::Value::none());
  globals.set("add_generation_prompt", false);
  if (variables.is_object())
    for (const auto& [k, v] : variables.as_object().items) globals.set(k, v);
  return tmpl->render(globals);
}

Result<std::string> ChatTemplate::apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                        std::string* used) const {
  std::string why = "the model has no chat template";
  if (has_source()) {
    auto rendered = render_jinja_chat_template(source, messages, add_generation_prompt, bos_token, eos_token);
    if (rendered) {
      if (used) *used = "model template";
      return rendered;
    }
    why = "the model's template failed: " + rendered.status().message();
  }
  if (used) *used = std::string("built-in ") + chat_format_name(fallback) + " (" + why + ")";
  return apply_chat_template(fallback, messages, add_generation_prompt);
}

}  // namespace frugal
