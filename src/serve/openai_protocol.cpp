// OpenAI request validation and response shapes (see openai_protocol.h for the references).
#include "serve/openai_protocol.h"

#include <cmath>

namespace frugal::serve {
namespace {

using nlohmann::json;

ApiError bad(const std::string& param, const std::string& message, const std::string& code = "") {
  ApiError e;
  e.status = 400;
  e.param = param;
  e.message = message;
  e.code = code;
  return e;
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

// Reads an optional number field in [lo, hi]; null counts as absent (OpenAI's SDKs send null).
std::optional<ApiError> get_number(const json& body, const char* key, double lo, double hi, std::optional<double>& out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return bad(key, std::string("'") + key + "' must be a number, got " + type_name(*it));
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    return bad(key, std::string("'") + key + "' must be between " + json(lo).dump() + " and " + json(hi).dump() +
                        ", got " + it->dump());
  }
  out = v;
  return std::nullopt;
}

std::optional<ApiError> get_integer(const json& body, const char* key, int64_t lo, int64_t hi, std::optional<int64_t>& out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  // 3.0 is accepted as 3 (JavaScript clients cannot tell them apart); 3.5 is not.
  if (it->is_number_float()) {
    const double d = it->get<double>();
    if (!std::isfinite(d) || d != std::floor(d)) return bad(key, std::string("'") + key + "' must be an integer, got " + it->dump());
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi)) {
      return bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + it->dump());
    }
    out = static_cast<int64_t>(d);
    return std::nullopt;
  }
  if (!it->is_number_integer()) return bad(key, std::string("'") + key + "' must be an integer, got " + type_name(*it));
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return bad(key, std::string("'") + key + "' is too large: " + it->dump());
  }
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + it->dump());
  }
  out = v;
  return std::nullopt;
}

std::optional<ApiError> get_bool(const json& body, const char* key, bool& out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return bad(key, std::string("'") + key + "' must be a boolean, got " + type_name(*it));
  out = it->get<bool>();
  return std::nullopt;
}

// A message's content: a string, null (assistant turns with tool calls), or an array of content
// parts of which only {"type": "text", "text": ...} is supported (no images).
std::optional<ApiError> message_content(const json& content, size_t index, std::string& out) {
  const std::string param = "messages[" + std::to_string(index) + "].content";
  if (content.is_null()) return std::nullopt;
  if (content.is_string()) {
    out = content.get<std::string>();
    return std::nullopt;
  }
  if (!content.is_array()) return bad(param, "'" + param + "' must be a string or an array of content parts, got " + type_name(content));
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return bad(param, "'" + param + "[" + std::to_string(i) + "]' must be an object with a 'type'");
    }
    if (part["type"] != "text") {
      return bad(param, "content part type '" + part["type"].get<std::string>() + "' is not supported (only 'text')");
    }
    if (!part.contains("text") || !part["text"].is_string()) return bad(param, "'" + param + "[" + std::to_string(i) + "].text' must be a string");
    out += part["text"].get<std::string>();
  }
  return std::nullopt;
}

std::optional<ApiError> parse_messages(const json& body, std::vector<ChatMessage>& out) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) return bad("messages", "'messages' is required");
  if (!it->is_array()) return bad("messages", std::string("'messages' must be an array, got ") + type_name(*it));
  if (it->empty()) return bad("messages", "'messages' must contain at least one message");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return bad(at, "'" + at + "' must be an object, got " + type_name(m));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return bad(at + ".role", "'" + at + ".role' must be a string");
    std::string r = role->get<std::string>();
    // "developer" is OpenAI's newer name for the system role (o1 and later).
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant") {
      return bad(at + ".role", "'" + at + ".role' must be 'system', 'developer', 'user' or 'assistant', got '" + r + "'");
    }
    ChatMessage message;
    message.role = r;
    auto content = m.find("content");
    if (content == m.end()) return bad(at + ".content", "'" + at + ".content' is required");
    if (auto e = message_content(*content, i, message.content)) return e;
    out.push_back(std::move(message));
  }
  return std::nullopt;
}

std::optional<ApiError> parse_prompt(const json& body, CompletionParams& out) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return bad("prompt", "'prompt' is required");
  if (it->is_string()) {
    out.prompt = it->get<std::string>();
    return std::nullopt;
  }
  if (it->is_array()) {
    // OpenAI accepts a string, an array of strings (a batch), an array of token ids, or an array
    // of arrays of ids. A batch of more than one prompt would need n > 1 choices: refused.
    if (it->size() == 1 && (*it)[0].is_string()) {
      out.prompt = (*it)[0].get<std::string>();
      return std::nullopt;
    }
    const json* ids = &*it;
    if (it->size() == 1 && (*it)[0].is_array()) ids = &(*it)[0];
    bool all_ints = !ids->empty();
    for (const json& v : *ids) all_ints = all_ints && v.is_number_integer();
    if (all_ints) {
      for (const json& v : *ids) {
        const int64_t id = v.get<int64_t>();
        if (id < 0 || id > INT32_MAX) return bad("prompt", "token id " + v.dump() + " in 'prompt' is out of range");
        out.prompt_tokens.push_back(static_cast<int32_t>(id));
      }
      out.prompt_is_tokens = true;
      return std::nullopt;
    }
    return bad("prompt", "'prompt' must be a string, one string in an array, or an array of token ids (batches of prompts are not supported)");
  }
  return bad("prompt", std::string("'prompt' must be a string or an array, got ") + type_name(*it));
}

std::optional<ApiError> parse_stop(const json& body, std::vector<std::string>& out) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) {
    if (!it->get<std::string>().empty()) out.push_back(it->get<std::string>());
    return std::nullopt;
  }
  if (!it->is_array()) return bad("stop", std::string("'stop' must be a string or an array of strings, got ") + type_name(*it));
  // OpenAI allows up to 4 stop sequences; a few more cost nothing here.
  if (it->size() > 16) return bad("stop", "'stop' may hold at most 16 strings");
  for (const json& s : *it) {
    if (!s.is_string()) return bad("stop", std::string("every entry of 'stop' must be a string, got ") + type_name(s));
    if (!s.get<std::string>().empty()) out.push_back(s.get<std::string>());
  }
  return std::nullopt;
}

}  // namespace

json error_json(const ApiError& error) {
  return json{{"error",
               {{"message", error.message},
                {"type", error.type},
                {"param", error.param.empty() ? json(nullptr) : json(error.param)},
                {"code", error.code.empty() ? json(nullptr) : json(error.code)}}}};
}

std::string dump_json(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

std::optional<ApiError> parse_json_body(const std::string& text, json& out) {
  try {
    out = json::parse(text);
  } catch (const json::parse_error& e) {
    return bad("", std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!out.is_object()) return bad("", std::string("the request body must be a JSON object, got ") + type_name(out));
  return std::nullopt;
}

std::optional<ApiError> parse_completion_request(const json& body, Endpoint endpoint, CompletionParams& out) {
  out = CompletionParams();
  out.endpoint = endpoint;
  if (!body.is_object()) return bad("", "the request body must be a JSON object");
  if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return bad("model", std::string("'model' must be a string, got ") + type_name(*it));
    out.model = it->get<std::string>();
  }
  if (endpoint == Endpoint::kChat) {
    if (auto e = parse_messages(body, out.messages)) return e;
  } else {
    if (auto e = parse_prompt(body, out)) return e;
    if (auto e = get_bool(body, "echo", out.echo)) return e;
  }
  // max_completion_tokens is the newer name (OpenAI deprecated max_tokens for chat); either works.
  std::optional<int64_t> max_tokens, max_completion_tokens, n, top_k, seed;
  if (auto e = get_integer(body, "max_tokens", 1, INT32_MAX, max_tokens)) return e;
  if (auto e = get_integer(body, "max_completion_tokens", 1, INT32_MAX, max_completion_tokens)) return e;
  out.max_tokens = max_completion_tokens ? max_completion_tokens : max_tokens;
  if (auto e = get_integer(body, "n", 1, 128, n)) return e;
  if (n && *n != 1) return bad("n", "only n=1 is supported (one choice per request), got " + std::to_string(*n));
  std::optional<double> temperature, top_p, min_p, presence, frequency;
  // Ranges from the API reference: temperature 0..2, top_p 0..1, penalties -2..2.
  if (auto e = get_number(body, "temperature", 0.0, 2.0, temperature)) return e;
  if (auto e = get_number(body, "top_p", 0.0, 1.0, top_p)) return e;
  if (auto e = get_number(body, "min_p", 0.0, 1.0, min_p)) return e;
  if (auto e = get_integer(body, "top_k", 0, INT32_MAX, top_k)) return e;
  if (auto e = get_number(body, "presence_penalty", -2.0, 2.0, presence)) return e;
  if (auto e = get_number(body, "frequency_penalty", -2.0, 2.0, frequency)) return e;
  if (auto e = get_integer(body, "seed", INT64_MIN, INT64_MAX, seed)) return e;
  if (temperature) out.sampling.temperature = static_cast<float>(*temperature);
  if (top_p) {
    if (*top_p <= 0.0) return bad("top_p", "'top_p' must be greater than 0");
    out.sampling.top_p = static_cast<float>(*top_p);
  }
  if (min_p) out.sampling.min_p = static_cast<float>(*min_p);
  if (top_k) out.sampling.top_k = static_cast<int32_t>(*top_k);
  if (seed) {
    out.sampling.seed = static_cast<uint64_t>(*seed);
    out.seed_given = true;
  }
  if (presence) out.presence_penalty = static_cast<float>(*presence);
  if (frequency) out.frequency_penalty = static_cast<float>(*frequency);
  if (auto e = parse_stop(body, out.stop)) return e;
  if (auto e = get_bool(body, "stream", out.stream)) return e;
  if (auto e = get_bool(body, "ignore_eos", out.ignore_eos)) return e;
  if (auto e = get_integer(body, "lookup", 0, 16, out.lookup)) return e;
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!out.stream) return bad("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (!it->is_object()) return bad("stream_options", std::string("'stream_options' must be an object, got ") + type_name(*it));
    if (auto e = get_bool(*it, "include_usage", out.include_usage)) {
      e->param = "stream_options.include_usage";
      return e;
    }
  }
  if (auto it = body.find("logprobs"); it != body.end() && !it->is_null() && !(it->is_boolean() && !it->get<bool>())) {
    return bad("logprobs", "'logprobs' is not supported");
  }
  if (auto it = body.find("tools"); it != body.end() && it->is_array() && !it->empty()) {
    return bad("tools", "tool calling is not supported");
  }
  return std::nullopt;
}

json usage_json(const Usage& usage) {
  return json{{"prompt_tokens", usage.prompt_tokens},
              {"completion_tokens", usage.completion_tokens},
              {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}

const char* openai_finish_reason(FinishReason reason, bool stopped_by_string) {
  if (stopped_by_string) return "stop";
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kEndOfText: return "stop";
    default: return "stop";
  }
}

json completion_json(Endpoint endpoint, const ResponseHeader& header, const std::string& text, const char* finish_reason,
                     const Usage& usage) {
  json choice;
  if (endpoint == Endpoint::kChat) {
    choice = {{"index", 0},
              {"message", {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}}},
              {"logprobs", nullptr},
              {"finish_reason", finish_reason}};
  } else {
    choice = {{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  }
  return json{{"id", header.id},
              {"object", endpoint == Endpoint::kChat ? "chat.completion" : "text_completion"},
              {"created", header.created},
              {"model", header.model},
              {"system_fingerprint", "frugal"},
              {"choices", json::array({choice})},
              {"usage", usage_json(usage)}};
}

json chunk_json(Endpoint endpoint, const ResponseHeader& header, const std::string& text, bool first,
                const char* finish_reason, bool include_usage) {
  json choice;
  if (endpoint == Endpoint::kChat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!finish_reason) delta["content"] = text;
    choice = {{"index", 0}, {"delta", delta}, {"logprobs", nullptr}};
  } else {
    choice = {{"index", 0}, {"text", text}, {"logprobs", nullptr}};
  }
  choice["finish_reason"] = finish_reason ? json(finish_reason) : json(nullptr);
  json chunk{{"id", header.id},
             {"object", endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
             {"created", header.created},
             {"model", header.model},
             {"system_fingerprint", "frugal"},
             {"choices", json::array({choice})}};
  if (include_usage) chunk["usage"] = nullptr;
  return chunk;
}

json usage_chunk_json(Endpoint endpoint, const ResponseHeader& header, const Usage& usage) {
  return json{{"id", header.id},
              {"object", endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
              {"created", header.created},
              {"model", header.model},
              {"system_fingerprint", "frugal"},
              {"choices", json::array()},
              {"usage", usage_json(usage)}};
}

std::string sse_event(const std::string& payload) { return "data: " + payload + "\n\n"; }

}  // namespace frugal::serve
