// HttpServer: routes, authentication, OpenAI completions (whole and streamed), metrics, page.
#include "serve/http_server.h"

#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <condition_variable>
#include <deque>
#include <random>
#include <set>
#include <thread>

#include "model/model.h"
#include "serve/http_web_page.h"
#include "serve/openai_protocol.h"
#include "serve/openai_text_stream.h"

namespace frugal::serve {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// How often a waiting handler checks that its client is still connected.
constexpr auto kPollInterval = std::chrono::milliseconds(20);

// The one place the chat template is applied; the model's own (Jinja) template replaces this
// call alone: `return model.chat_template().apply(messages, true);` (branch h-chat).
Result<std::string> chat_prompt(const Model& model, const std::vector<ChatMessage>& messages) {
  return apply_chat_template(model.chat_format(), messages, true);
}

class ModelText : public TextModel {
 public:
  explicit ModelText(std::shared_ptr<const Model> model) : model_(std::move(model)) {}
  std::vector<int32_t> encode(const std::string& text, bool add_special) const override {
    return model_->tokenizer().encode(text, add_special, true);
  }
  std::string piece(int32_t token) const override {
    if (token < 0 || token >= vocab_size()) return {};
    return model_->tokenizer().token_to_piece(token, false);
  }
  int32_t vocab_size() const override { return model_->tokenizer().vocab_size(); }
  Result<std::string> render_chat(const std::vector<ChatMessage>& messages) const override {
    return chat_prompt(*model_, messages);
  }

 private:
  std::shared_ptr<const Model> model_;
};

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& error) { send_json(res, error.status, error_json(error)); }

ApiError make_error(int status, std::string message, std::string type, std::string code = "") {
  ApiError e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return e;
}

// The status for an engine's submit error: a full queue is overload (429, engine.h's
// is_queue_full); otherwise the message decides (stopping: 503; context or bad request: 400).
ApiError submit_error(const Status& status) {
  std::string lower = status.message();
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (is_queue_full(status)) {
    return make_error(429, "the server is overloaded: " + status.message() + "; retry later", "rate_limit_error",
                      "rate_limit_exceeded");
  }
  if (lower.find("stop") != std::string::npos || lower.find("shut") != std::string::npos) {
    return make_error(503, "the server is shutting down: " + status.message(), "server_error", "unavailable");
  }
  if (lower.find("context") != std::string::npos) {
    return make_error(400, status.message(), "invalid_request_error", "context_length_exceeded");
  }
  return make_error(400, status.message(), "invalid_request_error");
}

// Tokens from the engine's thread to the handler's: the callback only queues (engine.h asks it
// to be quick) and reports whether the consumer still wants more.
struct EventQueue {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<TokenEvent> events;
  std::atomic<bool> cancelled{false};

  bool push(const TokenEvent& event) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      events.push_back(event);
    }
    ready.notify_one();
    return !cancelled.load();
  }
  // Waits up to `wait` for events and moves them out.
  void pop(std::deque<TokenEvent>& out, std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mutex);
    ready.wait_for(lock, wait, [&] { return !events.empty(); });
    out.swap(events);
    events.clear();
  }
};

// A client that closed its connection: the socket is readable and a peek reads end-of-file.
// cpp-httplib 0.11 does not hand the socket to handlers, so it is found by the connection's
// addresses among the process's sockets, once per request (a few dozen descriptors).
int find_client_socket(const httplib::Request& req) {
  std::vector<int> fds;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", error)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      fds.push_back(std::stoi(name));
    }
  }
  for (int fd : fds) {
    sockaddr_storage peer{}, local{};
    socklen_t peer_len = sizeof(peer), local_len = sizeof(local);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) continue;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    auto port_of = [](const sockaddr_storage& a) {
      if (a.ss_family == AF_INET) return static_cast<int>(ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port));
      if (a.ss_family == AF_INET6) return static_cast<int>(ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port));
      return -1;
    };
    if (port_of(peer) == req.remote_port && port_of(local) == req.local_port) return fd;
  }
  return -1;
}

bool client_gone(int fd) {
  if (fd < 0) return false;
  char byte;
  const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// One request's generation as seen by the HTTP layer: engine events turned into text.
struct Generation {
  std::shared_ptr<EventQueue> queue = std::make_shared<EventQueue>();
  std::shared_ptr<Engine> engine;
  std::shared_ptr<const TextModel> model;
  RequestId id = 0;
  TextStreamer streamer;
  Usage usage;
  FinishReason finish = FinishReason::kNone;
  bool stopped_by_string = false;
  bool done = false;
  std::string error;
  std::atomic<int64_t>* active = nullptr;

  ~Generation() {
    if (!done) cancel();
    if (active) active->fetch_sub(1);
  }
  void cancel() {
    queue->cancelled = true;
    if (id != 0) engine->cancel(id);
  }
  // Takes the events that arrived within `wait`; appends the text now safe to send. True when
  // the sequence has finished (end of text, length, stop string, error, cancel).
  bool advance(std::string& text, std::chrono::milliseconds wait) {
    if (done) return true;
    std::deque<TokenEvent> events;
    queue->pop(events, wait);
    for (const TokenEvent& event : events) {
      usage.prompt_tokens = std::max(usage.prompt_tokens, event.prompt_tokens);
      usage.cached_tokens = std::max(usage.cached_tokens, event.cached_prompt_tokens);
      usage.completion_tokens = std::max(usage.completion_tokens, event.generated_tokens);
      if (event.token >= 0) {
        text += streamer.push(model->piece(event.token));
        if (streamer.stopped()) {
          // The stop string is found: the sequence is cancelled and its blocks freed now.
          stopped_by_string = true;
          finish = FinishReason::kEndOfText;
          cancel();
          done = true;
          return true;
        }
        continue;
      }
      finish = event.finish;
      if (finish == FinishReason::kError) error = event.error.empty() ? "generation failed" : event.error;
      text += streamer.finish();
      done = true;
      return true;
    }
    return false;
  }
};

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  static const char* kDigits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += kDigits[rng() % 62];
  return id;
}

struct Route {
  std::set<std::string> methods;
  bool needs_key;
};

const std::map<std::string, Route>& routes() {
  static const std::map<std::string, Route> table = {
      {"/", {{"GET"}, false}},
      {"/index.html", {{"GET"}, false}},
      {"/health", {{"GET"}, false}},
      {"/metrics", {{"GET"}, true}},
      {"/v1/models", {{"GET"}, true}},
      {"/v1/chat/completions", {{"POST"}, true}},
      {"/v1/completions", {{"POST"}, true}},
      {"/tokenize", {{"POST"}, true}},
      {"/detokenize", {{"POST"}, true}},
  };
  return table;
}

}  // namespace

std::shared_ptr<TextModel> make_text_model(std::shared_ptr<const Model> model) {
  return std::make_shared<ModelText>(std::move(model));
}

struct HttpServer::Impl {
  // Validates and submits; on success fills `generation` (already running in the engine).
  static std::optional<ApiError> start(HttpServer& self, const CompletionParams& params, Generation& generation,
                                       std::string& echo_text) {
    std::vector<int32_t> prompt;
    if (params.endpoint == Endpoint::kChat) {
      auto rendered = self.model_->render_chat(params.messages);
      if (!rendered) return make_error(400, "cannot apply the chat template: " + rendered.status().message(), "invalid_request_error");
      prompt = self.model_->encode(*rendered, true);
    } else if (params.prompt_is_tokens) {
      prompt = params.prompt_tokens;
      for (int32_t t : prompt) {
        if (t >= self.model_->vocab_size()) {
          ApiError e = make_error(400, "token id " + std::to_string(t) + " in 'prompt' is not below the vocabulary size " +
                                           std::to_string(self.model_->vocab_size()), "invalid_request_error");
          e.param = "prompt";
          return e;
        }
      }
    } else {
      prompt = self.model_->encode(params.prompt, true);
    }
    if (params.echo) {
      if (params.prompt_is_tokens) {
        for (int32_t t : prompt) echo_text += self.model_->piece(t);
      } else {
        echo_text = params.prompt;
      }
    }
    if (prompt.empty()) {
      ApiError e = make_error(400, "the prompt is empty", "invalid_request_error");
      e.param = params.endpoint == Endpoint::kChat ? "messages" : "prompt";
      return e;
    }
    // Context checks, worded as OpenAI words them ("This model's maximum context length is ...").
    const int64_t context = self.engine_->context_size();
    const int64_t n_prompt = static_cast<int64_t>(prompt.size());
    if (n_prompt >= context) {
      ApiError e = make_error(400, "This model's maximum context length is " + std::to_string(context) +
                                       " tokens. However, your prompt is " + std::to_string(n_prompt) +
                                       " tokens (at least one token must be left to generate).",
                              "invalid_request_error", "context_length_exceeded");
      e.param = params.endpoint == Endpoint::kChat ? "messages" : "prompt";
      return e;
    }
    int64_t max_tokens = context - n_prompt;
    if (params.max_tokens) {
      if (n_prompt + *params.max_tokens > context) {
        ApiError e = make_error(400, "This model's maximum context length is " + std::to_string(context) +
                                         " tokens. However, you requested " + std::to_string(n_prompt + *params.max_tokens) +
                                         " tokens (" + std::to_string(n_prompt) + " in the prompt, " +
                                         std::to_string(*params.max_tokens) + " for the completion). Please reduce the prompt or max_tokens.",
                                "invalid_request_error", "context_length_exceeded");
        e.param = "max_tokens";
        return e;
      }
      max_tokens = *params.max_tokens;
    }
    GenerationRequest request;
    request.prompt = std::move(prompt);
    request.max_tokens = max_tokens;
    request.sampling = params.sampling;
    if (!params.seed_given) request.sampling.seed = std::random_device{}();
    request.reproducible_sampling = params.seed_given;
    request.presence_penalty = params.presence_penalty;
    request.frequency_penalty = params.frequency_penalty;
    request.ignore_end_of_text = params.ignore_eos;
    request.lookup_draft = params.lookup ? static_cast<int>(*params.lookup) : -1;

    generation.engine = self.engine_;
    generation.model = self.model_;
    generation.streamer = TextStreamer(params.stop);
    generation.usage.prompt_tokens = n_prompt;
    std::shared_ptr<EventQueue> queue = generation.queue;
    auto id = self.engine_->submit(std::move(request), [queue](const TokenEvent& event) { return queue->push(event); });
    if (!id) {
      generation.done = true;
      ApiError e = submit_error(id.status());
      if (e.status == 429) self.counters_.rejected_overload++;
      return e;
    }
    generation.id = *id;
    return std::nullopt;
  }

  static void completion(HttpServer& self, const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
    json body;
    if (auto e = parse_json_body(req.body, body)) return send_error(res, *e);
    CompletionParams params;
    if (auto e = parse_completion_request(body, endpoint, params)) return send_error(res, *e);
    auto generation = std::make_shared<Generation>();
    std::string echo_text;
    if (auto e = start(self, params, *generation, echo_text)) return send_error(res, *e);
    self.counters_.completions++;
    generation->active = &self.active_handlers_;
    self.active_handlers_++;
    ResponseHeader header{random_id(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-"),
                          static_cast<int64_t>(std::time(nullptr)), self.options_.model_name};

    if (!params.stream) {
      const int fd = find_client_socket(req);
      std::string text = echo_text;
      while (!generation->advance(text, kPollInterval)) {
        if (client_gone(fd)) {
          // Nobody will read the answer: free the sequence now instead of generating it.
          generation->cancel();
          self.counters_.streams_cancelled++;
          res.status = 499;  // nginx's "client closed request"; never reaches the client
          return;
        }
      }
      if (generation->finish == FinishReason::kError) {
        return send_error(res, make_error(500, "generation failed: " + generation->error, "server_error"));
      }
      return send_json(res, 200,
                       completion_json(endpoint, header, text,
                                       openai_finish_reason(generation->finish, generation->stopped_by_string),
                                       generation->usage));
    }

    // Streaming (https://platform.openai.com/docs/api-reference/chat/streaming): chunks as SSE
    // "data:" events, a last chunk with finish_reason, the usage chunk when asked, "data: [DONE]".
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    auto first = std::make_shared<bool>(true);
    auto pending = std::make_shared<std::string>(echo_text);
    Counters* counters = &self.counters_;
    const bool include_usage = params.include_usage;
    res.set_chunked_content_provider(
        "text/event-stream",
        [generation, header, endpoint, first, pending, include_usage, counters](size_t, httplib::DataSink& sink) {
          auto write = [&](const std::string& data) { return sink.write(data.data(), data.size()); };
          if (*first && endpoint == Endpoint::kChat) {
            // The first chat chunk names the role (delta {"role": "assistant", "content": ""}).
            if (!write(sse_event(dump_json(chunk_json(endpoint, header, "", true, nullptr, include_usage))))) {
              generation->cancel();
              return false;
            }
            *first = false;
          }
          std::string text;
          text.swap(*pending);
          const auto started = Clock::now();
          bool finished = false;
          // Collect what arrives for a short while, so one chunk can carry several tokens under load.
          while (!(finished = generation->advance(text, kPollInterval)) && text.empty()) {
            if (!sink.is_writable()) {
              generation->cancel();  // the client went away: its blocks are freed before the next step
              counters->streams_cancelled++;
              return false;
            }
            if (Clock::now() - started > std::chrono::seconds(1)) break;  // let httplib check for shutdown
          }
          if (!text.empty() &&
              !write(sse_event(dump_json(chunk_json(endpoint, header, text, false, nullptr, include_usage))))) {
            generation->cancel();
            counters->streams_cancelled++;
            return false;
          }
          if (!finished) return true;
          std::string tail;
          if (generation->finish == FinishReason::kError) {
            ApiError e = make_error(500, "generation failed: " + generation->error, "server_error");
            tail += sse_event(dump_json(error_json(e)));
          } else {
            const char* reason = openai_finish_reason(generation->finish, generation->stopped_by_string);
            tail += sse_event(dump_json(chunk_json(endpoint, header, "", false, reason, include_usage)));
            if (include_usage) tail += sse_event(dump_json(usage_chunk_json(endpoint, header, generation->usage)));
          }
          tail += sse_event("[DONE]");
          write(tail);
          sink.done();
          return true;
        },
        [generation](bool) {
          if (!generation->done) generation->cancel();
        });
  }

  static void tokenize(HttpServer& self, const httplib::Request& req, httplib::Response& res) {
    json body;
    if (auto e = parse_json_body(req.body, body)) return send_error(res, *e);
    auto content = body.find("content");
    if (content == body.end() || !content->is_string()) {
      ApiError e = make_error(400, "'content' must be a string", "invalid_request_error");
      e.param = "content";
      return send_error(res, e);
    }
    bool add_special = false, with_pieces = false;
    for (auto [key, target] : {std::pair<const char*, bool*>{"add_special", &add_special}, {"with_pieces", &with_pieces}}) {
      auto it = body.find(key);
      if (it == body.end() || it->is_null()) continue;
      if (!it->is_boolean()) {
        ApiError e = make_error(400, std::string("'") + key + "' must be a boolean", "invalid_request_error");
        e.param = key;
        return send_error(res, e);
      }
      *target = it->get<bool>();
    }
    const std::vector<int32_t> ids = self.model_->encode(content->get<std::string>(), add_special);
    json tokens = json::array();
    for (int32_t id : ids) {
      if (with_pieces) tokens.push_back({{"id", id}, {"piece", self.model_->piece(id)}});
      else tokens.push_back(id);
    }
    send_json(res, 200, json{{"tokens", tokens}});
  }

  static void detokenize(HttpServer& self, const httplib::Request& req, httplib::Response& res) {
    json body;
    if (auto e = parse_json_body(req.body, body)) return send_error(res, *e);
    auto tokens = body.find("tokens");
    ApiError e = make_error(400, "'tokens' must be an array of token ids", "invalid_request_error");
    e.param = "tokens";
    if (tokens == body.end() || !tokens->is_array()) return send_error(res, e);
    std::string text;
    for (const json& t : *tokens) {
      if (!t.is_number_integer()) return send_error(res, e);
      const int64_t id = t.get<int64_t>();
      if (id < 0 || id >= self.model_->vocab_size()) {
        e.message = "token id " + std::to_string(id) + " is outside the vocabulary (0.." + std::to_string(self.model_->vocab_size() - 1) + ")";
        return send_error(res, e);
      }
      text += self.model_->piece(static_cast<int32_t>(id));
    }
    send_json(res, 200, json{{"content", text}});
  }

  // Prometheus text exposition format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
  static std::string metrics(HttpServer& self) {
    const EngineStats s = self.engine_->stats();
    std::string out;
    auto add = [&](const char* name, const char* type, const char* help, double value) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " ";
      char buffer[64];
      std::snprintf(buffer, sizeof(buffer), "%.17g", value);
      out += buffer;
      out += "\n";
    };
    add("frugal_requests_total", "counter", "Generation requests the engine accepted.", static_cast<double>(s.requests_total));
    add("frugal_requests_active", "gauge", "Sequences being prefilled or decoded.", static_cast<double>(s.requests_active));
    add("frugal_requests_queued", "gauge", "Requests waiting for a slot or KV blocks.", static_cast<double>(s.requests_queued));
    add("frugal_prompt_tokens_total", "counter", "Prompt tokens received.", static_cast<double>(s.prompt_tokens_total));
    add("frugal_prompt_tokens_cached_total", "counter", "Prompt tokens served from the prefix cache.", static_cast<double>(s.prompt_tokens_cached_total));
    add("frugal_prompt_tokens_computed_total", "counter", "Prompt tokens run through the model (prefill work).",
        static_cast<double>(s.prompt_tokens_computed_total));
    add("frugal_generated_tokens_total", "counter", "Tokens generated.", static_cast<double>(s.generated_tokens_total));
    add("frugal_kv_blocks_total", "gauge", "KV cache blocks in the pool.", static_cast<double>(s.kv_blocks_total));
    add("frugal_kv_blocks_used", "gauge", "KV cache blocks in use.", static_cast<double>(s.kv_blocks_used));
    add("frugal_kv_blocks_free", "gauge", "KV cache blocks no sequence holds (free or evictable prefix cache).",
        static_cast<double>(s.kv_blocks_total - s.kv_blocks_used));
    add("frugal_kv_blocks_cached", "gauge", "Unreferenced KV blocks kept for the prefix cache (evictable).",
        static_cast<double>(s.kv_blocks_cached));
    add("frugal_draft_tokens_total", "counter", "Speculative draft tokens verified (prompt lookup or the draft model).", static_cast<double>(s.draft_tokens_total));
    add("frugal_draft_tokens_accepted_total", "counter", "Speculative draft tokens accepted.",
        static_cast<double>(s.draft_tokens_accepted_total));
    add("frugal_preemptions_total", "counter", "Sequences preempted when the KV pool ran dry (recomputed later).",
        static_cast<double>(s.preemptions_total));
    add("frugal_kv_block_tokens", "gauge", "Tokens per KV block.", static_cast<double>(s.kv_block_tokens));
    add("frugal_generated_tokens_per_second", "gauge", "Recent decode throughput over all sequences.", s.generated_tokens_per_second);
    add("frugal_http_requests_total", "counter", "HTTP requests answered.", static_cast<double>(self.counters_.http_requests.load()));
    add("frugal_http_errors_total", "counter", "HTTP requests answered with a 4xx or 5xx status.", static_cast<double>(self.counters_.http_errors.load()));
    add("frugal_http_rejected_overload_total", "counter", "Requests refused with 429 (queue full).", static_cast<double>(self.counters_.rejected_overload.load()));
    add("frugal_http_cancelled_total", "counter", "Requests cancelled because the client went away.", static_cast<double>(self.counters_.streams_cancelled.load()));
    return out;
  }
};

HttpServer::HttpServer(std::shared_ptr<Engine> engine, std::shared_ptr<const TextModel> model, HttpServerOptions options)
    : engine_(std::move(engine)), model_(std::move(model)), options_(std::move(options)),
      server_(std::make_unique<httplib::Server>()) {
  install_routes();
}

HttpServer::~HttpServer() { stop(false); }

void HttpServer::install_routes() {
  httplib::Server& svr = *server_;
  const int threads = std::max(4, options_.http_threads);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  svr.set_payload_max_length(options_.max_body_bytes);
  svr.set_tcp_nodelay(true);

  // Routing, methods and the key are checked before any handler: unknown path 404, known path
  // with another method 405 (with Allow), missing or wrong Bearer key 401.
  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    counters_.http_requests++;
    auto route = routes().find(req.path);
    if (route == routes().end()) {
      send_error(res, make_error(404, "Invalid URL (" + req.method + " " + req.path + ")", "invalid_request_error", "unknown_url"));
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool head_of_get = req.method == "HEAD" && route->second.methods.count("GET");
    if (!route->second.methods.count(req.method) && !head_of_get) {
      std::string allow;
      for (const std::string& m : route->second.methods) allow += (allow.empty() ? "" : ", ") + m;
      res.set_header("Allow", allow);
      send_error(res, make_error(405, "Method " + req.method + " is not allowed for " + req.path + " (use " + allow + ")",
                                 "invalid_request_error", "method_not_allowed"));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (route->second.needs_key && !options_.api_key.empty()) {
      const std::string expected = "Bearer " + options_.api_key;
      if (req.get_header_value("Authorization") != expected) {
        send_error(res, make_error(401,
                                   req.has_header("Authorization") ? "Incorrect API key provided."
                                                                    : "You didn't provide an API key (Authorization: Bearer KEY).",
                                   "invalid_request_error", "invalid_api_key"));
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // httplib's own errors (oversized body, bad request line) get OpenAI's shape too.
  svr.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, make_error(res.status, "the request was refused by the HTTP layer (status " + std::to_string(res.status) +
                                   (res.status == 413 ? ": the body is too large)" : ")"),
                               res.status >= 500 ? "server_error" : "invalid_request_error"));
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, make_error(500, "internal error: " + what, "server_error"));
  });
  svr.set_logger([this](const httplib::Request&, const httplib::Response& res) {
    if (res.status >= 400) counters_.http_errors++;
  });

  svr.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(web_index_html(), "text/html; charset=utf-8"); });
  svr.Get("/index.html", [](const httplib::Request&, httplib::Response& res) { res.set_content(web_index_html(), "text/html; charset=utf-8"); });
  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (stopping_) return send_json(res, 503, json{{"status", "shutting down"}});
    send_json(res, 200, json{{"status", "ok"}});
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(Impl::metrics(*this), "text/plain; version=0.0.4");
  });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    // https://platform.openai.com/docs/api-reference/models/list
    json model{{"id", options_.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "frugal"},
               {"meta", {{"n_ctx", engine_->context_size()}, {"n_vocab", model_->vocab_size()}}}};
    send_json(res, 200, json{{"object", "list"}, {"data", json::array({model})}});
  });
  svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Impl::completion(*this, req, res, Endpoint::kChat);
  });
  svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Impl::completion(*this, req, res, Endpoint::kCompletion);
  });
  svr.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) { Impl::tokenize(*this, req, res); });
  svr.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) { Impl::detokenize(*this, req, res); });
}

Status HttpServer::bind() {
  if (options_.port == 0) {
    port_ = server_->bind_to_any_port(options_.host);
    if (port_ <= 0) return Status::error("cannot listen on " + options_.host + " (any port)");
    return Status::ok();
  }
  if (!server_->bind_to_port(options_.host, options_.port)) {
    return Status::error("cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                         " (in use, or not an address of this machine)");
  }
  port_ = options_.port;
  return Status::ok();
}

bool HttpServer::run() { return server_->listen_after_bind(); }

void HttpServer::stop(bool drain) {
  std::lock_guard<std::mutex> lock(stop_mutex_);
  if (stopping_.exchange(true)) return;
  // The engine first: it refuses new requests and finishes (drain) or cancels the running ones,
  // whose handlers then write their last events; the listener closes after them.
  engine_->shutdown(drain);
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (active_handlers_.load() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  server_->stop();
}

}  // namespace frugal::serve
