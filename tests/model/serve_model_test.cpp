// frugal serve end to end on a tiny random model: the batch engine behind the HTTP layer, over
// real sockets. Greedy answers match the plain transformer, streamed equals whole, malformed
// requests get 4xx while the server keeps serving, a client hanging up frees its KV blocks.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "frugal/frugal.h"
#include "serve/http_server.h"
#include "serve/openai_protocol.h"
#include "support/test_support.h"
#if __has_include("serve/batch_engine.h")
#include "serve/batch_engine.h"
#define FRUGAL_HAVE_BATCH_ENGINE 1
#endif

namespace frugal::serve {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

#ifdef FRUGAL_HAVE_BATCH_ENGINE
// Long enough that a 4000-token answer takes a while even on the tiny model.
constexpr int64_t kContext = 4096;

class ServeModel : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = testing::temp_dir() + "/serve_tiny.gguf";
    testing::TinyModelOptions tiny;
    tiny.n_ctx_train = kContext;
    ASSERT_TRUE(testing::write_tiny_model(path, tiny).is_ok());
    auto loaded = Model::load(path);
    ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
    model_ = *loaded;
    BatchEngineOptions options;
    options.n_ctx = kContext;
    options.n_slots = 2;
    options.n_threads = 1;
    options.max_queue = 8;
    auto engine = make_batch_engine(model_, options);
    ASSERT_TRUE(engine.is_ok()) << engine.status().message();
    engine_ = std::shared_ptr<Engine>(std::move(*engine));
    HttpServerOptions http;
    http.port = 0;
    http.model_name = "tiny";
    http.http_threads = 8;
    server_ = std::make_unique<HttpServer>(engine_, make_text_model(model_), http);
    ASSERT_TRUE(server_->bind().is_ok());
    thread_ = std::thread([this] { server_->run(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(30, 0);
  }
  void TearDown() override {
    if (server_) server_->stop(true);
    if (thread_.joinable()) thread_.join();
  }
  httplib::Result post(const std::string& path, const std::string& body) {
    return client_->Post(path.c_str(), body, "application/json");
  }
  // Greedy continuation by the plain single-sequence transformer, as text.
  std::string reference(const std::string& prompt, int64_t n) {
    const std::vector<int32_t> tokens = model_->tokenizer().encode(prompt, true, true);
    TransformerOptions options;
    options.n_ctx = kContext;
    options.n_threads = 1;
    Transformer transformer(model_, options);
    auto out = greedy_reference(transformer, tokens, n, nullptr);
    EXPECT_TRUE(out.is_ok());
    std::string text;
    for (size_t i = tokens.size(); i < out->size(); ++i) text += model_->tokenizer().token_to_piece((*out)[i]);
    // A random model emits stray bytes; the answer carries them as U+FFFD (JSON needs UTF-8).
    return json::parse(dump_json(json(text))).get<std::string>();
  }
  std::shared_ptr<const Model> model_;
  std::shared_ptr<Engine> engine_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::unique_ptr<httplib::Client> client_;
};

std::string stream_text(const std::string& body) {
  std::string text;
  size_t at = 0;
  bool done = false;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const size_t end = body.find("\n\n", at);
    const std::string payload = body.substr(at + 6, end - at - 6);
    at = end;
    if (payload == "[DONE]") {
      done = true;
      break;
    }
    const json chunk = json::parse(payload);
    const json& choice = chunk["choices"][0];
    if (choice.contains("text")) text += choice["text"].get<std::string>();
    if (choice.contains("delta") && choice["delta"].contains("content")) text += choice["delta"]["content"].get<std::string>();
  }
  EXPECT_TRUE(done) << "no data: [DONE]";
  return text;
}

TEST_F(ServeModel, GreedyCompletionMatchesTheTransformerAndStreamingMatchesWhole) {
  const std::string prompt = "hello world hello";
  const std::string expected = reference(prompt, 12);
  const std::string body = json{{"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true}}.dump();
  auto whole = post("/v1/completions", body);
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const json answer = json::parse(whole->body);
  EXPECT_EQ(answer["choices"][0]["text"], expected);
  EXPECT_EQ(answer["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(answer["usage"]["completion_tokens"], 12);
  json streamed = json::parse(body);
  streamed["stream"] = true;
  auto stream = post("/v1/completions", streamed.dump());
  ASSERT_TRUE(stream);
  ASSERT_EQ(stream->status, 200);
  EXPECT_EQ(stream_text(stream->body), expected);

  auto chat = post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0})");
  ASSERT_TRUE(chat);
  EXPECT_EQ(chat->status, 200) << chat->body;
  EXPECT_EQ(json::parse(chat->body)["object"], "chat.completion");
}

TEST_F(ServeModel, MalformedRequestsGet4xxAndTheServerKeepsServing) {
  const std::pair<const char*, std::string> bad[] = {
      {"/v1/chat/completions", "{"},
      {"/v1/chat/completions", R"({"messages":"hi"})"},
      {"/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"n":2})"},
      {"/v1/completions", R"({"prompt":"hi","max_tokens":100000})"},
      {"/v1/completions", json{{"prompt", std::string(kContext + 100, 'z')}}.dump()},
      {"/v1/completions", R"({"prompt":"hi","temperature":-1})"},
      {"/v1/completions", std::string("\xFF\xFE garbage")},
      {"/nowhere", "{}"},
  };
  for (const auto& [path, body] : bad) {
    auto r = post(path, body);
    ASSERT_TRUE(r) << body;
    EXPECT_GE(r->status, 400) << body;
    EXPECT_LT(r->status, 500) << body;
    EXPECT_TRUE(json::parse(r->body)["error"]["message"].is_string()) << r->body;
  }
  auto ok = post("/v1/completions", R"({"prompt":"hi","max_tokens":4})");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

TEST_F(ServeModel, ClientHangingUpMidStreamFreesItsBlocks) {
  httplib::Client client("127.0.0.1", server_->port());
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"prompt":"hello","max_tokens":4000,"ignore_eos":true,"stream":true})";
  req.set_header("Content-Type", "application/json");
  int reads = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++reads < 2; };
  EXPECT_FALSE(client.send(req));
  EngineStats stats;
  for (int i = 0; i < 200; ++i) {
    stats = engine_->stats();
    if (stats.requests_active == 0 && stats.kv_blocks_used == 0) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(stats.requests_active, 0);
  EXPECT_EQ(stats.kv_blocks_used, 0) << "the cancelled sequence still holds KV blocks";
  EXPECT_LT(stats.generated_tokens_total, 2000) << "the sequence ran to the end although nobody listened";
}
#else
TEST(ServeModel, NeedsTheBatchEngine) { GTEST_SKIP() << "src/serve/batch_engine.h is not in this build yet"; }
#endif

}  // namespace
}  // namespace frugal::serve
