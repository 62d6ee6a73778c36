// The OpenAI API's wire format for `frugal serve`: request parsing and validation into engine
// requests, response / stream-chunk / error JSON. Shapes follow OpenAI's API reference
// (https://platform.openai.com/docs/api-reference/chat, .../completions, .../making-requests#errors).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/chat_template.h"
#include "serve/engine.h"

namespace frugal::serve {

// An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field, empty: null
  std::string code;   // e.g. "context_length_exceeded", empty: null
};
nlohmann::json error_json(const ApiError& error);
// Compact JSON text; invalid UTF-8 (a model can emit any bytes) becomes U+FFFD instead of throwing.
std::string dump_json(const nlohmann::json& value);

enum class Endpoint { kChat, kCompletion };

// One validated /v1/chat/completions or /v1/completions request.
struct CompletionParams {
  Endpoint endpoint = Endpoint::kChat;
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completions (text)
  std::vector<int32_t> prompt_tokens; // completions given as token ids
  bool prompt_is_tokens = false;
  std::optional<int64_t> max_tokens;  // absent: up to the context
  SamplerOptions sampling;
  bool seed_given = false;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;     // llama-server's extension: generate exactly max_tokens (benchmarks)
  bool echo = false;           // completions only
  std::optional<int64_t> lookup;  // frugal's extension: prompt-lookup draft tokens per step (0: off)
  std::string model;
};

// Fills `out` from a parsed JSON body or returns the 400 to answer. Unknown fields are ignored
// (clients send many optional ones); the fields it knows are type- and range-checked.
std::optional<ApiError> parse_completion_request(const nlohmann::json& body, Endpoint endpoint,
                                                 CompletionParams& out);

// Parses a request body; a syntax error becomes a 400 naming the position.
std::optional<ApiError> parse_json_body(const std::string& text, nlohmann::json& out);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
};
nlohmann::json usage_json(const Usage& usage);

// OpenAI's finish_reason for a finished sequence ("stop" for end of text or a stop string,
// "length" for max_tokens / the context).
const char* openai_finish_reason(FinishReason reason, bool stopped_by_string);

// Identity of one response: every chunk of a stream carries the same id, created and model.
struct ResponseHeader {
  std::string id;
  int64_t created = 0;
  std::string model;
};

// A whole (non-streamed) answer: chat.completion or text_completion.
nlohmann::json completion_json(Endpoint endpoint, const ResponseHeader& header, const std::string& text,
                               const char* finish_reason, const Usage& usage);
// One stream chunk (chat.completion.chunk or text_completion). `first` adds the assistant role
// (chat); a null `finish_reason` is a content chunk. With include_usage every chunk carries
// "usage": null and a final chunk with empty choices carries the totals (usage_chunk_json).
nlohmann::json chunk_json(Endpoint endpoint, const ResponseHeader& header, const std::string& text, bool first,
                          const char* finish_reason, bool include_usage);
nlohmann::json usage_chunk_json(Endpoint endpoint, const ResponseHeader& header, const Usage& usage);
// One Server-Sent Event: "data: PAYLOAD\n\n" (https://html.spec.whatwg.org/multipage/server-sent-events.html).
std::string sse_event(const std::string& payload);

}  // namespace frugal::serve
