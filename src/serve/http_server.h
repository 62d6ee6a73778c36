// The HTTP front of `frugal serve`: OpenAI-compatible routes, SSE streaming, /health, /metrics,
// /tokenize, /detokenize and the chat page, in front of an Engine (serve/engine.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/chat_template.h"
#include "serve/engine.h"

namespace httplib {
class Server;
}

namespace frugal {
class Model;
}

namespace frugal::serve {

// What the HTTP layer needs of a model besides the engine: text <-> tokens and the chat template.
// An interface so the tests can drive the server with a fake byte-level model.
class TextModel {
 public:
  virtual ~TextModel() = default;
  // Prompt text to ids (special tokens added and parsed, as `frugal run` does).
  virtual std::vector<int32_t> encode(const std::string& text, bool add_special) const = 0;
  // The bytes of one generated token (control tokens render as nothing).
  virtual std::string piece(int32_t token) const = 0;
  virtual int32_t vocab_size() const = 0;
  // The conversation rendered with the model's chat template, ending with the assistant's turn.
  virtual Result<std::string> render_chat(const std::vector<ChatMessage>& messages) const = 0;
};

// The TextModel of a loaded model (its tokenizer and chat template).
std::shared_ptr<TextModel> make_text_model(std::shared_ptr<const Model> model);

struct HttpServerOptions {
  std::string host = "127.0.0.1";  // loopback unless asked otherwise
  int port = 8080;                  // 0: an ephemeral port (see HttpServer::port())
  std::string api_key;              // non-empty: every API route needs "Authorization: Bearer KEY"
  std::string model_name = "frugal";
  int http_threads = 128;           // connections served at once (each stream holds one)
  size_t max_body_bytes = 8 << 20;
};

class HttpServer {
 public:
  HttpServer(std::shared_ptr<Engine> engine, std::shared_ptr<const TextModel> model, HttpServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket; errors name the address.
  Status bind();
  int port() const { return port_; }
  // Serves until stop(); returns false if the server failed.
  bool run();
  // Graceful stop (any thread): the engine drains (running and queued requests finish), the
  // open streams are written out, then the listener closes and run() returns.
  void stop(bool drain = true);

  // Counters for /metrics, kept by the HTTP layer (the engine keeps its own).
  struct Counters {
    std::atomic<int64_t> http_requests{0};
    std::atomic<int64_t> http_errors{0};  // answered with a 4xx/5xx status
    std::atomic<int64_t> completions{0};
    std::atomic<int64_t> streams_cancelled{0};  // client went away
    std::atomic<int64_t> rejected_overload{0};
  };
  const Counters& counters() const { return counters_; }

 private:
  struct Impl;
  void install_routes();
  std::shared_ptr<Engine> engine_;
  std::shared_ptr<const TextModel> model_;
  HttpServerOptions options_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  Counters counters_;
  std::atomic<int64_t> active_handlers_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> next_id_{1};
  std::mutex stop_mutex_;
};

}  // namespace frugal::serve
