// The HTTP/OpenAI layer of `frugal serve` against a scripted fake engine and a byte-level fake
// model: request validation, response and SSE shapes, UTF-8 and stop strings, error statuses,
// cancellation on disconnect, 429 on overload, draining stop.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "serve/http_server.h"
#include "serve/openai_protocol.h"
#include "serve/openai_text_stream.h"

namespace frugal::serve {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
constexpr std::chrono::milliseconds kCancelWait = 10000ms;

// Tokens are bytes (ids 0..255), 256 is BOS (renders as nothing).
class ByteModel : public TextModel {
 public:
  std::vector<int32_t> encode(const std::string& text, bool add_special) const override {
    std::vector<int32_t> ids;
    if (add_special) ids.push_back(256);
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string piece(int32_t token) const override {
    return token >= 0 && token < 256 ? std::string(1, static_cast<char>(token)) : std::string();
  }
  int32_t vocab_size() const override { return 257; }
  Result<std::string> render_chat(const std::vector<ChatMessage>& messages) const override {
    std::string out;
    for (const auto& m : messages) out += m.role + ": " + m.content + "\n";
    return out + "assistant: ";
  }
};

// Answers every request with the bytes of `reply`, one token per `delay`, on its own thread.
class FakeEngine : public Engine {
 public:
  std::string reply = "Hello!";
  std::chrono::milliseconds delay{1};
  int64_t context = 64;
  int capacity = 8;  // running requests at most; beyond: "queue is full"

  ~FakeEngine() override { shutdown(false); }

  Result<RequestId> submit(GenerationRequest request, TokenCallback on_event) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return Status::error("the engine is stopping");
    if (active_ >= capacity) return Status::error(std::string(kQueueFullError) + " (" + std::to_string(capacity) + " waiting)");
    if (static_cast<int64_t>(request.prompt.size()) + request.max_tokens > context) return Status::error("beyond the context");
    const RequestId id = next_id_++;
    ++active_;
    last_request_ = request;
    threads_.emplace_back([this, id, request = std::move(request), on_event = std::move(on_event)] {
      TokenEvent event;
      event.prompt_tokens = static_cast<int64_t>(request.prompt.size());
      FinishReason finish = FinishReason::kEndOfText;
      for (size_t i = 0;; ++i) {
        if (is_cancelled(id)) {
          finish = FinishReason::kCancelled;
          break;
        }
        if (i == reply.size()) break;
        if (static_cast<int64_t>(i) == request.max_tokens) {
          finish = FinishReason::kLength;
          break;
        }
        std::this_thread::sleep_for(delay);
        event.token = static_cast<unsigned char>(reply[i]);
        event.generated_tokens = static_cast<int64_t>(i + 1);
        if (!on_event(event)) {
          finish = FinishReason::kCancelled;
          break;
        }
      }
      event.token = -1;
      event.finish = finish;
      on_event(event);
      std::lock_guard<std::mutex> lock(mutex_);
      if (finish == FinishReason::kCancelled) cancelled_.insert(id);
      --active_;
      finished_.notify_all();
    });
    return id;
  }
  void cancel(RequestId id) override {
    std::lock_guard<std::mutex> lock(mutex_);
    cancel_asked_.insert(id);
  }
  EngineStats stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    EngineStats s;
    s.requests_total = static_cast<int64_t>(next_id_ - 1);
    s.requests_active = active_;
    s.kv_blocks_total = 100;
    s.kv_blocks_used = 16 * active_;
    s.kv_block_tokens = 16;
    return s;
  }
  int64_t context_size() const override { return context; }
  void shutdown(bool drain) override {
    std::vector<std::thread> threads;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      stopping_ = true;
      if (!drain) {
        for (RequestId id = 1; id < next_id_; ++id) cancel_asked_.insert(id);
      }
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

  // Waits until the sequence `id` (1-based submission order) was cancelled (or `timeout`). It returns
  // as soon as it is; the tests allow kCancelWait, as 2 s once ran out under the sanitizer build on
  // a loaded 2-core machine while the cancellation was still on its way.
  bool wait_cancelled(RequestId id, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return finished_.wait_for(lock, timeout, [&] { return cancelled_.count(id) != 0; });
  }
  int active() {
    std::lock_guard<std::mutex> lock(mutex_);
    return active_;
  }
  GenerationRequest last_request() {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_request_;
  }

 private:
  bool is_cancelled(RequestId id) {
    std::lock_guard<std::mutex> lock(mutex_);
    return cancel_asked_.count(id) != 0;
  }
  mutable std::mutex mutex_;
  std::condition_variable finished_;
  std::vector<std::thread> threads_;
  std::set<RequestId> cancel_asked_, cancelled_;
  RequestId next_id_ = 1;
  int active_ = 0;
  bool stopping_ = false;
  GenerationRequest last_request_;
};

// ---- pure functions ----

TEST(ServeText, Utf8CompletePrefix) {
  EXPECT_EQ(utf8_complete_prefix("abc"), 3u);
  EXPECT_EQ(utf8_complete_prefix("a\xC3"), 1u);                 // é's lead byte alone
  EXPECT_EQ(utf8_complete_prefix("a\xC3\xA9"), 3u);
  EXPECT_EQ(utf8_complete_prefix("\xF0\x9F\x98"), 0u);          // 3 of 😀's 4 bytes
  EXPECT_EQ(utf8_complete_prefix("\xF0\x9F\x98\x80"), 4u);
  EXPECT_EQ(utf8_complete_prefix("x\xE2\x82"), 1u);             // 2 of €'s 3 bytes
  EXPECT_EQ(utf8_complete_prefix("\x80\x80"), 2u);              // stray continuations: invalid, not held
}

TEST(ServeText, NeverSplitsACharacter) {
  TextStreamer streamer;
  const std::string text = "é€😀";
  std::string out;
  for (char c : text) {
    const std::string part = streamer.push(std::string(1, c));
    EXPECT_EQ(utf8_complete_prefix(part), part.size()) << "a chunk ends inside a character";
    out += part;
  }
  out += streamer.finish();
  EXPECT_EQ(out, text);
}

TEST(ServeText, StopStringAcrossTokensIsCutAndNotShown) {
  TextStreamer streamer({"</s>", "END"});
  std::string out;
  for (const char* token : {"Hel", "lo <", "/", "s> more"}) out += streamer.push(token);
  EXPECT_TRUE(streamer.stopped());
  EXPECT_EQ(out, "Hello ");
  EXPECT_EQ(streamer.push("x"), "");
  EXPECT_EQ(streamer.finish(), "");
}

TEST(ServeText, HeldPrefixThatDoesNotCompleteIsReleased) {
  TextStreamer streamer({"STOP"});
  EXPECT_EQ(streamer.push("a ST"), "a ");  // "ST" may start STOP: held
  EXPECT_EQ(streamer.push("A"), "STA");     // no longer a prefix: released
  EXPECT_EQ(streamer.push("S"), "");        // held again
  EXPECT_EQ(streamer.finish(), "S");        // end of text: the held tail is plain text
  EXPECT_FALSE(streamer.stopped());
}

TEST(ServeText, StopAtTheVeryStart) {
  TextStreamer streamer({"\n\n"});
  EXPECT_EQ(streamer.push("\n"), "");
  EXPECT_EQ(streamer.push("\nrest"), "");
  EXPECT_TRUE(streamer.stopped());
}

std::optional<ApiError> parse(const std::string& body, Endpoint endpoint, CompletionParams& params) {
  json j;
  if (auto e = parse_json_body(body, j)) return e;
  return parse_completion_request(j, endpoint, params);
}

TEST(ServeProtocol, ParsesTheFieldsPeopleUse) {
  CompletionParams p;
  ASSERT_FALSE(parse(R"({"model":"x","messages":[{"role":"system","content":"be brief"},
      {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
      "max_tokens":5,"max_completion_tokens":7,"temperature":0.5,"top_p":0.9,"top_k":3,"min_p":0.1,
      "seed":42,"stop":["a","b"],"stream":true,"stream_options":{"include_usage":true},"n":1,
      "presence_penalty":0.5,"frequency_penalty":-0.5,"user":"ignored"})", Endpoint::kChat, p));
  ASSERT_EQ(p.messages.size(), 2u);
  EXPECT_EQ(p.messages[1].content, "hi there");
  EXPECT_EQ(*p.max_tokens, 7);  // max_completion_tokens wins
  EXPECT_FLOAT_EQ(p.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(p.sampling.top_p, 0.9f);
  EXPECT_EQ(p.sampling.top_k, 3);
  EXPECT_FLOAT_EQ(p.sampling.min_p, 0.1f);
  EXPECT_EQ(p.sampling.seed, 42u);
  EXPECT_TRUE(p.seed_given);
  EXPECT_EQ(p.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(p.stream && p.include_usage);
  EXPECT_FLOAT_EQ(p.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(p.frequency_penalty, -0.5f);

  ASSERT_FALSE(parse(R"({"prompt":"once","stop":"\n","max_tokens":3.0})", Endpoint::kCompletion, p));
  EXPECT_EQ(p.prompt, "once");
  EXPECT_EQ(p.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(*p.max_tokens, 3);
  ASSERT_FALSE(parse(R"({"prompt":[1,2,3]})", Endpoint::kCompletion, p));
  EXPECT_TRUE(p.prompt_is_tokens);
  EXPECT_EQ(p.prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
}

TEST(ServeProtocol, RejectsBadRequestsNamingTheField) {
  struct Case {
    const char* body;
    Endpoint endpoint;
    const char* param;
  };
  const Case cases[] = {
      {R"({"messages": [)", Endpoint::kChat, ""},
      {R"([1,2])", Endpoint::kChat, ""},
      {R"({})", Endpoint::kChat, "messages"},
      {R"({"messages": "hi"})", Endpoint::kChat, "messages"},
      {R"({"messages": []})", Endpoint::kChat, "messages"},
      {R"({"messages": [{"role": "wizard", "content": "x"}]})", Endpoint::kChat, "messages[0].role"},
      {R"({"messages": [{"role": "user"}]})", Endpoint::kChat, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": 5}]})", Endpoint::kChat, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", Endpoint::kChat, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": "10"})", Endpoint::kChat, "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})", Endpoint::kChat, "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2.5})", Endpoint::kChat, "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": 3})", Endpoint::kChat, "temperature"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})", Endpoint::kChat, "temperature"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_p": 0})", Endpoint::kChat, "top_p"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_k": -1})", Endpoint::kChat, "top_k"},
      {R"({"messages": [{"role": "user", "content": "x"}], "n": 2})", Endpoint::kChat, "n"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop": 7})", Endpoint::kChat, "stop"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop": ["a", 1]})", Endpoint::kChat, "stop"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stream": "yes"})", Endpoint::kChat, "stream"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}})", Endpoint::kChat, "stream_options"},
      {R"({"messages": [{"role": "user", "content": "x"}], "presence_penalty": 9})", Endpoint::kChat, "presence_penalty"},
      {R"({"messages": [{"role": "user", "content": "x"}], "seed": "s"})", Endpoint::kChat, "seed"},
      {R"({"messages": [{"role": "user", "content": "x"}], "model": 3})", Endpoint::kChat, "model"},
      {R"({"prompt": 5})", Endpoint::kCompletion, "prompt"},
      {R"({"prompt": ["a", "b"]})", Endpoint::kCompletion, "prompt"},
      {R"({"prompt": [1, -2]})", Endpoint::kCompletion, "prompt"},
  };
  for (const Case& c : cases) {
    CompletionParams p;
    auto e = parse(c.body, c.endpoint, p);
    ASSERT_TRUE(e.has_value()) << c.body;
    EXPECT_EQ(e->status, 400) << c.body;
    EXPECT_EQ(e->param, c.param) << c.body << ": " << e->message;
    EXPECT_FALSE(e->message.empty());
    const json shape = error_json(*e);
    EXPECT_TRUE(shape["error"]["message"].is_string());
    EXPECT_EQ(shape["error"]["type"], "invalid_request_error");
  }
}

TEST(ServeProtocol, InvalidUtf8FromTheModelBecomesReplacementCharacters) {
  const std::string text = dump_json(json{{"content", std::string("ok\xFF")}});
  EXPECT_EQ(json::parse(text)["content"], "ok\xEF\xBF\xBD");
}

// ---- the server over real sockets ----

class ServeHttp : public ::testing::Test {
 protected:
  void start(HttpServerOptions options = {}) {
    options.port = 0;
    options.model_name = "fake";
    server_ = std::make_unique<HttpServer>(engine_, std::make_shared<ByteModel>(), options);
    ASSERT_TRUE(server_->bind().is_ok());
    thread_ = std::thread([this] { server_->run(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(10, 0);
    for (int i = 0; i < 200; ++i) {
      if (auto r = client_->Get("/health"); r && r->status == 200) return;
      std::this_thread::sleep_for(5ms);
    }
    FAIL() << "the server did not come up";
  }
  void TearDown() override {
    if (server_) server_->stop(true);
    if (thread_.joinable()) thread_.join();
  }
  httplib::Result post(const std::string& path, const std::string& body, httplib::Headers headers = {}) {
    return client_->Post(path.c_str(), headers, body, "application/json");
  }
  // The "data:" payloads of an SSE body, in order.
  static std::vector<std::string> events(const std::string& body) {
    std::vector<std::string> out;
    size_t at = 0;
    while (at < body.size()) {
      const size_t end = body.find("\n\n", at);
      EXPECT_NE(end, std::string::npos) << "an event is not closed by a blank line";
      if (end == std::string::npos) break;
      const std::string event = body.substr(at, end - at);
      EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
      out.push_back(event.substr(6));
      at = end + 2;
    }
    return out;
  }
  void expect_error(const httplib::Result& r, int status, const std::string& code = "") {
    ASSERT_TRUE(r) << "no response";
    EXPECT_EQ(r->status, status) << r->body;
    const json body = json::parse(r->body);
    EXPECT_TRUE(body["error"]["message"].is_string()) << r->body;
    EXPECT_TRUE(body["error"]["type"].is_string()) << r->body;
    if (!code.empty()) {
      EXPECT_EQ(body["error"]["code"], code) << r->body;
    }
  }

  std::shared_ptr<FakeEngine> engine_ = std::make_shared<FakeEngine>();
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::unique_ptr<httplib::Client> client_;
};

// POST whose body is handed to `receive` as it arrives (returning false hangs up).
httplib::Result post_streaming(httplib::Client& client, const std::string& path, const std::string& body,
                               std::function<bool(const char*, size_t)> receive) {
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [receive](const char* data, size_t n, uint64_t, uint64_t) { return receive(data, n); };
  return client.send(req);
}

const char* kChat = R"({"model":"fake","messages":[{"role":"user","content":"hi"}]})";

TEST_F(ServeHttp, ChatCompletionWithUsage) {
  start();
  auto r = post("/v1/chat/completions", kChat);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json body = json::parse(r->body);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["model"], "fake");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hello!");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  // The prompt is the rendered template plus BOS: "user: hi\nassistant: " is 20 bytes.
  EXPECT_EQ(body["usage"]["prompt_tokens"], 21);
  EXPECT_EQ(body["usage"]["completion_tokens"], 6);
  EXPECT_EQ(body["usage"]["total_tokens"], 27);
}

TEST_F(ServeHttp, CompletionLengthStopAndSampling) {
  start();
  auto r = post("/v1/completions", R"({"prompt":"abc","max_tokens":3,"temperature":0,"top_k":5,"seed":7,"presence_penalty":1})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json body = json::parse(r->body);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], "Hel");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  const GenerationRequest seen = engine_->last_request();
  EXPECT_EQ(seen.max_tokens, 3);
  EXPECT_EQ(seen.sampling.temperature, 0.0f);
  EXPECT_EQ(seen.sampling.top_k, 5);
  EXPECT_EQ(seen.sampling.seed, 7u);
  EXPECT_EQ(seen.presence_penalty, 1.0f);
  EXPECT_EQ(seen.prompt, (std::vector<int32_t>{256, 'a', 'b', 'c'}));

  // A stop string ends the answer (not shown) and cancels the sequence in the engine.
  r = post("/v1/completions", R"({"prompt":"abc","stop":["lo"]})");
  ASSERT_TRUE(r);
  body = json::parse(r->body);
  EXPECT_EQ(body["choices"][0]["text"], "Hel");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(engine_->wait_cancelled(2, kCancelWait));
}

TEST_F(ServeHttp, StreamedChatHasOpenAIChunksAndDone) {
  engine_->reply = "é€😀 ok";  // multi-byte characters arrive one byte per token
  start();
  auto r = post("/v1/chat/completions",
                R"({"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  const auto payloads = events(r->body);
  ASSERT_GE(payloads.size(), 4u);
  EXPECT_EQ(payloads.back(), "[DONE]");
  std::string content;
  std::string id;
  int finishes = 0;
  for (size_t i = 0; i + 1 < payloads.size(); ++i) {
    const json chunk = json::parse(payloads[i]);
    if (id.empty()) id = chunk["id"];
    EXPECT_EQ(chunk["id"], id);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    if (i + 2 == payloads.size()) {  // the usage chunk: empty choices
      EXPECT_TRUE(chunk["choices"].empty());
      EXPECT_EQ(chunk["usage"]["completion_tokens"], static_cast<int64_t>(engine_->reply.size()));
      continue;
    }
    EXPECT_TRUE(chunk["usage"].is_null());
    const json& choice = chunk["choices"][0];
    if (i == 0) {
      EXPECT_EQ(choice["delta"]["role"], "assistant");
    }
    if (choice["delta"].contains("content")) {
      const std::string piece = choice["delta"]["content"];
      EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "a character was split: " << payloads[i];
      content += piece;
    }
    if (!choice["finish_reason"].is_null()) {
      ++finishes;
      EXPECT_EQ(choice["finish_reason"], "stop");
    }
  }
  EXPECT_EQ(finishes, 1);
  EXPECT_EQ(content, engine_->reply);
}

TEST_F(ServeHttp, StreamedCompletionStopsAtStopString) {
  engine_->reply = "one two three";
  start();
  auto r = post("/v1/completions", R"({"prompt":"x","stream":true,"stop":" th"})");
  ASSERT_TRUE(r);
  const auto payloads = events(r->body);
  ASSERT_FALSE(payloads.empty());
  EXPECT_EQ(payloads.back(), "[DONE]");
  std::string text, finish;
  for (size_t i = 0; i + 1 < payloads.size(); ++i) {
    const json chunk = json::parse(payloads[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    text += chunk["choices"][0]["text"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null()) finish = chunk["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, "one two");
  EXPECT_EQ(finish, "stop");
}

TEST_F(ServeHttp, BadRequestsGetTheRightStatusAndTheServerKeepsServing) {
  engine_->context = 32;
  start();
  expect_error(post("/v1/chat/completions", "{not json"), 400);
  expect_error(post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"n":3})"), 400);
  expect_error(post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"temperature":"x"})"), 400);
  expect_error(post("/v1/completions", R"({"prompt":")" + std::string(40, 'a') + R"("})"), 400, "context_length_exceeded");
  expect_error(post("/v1/completions", R"({"prompt":"abc","max_tokens":1000})"), 400, "context_length_exceeded");
  expect_error(post("/v1/completions", R"({"prompt":[999]})"), 400);
  expect_error(client_->Get("/v1/nothing"), 404, "unknown_url");
  expect_error(post("/v2/chat", "{}"), 404);
  auto wrong = client_->Get("/v1/chat/completions");
  expect_error(wrong, 405);
  EXPECT_EQ(wrong->get_header_value("Allow"), "POST");
  expect_error(client_->Delete("/v1/models"), 405);
  expect_error(post("/tokenize", R"({"content": 3})"), 400);
  expect_error(post("/detokenize", R"({"tokens": [1, 300]})"), 400);
  // Still serving.
  auto r = post("/v1/completions", R"({"prompt":"abc","max_tokens":4})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(client_->Get("/health")->status, 200);
}

TEST_F(ServeHttp, ApiKeyIsRequiredExceptForThePageAndHealth) {
  HttpServerOptions options;
  options.api_key = "sekret";
  start(options);
  expect_error(post("/v1/chat/completions", kChat), 401, "invalid_api_key");
  expect_error(post("/v1/chat/completions", kChat, {{"Authorization", "Bearer wrong"}}), 401, "invalid_api_key");
  expect_error(client_->Get("/v1/models"), 401);
  auto ok = post("/v1/chat/completions", kChat, {{"Authorization", "Bearer sekret"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(client_->Get("/")->status, 200);
  EXPECT_EQ(client_->Get("/health")->status, 200);
}

TEST_F(ServeHttp, OverloadIs429) {
  engine_->capacity = 1;
  engine_->delay = 20ms;
  engine_->reply = std::string(15, 'x');
  start();
  httplib::Client other("127.0.0.1", server_->port());
  std::thread slow([&] { other.Post("/v1/completions", R"({"prompt":"a"})", "application/json"); });
  for (int i = 0; i < 200 && engine_->active() == 0; ++i) std::this_thread::sleep_for(2ms);
  expect_error(post("/v1/completions", R"({"prompt":"b"})"), 429, "rate_limit_exceeded");
  slow.join();
  auto r = post("/v1/completions", R"({"prompt":"b","max_tokens":2})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(client_->Get("/metrics")->body.find("frugal_http_rejected_overload_total 1\n"), std::string::npos);
}

TEST_F(ServeHttp, StreamingClientThatDisconnectsCancelsItsRequest) {
  engine_->delay = 20ms;
  engine_->reply = std::string(200, 'x');  // 4 s if nobody cancels
  start();
  httplib::Client client("127.0.0.1", server_->port());
  int chunks = 0;
  const auto started = std::chrono::steady_clock::now();
  auto r = post_streaming(client, "/v1/completions", R"({"prompt":"a","stream":true})",
                          [&](const char*, size_t) { return ++chunks < 3; });  // hang up after 3 reads
  EXPECT_FALSE(r);  // the client aborted
  client.stop();
  EXPECT_TRUE(engine_->wait_cancelled(1, kCancelWait)) << "the engine was never told to stop";
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
}

TEST_F(ServeHttp, NonStreamingClientThatDisconnectsCancelsItsRequest) {
  engine_->delay = 20ms;
  engine_->reply = std::string(200, 'x');
  start();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(server_->port()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const std::string body = R"({"prompt":"a"})";
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  for (int i = 0; i < 200 && engine_->active() == 0; ++i) std::this_thread::sleep_for(2ms);
  close(fd);
  EXPECT_TRUE(engine_->wait_cancelled(1, kCancelWait));
}

TEST_F(ServeHttp, ModelsTokenizeDetokenizeMetricsAndPage) {
  start();
  auto models = json::parse(client_->Get("/v1/models")->body);
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "fake");
  auto tokens = json::parse(post("/tokenize", R"({"content":"hé"})")->body);
  EXPECT_EQ(tokens["tokens"], json::parse("[104, 195, 169]"));
  auto text = json::parse(post("/detokenize", R"({"tokens":[104, 195, 169]})")->body);
  EXPECT_EQ(text["content"], "hé");
  auto metrics = client_->Get("/metrics");
  EXPECT_EQ(metrics->status, 200);
  for (const char* name : {"frugal_requests_total", "frugal_requests_queued", "frugal_prompt_tokens_total",
                           "frugal_generated_tokens_total", "frugal_kv_blocks_used", "frugal_kv_blocks_free 100", "frugal_kv_blocks_cached",
                           "frugal_generated_tokens_per_second"}) {
    EXPECT_NE(metrics->body.find(name), std::string::npos) << name;
  }
  auto page = client_->Get("/");
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("/v1/chat/completions"), std::string::npos);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
}

TEST_F(ServeHttp, StopDrainsTheRunningStream) {
  engine_->delay = 10ms;
  engine_->reply = std::string(30, 'y');
  start();
  httplib::Client client("127.0.0.1", server_->port());
  std::string body;
  std::thread reader([&] {
    post_streaming(client, "/v1/completions", R"({"prompt":"a","stream":true})", [&](const char* data, size_t n) {
      body.append(data, n);
      return true;
    });
  });
  for (int i = 0; i < 200 && engine_->active() == 0; ++i) std::this_thread::sleep_for(2ms);
  server_->stop(true);
  reader.join();
  thread_.join();
  std::string text;
  const auto payloads = events(body);
  ASSERT_FALSE(payloads.empty());
  EXPECT_EQ(payloads.back(), "[DONE]");
  for (size_t i = 0; i + 1 < payloads.size(); ++i) text += json::parse(payloads[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, engine_->reply);
}

}  // namespace
}  // namespace frugal::serve
