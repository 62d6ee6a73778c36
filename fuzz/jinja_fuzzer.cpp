// libFuzzer target: arbitrary bytes as a chat template, parsed and rendered by the Jinja
// interpreter (io/jinja.h) with a standard conversation, as tokenizer.chat_template from an
// untrusted GGUF file would be. Properties beyond "no crash, no sanitizer report": parsing and
// rendering end (bounded steps, depth and output), and a failure is a Status with a message.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "io/jinja.h"

namespace {

const frugal::jinja::Value& globals() {
  static const frugal::jinja::Value g = [] {
    auto parsed = frugal::jinja::Value::from_json(
        R"({"messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"},)"
        R"( {"role": "assistant", "content": "Hello!", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},)"
        R"( {"role": "user", "content": "Bye"}], "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",)"
        R"( "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]})");
    if (!parsed.is_ok()) std::abort();
    return *parsed;
  }();
  return g;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  frugal::jinja::Options options;
  options.max_steps = 200000;  // keeps each input fast; the limits themselves are what is tested
  options.max_output = 1 << 20;
  auto tmpl = frugal::jinja::Template::parse(source, options);
  if (!tmpl.is_ok()) {
    if (tmpl.status().message().empty()) std::abort();
    return 0;
  }
  auto out = tmpl->render(globals());
  if (!out.is_ok() && out.status().message().empty()) std::abort();
  if (out.is_ok() && out->size() > options.max_output) std::abort();
  // The same bytes as JSON input (the --messages file of `frugal template`).
  auto json = frugal::jinja::Value::from_json(source);
  if (json.is_ok()) {
    std::string text;
    (void)json->to_json(text);
  }
  return 0;
}
