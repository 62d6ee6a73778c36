// Model tests of the continuous-batching engine on tiny random Llama and Gemma 3 models: batched
// greedy decoding gives every sequence the tokens it gets alone and from the plain Transformer,
// KV blocks all come back (finished, cancelled, failed requests), prefix sharing changes nothing
// but the prefill work, and the queue bound, context checks, cancel and shutdown behave.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>

#include "serve/batch_engine.h"
#include "serve/batch_forward.h"
#include "support/sampling_support.h"
#include "support/test_support.h"

namespace frugal::serve {
namespace {

using namespace std::chrono_literals;

// wide_heads: heads of 32, the smallest the q8_0/q4_0 cache blocks tile.
std::shared_ptr<const Model> tiny_model(bool gemma3, bool wide_heads = false) {
  const std::string path =
      testing::temp_dir() + (gemma3 ? "/tiny_gemma3" : "/tiny") + (wide_heads ? "_wide_heads.gguf" : ".gguf");
  testing::TinyModelOptions o;
  o.gemma3 = gemma3;
  if (wide_heads) {
    o.n_embd = 128;
    o.n_head = 4;
    o.n_head_kv = 2;
  }
  EXPECT_TRUE(testing::write_tiny_model(path, o).is_ok());
  auto model = Model::load(path);
  EXPECT_TRUE(model.is_ok()) << model.status().message();
  return model.value();
}

std::vector<int32_t> random_prompt(int64_t n, uint32_t seed, int32_t vocab) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (auto& t : out) t = pick(rng);
  return out;
}

// What one request produced, filled on the engine's thread.
struct Collector {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
  std::string error;
  int64_t cached = -1;
  int64_t stop_after = -1;  // the callback returns false after this many tokens
  bool throw_after_stop = false;
  // The callback blocks the engine's thread after this many tokens until release(): the test
  // then knows exactly where the engine is (the tiny model otherwise finishes in milliseconds).
  int64_t hold_after = -1;
  bool held = false;

  TokenCallback callback() {
    return [this](const TokenEvent& e) {
      std::unique_lock<std::mutex> lock(mutex);
      cached = e.cached_prompt_tokens;
      if (e.token < 0) {
        finish = e.finish;
        error = e.error;
      } else {
        tokens.push_back(e.token);
      }
      changed.notify_all();
      if (e.token >= 0 && hold_after >= 0 && static_cast<int64_t>(tokens.size()) == hold_after) {
        held = true;
        changed.notify_all();
        changed.wait(lock, [&] { return !held; });
      }
      if (stop_after >= 0 && static_cast<int64_t>(tokens.size()) >= stop_after) {
        if (throw_after_stop) throw std::runtime_error("consumer failed");
        return false;
      }
      return true;
    };
  }
  bool wait_done(std::chrono::seconds timeout = 60s) {
    std::unique_lock<std::mutex> lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return finish != FinishReason::kNone; });
  }
  bool wait_held() {
    std::unique_lock<std::mutex> lock(mutex);
    return changed.wait_for(lock, 60s, [&] { return held; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex);
    held = false;
    changed.notify_all();
  }
  bool wait_tokens(size_t n) {
    std::unique_lock<std::mutex> lock(mutex);
    return changed.wait_for(lock, 60s, [&] { return tokens.size() >= n || finish != FinishReason::kNone; });
  }
};

GenerationRequest greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0f;
  r.ignore_end_of_text = true;  // random models emit end-of-text at random; keep lengths fixed
  return r;
}

// Pure temperature sampling (no top-k/p, min-p), seeded by the caller: the seed alone fixes the
// output (no speculation).
GenerationRequest sampled(std::vector<int32_t> prompt, int64_t max_tokens, float temperature, uint64_t seed) {
  GenerationRequest r = greedy(std::move(prompt), max_tokens);
  r.sampling.temperature = temperature;
  r.sampling.top_k = 0;
  r.sampling.top_p = 1.0f;
  r.sampling.min_p = 0.0f;
  r.sampling.seed = seed;
  r.reproducible_sampling = true;
  return r;
}

// The plain Transformer's greedy loop: the whole prompt in one batch, then one token at a time.
std::vector<int32_t> transformer_greedy(const std::shared_ptr<const Model>& model, const std::vector<int32_t>& prompt,
                                        int64_t max_tokens, KvType cache_type = KvType::kF16) {
  TransformerOptions options;
  options.cache_type_k = options.cache_type_v = cache_type;
  options.n_ctx = 256;
  options.n_batch = 256;
  options.n_threads = 2;
  Transformer t(model, options);
  SamplerOptions so;
  so.temperature = 0.0f;
  Sampler sampler(so, static_cast<int32_t>(model->config().n_vocab));
  EXPECT_TRUE(t.evaluate(prompt.data(), static_cast<int64_t>(prompt.size())).is_ok());
  std::vector<int32_t> out;
  for (int64_t i = 0; i < max_tokens; ++i) {
    const int32_t token = sampler.sample(t.last_logits());
    out.push_back(token);
    if (i + 1 < max_tokens) {
      EXPECT_TRUE(t.evaluate(&token, 1).is_ok());
    }
  }
  return out;
}

// Waits for the engine's stats to settle (they are published after each step).
EngineStats idle_stats(Engine& engine) {
  EngineStats s;
  for (int i = 0; i < 500; ++i) {
    s = engine.stats();
    if (s.requests_active == 0 && s.requests_queued == 0) break;
    std::this_thread::sleep_for(10ms);
  }
  return s;
}

std::unique_ptr<Engine> make_engine(const std::shared_ptr<const Model>& model, BatchEngineOptions o) {
  auto engine = make_batch_engine(model, o);
  EXPECT_TRUE(engine.is_ok()) << engine.status().message();
  return std::move(engine).value();
}

// Submits `requests` together to a fresh engine, expects each to end by length, and returns their
// tokens; `stats` gets the idle engine's counters.
std::vector<std::vector<int32_t>> run_to_length(const std::shared_ptr<const Model>& model, const BatchEngineOptions& o,
                                                const std::vector<GenerationRequest>& requests, EngineStats* stats) {
  auto engine = make_engine(model, o);
  std::vector<Collector> c(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_TRUE(engine->submit(requests[i], c[i].callback()).is_ok());
  std::vector<std::vector<int32_t>> out;
  for (auto& x : c) {
    EXPECT_TRUE(x.wait_done());
    EXPECT_EQ(x.finish, FinishReason::kLength) << x.error;
    out.push_back(x.tokens);
  }
  *stats = idle_stats(*engine);
  return out;
}

class BatchEngineGreedy : public ::testing::TestWithParam<bool> {};

// Prompts of several lengths (one longer than the step, so its prefill is chunked; longer than
// Gemma's sliding window of 8), two submitted first and two once the first is decoding.
TEST_P(BatchEngineGreedy, BatchedMatchesAloneAndTransformer) {
  // q8_0: the paged cache stores Hadamard-rotated heads exactly as the Transformer's cache does.
  for (KvType cache_type : {KvType::kF16, KvType::kQ8_0}) {
  SCOPED_TRACE(kv_type_name(cache_type));
  const auto model = tiny_model(GetParam(), cache_type != KvType::kF16);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  const std::vector<std::vector<int32_t>> prompts = {random_prompt(3, 1, vocab), random_prompt(41, 2, vocab),
                                                     random_prompt(17, 3, vocab), random_prompt(9, 4, vocab)};
  const int64_t max_tokens = 12;
  std::vector<std::vector<int32_t>> reference;
  for (const auto& p : prompts) reference.push_back(transformer_greedy(model, p, max_tokens, cache_type));

  BatchEngineOptions o;
  o.cache_type_k = o.cache_type_v = cache_type;
  o.n_ctx = 128;
  o.n_slots = 1;
  o.block_tokens = 8;
  o.step_tokens = 64;
  o.n_threads = 2;
  {
    auto alone = make_engine(model, o);
    for (size_t i = 0; i < prompts.size(); ++i) {
      Collector c;
      ASSERT_TRUE(alone->submit(greedy(prompts[i], max_tokens), c.callback()).is_ok());
      ASSERT_TRUE(c.wait_done());
      EXPECT_EQ(c.finish, FinishReason::kLength);
      EXPECT_EQ(c.tokens, reference[i]) << "alone, prompt " << i;
    }
  }

  o.n_slots = 4;
  o.step_tokens = 24;  // the 41-token prompt is prefilled in chunks next to decode tokens
  auto batched = make_engine(model, o);
  std::vector<Collector> c(prompts.size());
  ASSERT_TRUE(batched->submit(greedy(prompts[0], max_tokens), c[0].callback()).is_ok());
  ASSERT_TRUE(batched->submit(greedy(prompts[1], max_tokens), c[1].callback()).is_ok());
  ASSERT_TRUE(c[0].wait_tokens(3));
  ASSERT_TRUE(batched->submit(greedy(prompts[2], max_tokens), c[2].callback()).is_ok());
  ASSERT_TRUE(batched->submit(greedy(prompts[3], max_tokens), c[3].callback()).is_ok());
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(c[i].wait_done());
    EXPECT_EQ(c[i].finish, FinishReason::kLength);
    EXPECT_EQ(c[i].tokens, reference[i]) << "batched, prompt " << i;
  }
  const EngineStats s = idle_stats(*batched);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.generated_tokens_total, max_tokens * static_cast<int64_t>(prompts.size()));
  EXPECT_EQ(s.requests_total, static_cast<int64_t>(prompts.size()));
  }
}

INSTANTIATE_TEST_SUITE_P(LlamaAndGemma3, BatchEngineGreedy, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Gemma3" : "Llama"; });

// Finished, cancelled (callback false, cancel(id)) and failed (consumer throwing) requests all
// give their blocks back, and the engine keeps serving afterwards.
TEST(BatchEngine, BlocksAreReturnedAfterEveryRequest) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  BatchEngineOptions o;
  o.n_ctx = 128;
  o.n_slots = 3;
  o.block_tokens = 4;
  o.step_tokens = 32;
  auto engine = make_engine(model, o);
  Collector done, stopped, thrown, cancelled;
  stopped.stop_after = 2;
  thrown.stop_after = 3;
  thrown.throw_after_stop = true;
  ASSERT_TRUE(engine->submit(greedy(random_prompt(10, 5, vocab), 6), done.callback()).is_ok());
  ASSERT_TRUE(engine->submit(greedy(random_prompt(21, 6, vocab), 50), stopped.callback()).is_ok());
  ASSERT_TRUE(engine->submit(greedy(random_prompt(7, 7, vocab), 50), thrown.callback()).is_ok());
  cancelled.hold_after = 2;
  auto id = engine->submit(greedy(random_prompt(13, 8, vocab), 100), cancelled.callback());
  ASSERT_TRUE(id.is_ok());
  ASSERT_TRUE(cancelled.wait_held());
  engine->cancel(id.value());
  cancelled.release();
  for (Collector* c : {&done, &stopped, &thrown, &cancelled}) ASSERT_TRUE(c->wait_done());
  EXPECT_EQ(done.finish, FinishReason::kLength);
  EXPECT_EQ(done.tokens.size(), 6u);
  EXPECT_EQ(stopped.finish, FinishReason::kCancelled);
  EXPECT_EQ(stopped.tokens.size(), 2u);
  EXPECT_EQ(thrown.finish, FinishReason::kError);  // a failed request: its consumer threw
  EXPECT_NE(thrown.error.find("consumer failed"), std::string::npos) << thrown.error;
  EXPECT_EQ(thrown.tokens.size(), 3u);
  EXPECT_EQ(cancelled.finish, FinishReason::kCancelled);
  EXPECT_EQ(cancelled.tokens.size(), 2u);
  EngineStats s = idle_stats(*engine);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.requests_active, 0);
  // Still serving.
  Collector after;
  ASSERT_TRUE(engine->submit(greedy(random_prompt(5, 9, vocab), 4), after.callback()).is_ok());
  ASSERT_TRUE(after.wait_done());
  EXPECT_EQ(after.tokens.size(), 4u);
  s = idle_stats(*engine);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.kv_blocks_total, 3 * 128 / 4);
  EXPECT_EQ(s.kv_block_tokens, 4);
}

// A shared prompt prefix is prefilled once (its full blocks come from the cache) and the outputs
// equal those of an engine without prefix caching, including a prompt cached whole (its last
// block is copied before the last prompt token is rewritten).
TEST(BatchEngine, PrefixSharingMatchesNoSharing) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  const std::vector<int32_t> system = random_prompt(37, 10, vocab);
  std::vector<std::vector<int32_t>> prompts;
  for (uint32_t i = 0; i < 3; ++i) {
    auto p = system;
    const auto tail = random_prompt(5 + i, 20 + i, vocab);
    p.insert(p.end(), tail.begin(), tail.end());
    prompts.push_back(p);
  }
  prompts.push_back(std::vector<int32_t>(system.begin(), system.begin() + 32));  // cached whole after the first
  prompts.push_back(prompts.back());
  BatchEngineOptions o;
  o.n_ctx = 128;
  o.n_slots = 2;
  o.block_tokens = 16;
  o.step_tokens = 64;
  std::vector<std::vector<int32_t>> outputs[2];
  std::vector<int64_t> cached;
  for (bool sharing : {false, true}) {
    o.prefix_cache = sharing;
    auto engine = make_engine(model, o);
    for (const auto& p : prompts) {
      Collector c;
      ASSERT_TRUE(engine->submit(greedy(p, 8), c.callback()).is_ok());
      ASSERT_TRUE(c.wait_done());
      ASSERT_EQ(c.finish, FinishReason::kLength);
      outputs[sharing].push_back(c.tokens);
      if (sharing) {
        cached.push_back(c.cached);
      } else {
        EXPECT_EQ(c.cached, 0);
      }
    }
    const EngineStats s = idle_stats(*engine);
    EXPECT_EQ(s.kv_blocks_used, 0);
    if (sharing) {
      EXPECT_EQ(s.prompt_tokens_cached_total, 0 + 32 + 32 + 31 + 31);
    }
  }
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(outputs[0][i], outputs[1][i]) << "prompt " << i;
  // The first prompt fills the cache; the next two share the system prompt's two full blocks; the
  // last two are exactly those two blocks, cached whole but for the last token, which is rerun.
  EXPECT_EQ(cached, (std::vector<int64_t>{0, 32, 32, 31, 31}));
}

// Requests sharing a long prefix that are admitted in the same step (a first request holds the
// engine's thread in its callback while they queue) compute the prefix once: the first prefills
// it, the others wait for its blocks instead of computing duplicates and take them as they are
// published; greedy outputs equal an engine without prefix caching. With `cancel_leader`, the
// first is cancelled after one chunk: the others compute the rest themselves, and every block
// comes back.
void check_concurrent_prefix(bool cancel_leader, bool gemma3) {
  const auto model = tiny_model(gemma3);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  const int64_t n = 5, shared = 64, block = 8, max_tokens = 6;
  const std::vector<int32_t> system = random_prompt(shared, 30, vocab);
  std::vector<std::vector<int32_t>> prompts;
  int64_t prompt_total = 0;
  for (uint32_t i = 0; i < n; ++i) {
    auto p = system;
    const auto tail = random_prompt(3 + i, 40 + i, vocab);
    p.insert(p.end(), tail.begin(), tail.end());
    prompt_total += static_cast<int64_t>(p.size());
    prompts.push_back(p);
  }
  const std::vector<int32_t> first_prompt = random_prompt(5, 50, vocab);
  BatchEngineOptions o;
  o.n_ctx = 128;
  o.n_slots = static_cast<int>(n) + 1;
  o.block_tokens = block;
  o.step_tokens = 16;  // the shared prefix takes several steps
  std::vector<std::vector<int32_t>> outputs[2];
  for (bool sharing : {false, true}) {
    SCOPED_TRACE(sharing ? "sharing" : "no sharing");
    o.prefix_cache = sharing;
    auto engine = make_engine(model, o);
    Collector first;
    first.hold_after = 1;
    ASSERT_TRUE(engine->submit(greedy(first_prompt, 3), first.callback()).is_ok());
    ASSERT_TRUE(first.wait_held());
    std::vector<Collector> c(static_cast<size_t>(n));
    std::vector<RequestId> ids;
    for (int64_t i = 0; i < n; ++i) {
      auto id = engine->submit(greedy(prompts[i], max_tokens), c[i].callback());
      ASSERT_TRUE(id.is_ok());
      ids.push_back(id.value());
    }
    {
      std::lock_guard<std::mutex> lock(first.mutex);
      first.hold_after = 2;  // hold again after the next step: the leader has run one chunk
    }
    first.release();
    ASSERT_TRUE(first.wait_held());
    if (cancel_leader) engine->cancel(ids[0]);
    first.release();
    ASSERT_TRUE(first.wait_done());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(c[i].wait_done());
      if (cancel_leader && i == 0) {
        EXPECT_EQ(c[i].finish, FinishReason::kCancelled);
        continue;
      }
      EXPECT_EQ(c[i].finish, FinishReason::kLength) << "request " << i;
      outputs[sharing].push_back(c[i].tokens);
    }
    const EngineStats s = idle_stats(*engine);
    EXPECT_EQ(s.kv_blocks_used, 0);
    if (!sharing) {
      EXPECT_EQ(s.prompt_tokens_cached_total, 0);
      // Everything computed, by every request (the cancelled leader: its one chunk).
      const int64_t leader = cancel_leader ? block - static_cast<int64_t>(prompts[0].size()) : 0;
      EXPECT_EQ(s.prompt_tokens_computed_total, prompt_total + static_cast<int64_t>(first_prompt.size()) + leader);
      continue;
    }
    // The leader's one chunk is a full block (chunks cut by the budget end on block boundaries).
    const int64_t expected_cached = cancel_leader ? block + (n - 2) * shared : (n - 1) * shared;
    EXPECT_EQ(s.prompt_tokens_cached_total, expected_cached);
    if (cancel_leader) {
      // The cancelled leader computed one block; the rest was computed once, by the next one.
      EXPECT_EQ(s.prompt_tokens_computed_total,
                static_cast<int64_t>(first_prompt.size()) + block + prompt_total - static_cast<int64_t>(prompts[0].size()) - expected_cached);
    } else {
      EXPECT_EQ(s.prompt_tokens_computed_total, static_cast<int64_t>(first_prompt.size()) + prompt_total - expected_cached);
    }
  }
  ASSERT_EQ(outputs[0].size(), outputs[1].size());
  for (size_t i = 0; i < outputs[0].size(); ++i) EXPECT_EQ(outputs[0][i], outputs[1][i]) << "request " << i;
}

TEST(BatchEngine, ConcurrentSharedPrefixIsComputedOnce) {
  for (bool gemma3 : {false, true}) {
    SCOPED_TRACE(gemma3 ? "Gemma3" : "Llama");
    check_concurrent_prefix(false, gemma3);
  }
}

TEST(BatchEngine, CancellingThePrefixLeaderDoesNotStrandTheOthers) { check_concurrent_prefix(true, false); }

TEST(BatchEngine, RefusesBadRequestsAndBoundsTheQueue) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  BatchEngineOptions o;
  o.n_ctx = 64;
  o.n_slots = 1;
  o.max_queue = 1;
  o.block_tokens = 8;
  o.step_tokens = 16;
  auto engine = make_engine(model, o);
  Collector ignored;
  EXPECT_FALSE(engine->submit(greedy({}, 4), ignored.callback()).is_ok());
  EXPECT_FALSE(engine->submit(greedy({1, vocab}, 4), ignored.callback()).is_ok());
  EXPECT_FALSE(engine->submit(greedy({1, -2}, 4), ignored.callback()).is_ok());
  EXPECT_FALSE(engine->submit(greedy(random_prompt(60, 1, vocab), 5), ignored.callback()).is_ok());  // 65 > 64
  EXPECT_FALSE(engine->submit(greedy(random_prompt(4, 1, vocab), 0), ignored.callback()).is_ok());
  EXPECT_FALSE(engine->submit(greedy(random_prompt(60, 1, vocab), 4), nullptr).is_ok());
  EXPECT_EQ(engine->context_size(), 64);

  Collector running, queued, refused;
  running.hold_after = 1;  // admitted and holding the only slot
  auto a = engine->submit(greedy(random_prompt(4, 2, vocab), 60), running.callback());
  ASSERT_TRUE(a.is_ok());
  ASSERT_TRUE(running.wait_held());
  auto b = engine->submit(greedy(random_prompt(4, 3, vocab), 4), queued.callback());
  ASSERT_TRUE(b.is_ok());
  auto c = engine->submit(greedy(random_prompt(4, 4, vocab), 4), refused.callback());
  ASSERT_FALSE(c.is_ok());
  EXPECT_TRUE(is_queue_full(c.status())) << c.status().message();
  EXPECT_EQ(engine->stats().requests_queued, 1);
  engine->cancel(b.value());  // cancelled while queued: a final event, no tokens
  engine->cancel(a.value());
  running.release();
  ASSERT_TRUE(queued.wait_done());
  EXPECT_EQ(queued.finish, FinishReason::kCancelled);
  EXPECT_TRUE(queued.tokens.empty());
  ASSERT_TRUE(running.wait_done());
  EXPECT_EQ(running.tokens.size(), 1u);
  EXPECT_EQ(running.finish, FinishReason::kCancelled);
  EXPECT_EQ(idle_stats(*engine).kv_blocks_used, 0);
  engine->cancel(12345);  // unknown or finished ids are ignored
}

TEST(BatchEngine, ShutdownDrainsOrCancels) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  BatchEngineOptions o;
  o.n_ctx = 64;
  o.n_slots = 1;
  o.block_tokens = 8;
  o.step_tokens = 16;
  for (bool drain : {true, false}) {
    auto engine = make_engine(model, o);
    std::vector<Collector> c(3);
    c[0].hold_after = 1;  // the engine is held inside the first request until shutdown has begun
    for (size_t i = 0; i < c.size(); ++i) {
      ASSERT_TRUE(engine->submit(greedy(random_prompt(5, 30 + i, vocab), 5), c[i].callback()).is_ok());
    }
    ASSERT_TRUE(c[0].wait_held());
    std::thread stopper([&] { engine->shutdown(drain); });
    Collector probe;
    for (int i = 0; i < 1000 && engine->submit(greedy(random_prompt(5, 1, vocab), 4), probe.callback()).is_ok(); ++i) {
      std::this_thread::sleep_for(1ms);  // not stopping yet (a probe that got in is drained or cancelled too)
    }
    c[0].release();
    stopper.join();
    for (auto& x : c) {
      ASSERT_TRUE(x.wait_done(1s));  // shutdown returned after every final event
      EXPECT_EQ(x.finish, drain ? FinishReason::kLength : FinishReason::kCancelled);
    }
    Collector late;
    EXPECT_FALSE(engine->submit(greedy(random_prompt(5, 1, vocab), 4), late.callback()).is_ok());
  }
}

// OpenAI's presence/frequency penalties act on generated tokens: a huge one forbids any repeat in
// a greedy run that repeats without it.
TEST(BatchEngine, PenaltiesDiscourageRepeats) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  BatchEngineOptions o;
  o.n_ctx = 128;
  o.n_slots = 3;
  o.block_tokens = 8;
  auto engine = make_engine(model, o);
  auto distinct = [](std::vector<int32_t> t) {
    std::sort(t.begin(), t.end());
    return std::adjacent_find(t.begin(), t.end()) == t.end();
  };
  const auto prompt = random_prompt(6, 40, vocab);
  Collector plain, presence, frequency;
  auto with_presence = greedy(prompt, 40), with_frequency = greedy(prompt, 40);
  with_presence.presence_penalty = 1e4f;
  with_frequency.frequency_penalty = 1e4f;
  ASSERT_TRUE(engine->submit(greedy(prompt, 40), plain.callback()).is_ok());
  ASSERT_TRUE(engine->submit(with_presence, presence.callback()).is_ok());
  ASSERT_TRUE(engine->submit(with_frequency, frequency.callback()).is_ok());
  for (Collector* c : {&plain, &presence, &frequency}) ASSERT_TRUE(c->wait_done());
  ASSERT_EQ(plain.tokens.size(), 40u);
  EXPECT_FALSE(distinct(plain.tokens)) << "the unpenalized run should repeat for this test to mean anything";
  EXPECT_TRUE(distinct(presence.tokens));
  EXPECT_TRUE(distinct(frequency.tokens));
  EXPECT_EQ(presence.tokens.size(), 40u);
}

// A seeded, sampled request draws the same tokens alone and next to other sequences.
TEST(BatchEngine, SeededSamplingIsTheSameInABatch) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  BatchEngineOptions o;
  o.n_ctx = 128;
  o.n_slots = 4;
  o.block_tokens = 8;
  o.step_tokens = 16;
  auto sampled_request = [&](uint32_t seed) { return sampled(random_prompt(11, seed, vocab), 16, 0.9f, seed); };
  auto engine = make_engine(model, o);
  Collector alone;
  ASSERT_TRUE(engine->submit(sampled_request(7), alone.callback()).is_ok());
  ASSERT_TRUE(alone.wait_done());
  std::vector<Collector> c(4);
  for (uint32_t i = 0; i < 4; ++i) ASSERT_TRUE(engine->submit(sampled_request(i == 2 ? 7 : 50 + i), c[i].callback()).is_ok());
  for (auto& x : c) ASSERT_TRUE(x.wait_done());
  EXPECT_EQ(c[2].tokens, alone.tokens);
  EXPECT_NE(c[0].tokens, alone.tokens);
}

// A pool too small for every admitted sequence's full length: with preemption the newest
// sequence gives its blocks back and is recomputed later, and every output (greedy and seeded
// sampling) equals what the request produces alone; without it (reserve at admission) requests
// wait instead and nothing is preempted. Either way every block comes back.
TEST(BatchEngine, PreemptionRecomputesAndChangesNoOutput) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  auto request = [&](int i) {
    std::vector<int32_t> prompt = random_prompt(9 + 3 * i, 200 + static_cast<uint32_t>(i), vocab);
    // Odd ones sample (seeded): the sampler's state survives the preemption.
    return i % 2 == 1 ? sampled(prompt, 36, 0.9f, 300 + static_cast<uint32_t>(i)) : greedy(prompt, 36);
  };
  constexpr int kRequests = 4;
  BatchEngineOptions o;
  o.n_ctx = 64;
  o.n_slots = 4;
  o.block_tokens = 4;
  o.step_tokens = 16;
  o.prefix_cache = false;  // a preempted sequence recomputes everything (no cached blocks to reuse)
  // Alone, each request in a roomy pool.
  std::vector<std::vector<int32_t>> alone(kRequests);
  {
    auto engine = make_engine(model, o);
    for (int i = 0; i < kRequests; ++i) {
      Collector c;
      ASSERT_TRUE(engine->submit(request(i), c.callback()).is_ok());
      ASSERT_TRUE(c.wait_done());
      ASSERT_EQ(c.tokens.size(), 36u);
      alone[i] = c.tokens;
    }
  }
  EXPECT_EQ(alone[0], transformer_greedy(model, request(0).prompt, 36));
  // 4 requests of up to 54 positions (14 blocks each) in a pool of 24 blocks.
  for (bool preempt : {true, false}) {
    SCOPED_TRACE(preempt ? "preempt" : "reserve");
    o.kv_blocks = 24;
    o.preempt = preempt;
    auto engine = make_engine(model, o);
    std::vector<Collector> c(kRequests);
    for (int i = 0; i < kRequests; ++i) ASSERT_TRUE(engine->submit(request(i), c[i].callback()).is_ok());
    for (int i = 0; i < kRequests; ++i) {
      ASSERT_TRUE(c[i].wait_done());
      EXPECT_EQ(c[i].finish, FinishReason::kLength) << c[i].error;
      EXPECT_EQ(c[i].tokens, alone[i]) << "request " << i;
    }
    const EngineStats s = idle_stats(*engine);
    if (preempt) {
      EXPECT_GT(s.preemptions_total, 0);
    } else {
      EXPECT_EQ(s.preemptions_total, 0);
    }
    EXPECT_EQ(s.kv_blocks_used, 0);
    EXPECT_EQ(s.prompt_tokens_total, 9 + 12 + 15 + 18);  // a recomputed prompt is not counted twice
  }
}

// Cancelling a sequence while it waits preempted finishes it and leaks no block.
TEST(BatchEngine, CancellingAPreemptedSequence) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  BatchEngineOptions o;
  o.n_ctx = 64;
  o.n_slots = 2;
  o.block_tokens = 4;
  o.step_tokens = 16;
  o.kv_blocks = 14;
  Collector first, second;
  auto engine = make_engine(model, o);
  first.hold_after = 30;  // holds the engine once the pool is about to run dry
  ASSERT_TRUE(engine->submit(greedy(random_prompt(10, 1, vocab), 40), first.callback()).is_ok());
  auto id = engine->submit(greedy(random_prompt(10, 2, vocab), 40), second.callback());
  ASSERT_TRUE(id.is_ok());
  // Both grow by a block every 4 tokens; the pool runs dry near token 18 and the second (newer)
  // is preempted; the first then holds almost the whole pool, so the second waits preempted
  // until it finishes. The first's callback holds the engine at token 30, when that is the case.
  ASSERT_TRUE(first.wait_held());
  EXPECT_EQ(engine->stats().preemptions_total, 1);
  const size_t second_tokens = [&] {
    std::lock_guard<std::mutex> lock(second.mutex);
    return second.tokens.size();
  }();
  EXPECT_LT(second_tokens, 30u);
  engine->cancel(id.value());
  first.release();
  ASSERT_TRUE(first.wait_done());
  ASSERT_TRUE(second.wait_done());
  EXPECT_EQ(first.finish, FinishReason::kLength);
  EXPECT_EQ(first.tokens.size(), 40u);
  EXPECT_EQ(second.finish, FinishReason::kCancelled);
  EXPECT_EQ(second.tokens.size(), second_tokens);  // nothing more after the preemption
  EXPECT_EQ(idle_stats(*engine).kv_blocks_used, 0);
}

// Prompt-lookup speculation inside the batched step: drafts from each sequence's own tokens are
// verified by the target in the same forward, and the output is token for token that of plain
// greedy decoding (the verification rows equal the one-token rows: batch-invariant kernels),
// with penalties and alongside plain and sampled sequences. The tiny random model falls into
// loops under greedy decoding, so drafts are proposed and accepted.
TEST(BatchEngine, LookupDraftsChangeNoOutput) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  auto request = [&](int i) {
    std::vector<int32_t> prompt = random_prompt(12, 400 + static_cast<uint32_t>(i), vocab);
    prompt.insert(prompt.end(), prompt.begin(), prompt.begin() + 8);  // a repeat for lookup to find
    // Request 2 samples: lookup is for greedy requests only, the engine ignores it there.
    GenerationRequest r = i == 2 ? sampled(prompt, 48, 0.8f, 9) : greedy(prompt, 48);
    if (i == 1) r.frequency_penalty = 0.3f;
    return r;
  };
  constexpr int kRequests = 4;
  auto run = [&](int lookup, EngineStats* stats) {
    BatchEngineOptions o;
    o.n_ctx = 128;
    o.n_slots = 4;
    o.block_tokens = 4;
    o.step_tokens = 32;
    o.lookup_draft = lookup;
    std::vector<GenerationRequest> requests;
    for (int i = 0; i < kRequests; ++i) requests.push_back(request(i));
    return run_to_length(model, o, requests, stats);
  };
  EngineStats plain_stats, lookup_stats;
  const auto plain = run(0, &plain_stats);
  const auto speculative = run(8, &lookup_stats);
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(speculative[i], plain[i]) << "request " << i;
  EXPECT_EQ(plain_stats.draft_tokens_total, 0);
  EXPECT_GT(lookup_stats.draft_tokens_accepted_total, 0);
  EXPECT_LE(lookup_stats.draft_tokens_accepted_total, lookup_stats.draft_tokens_total);
  EXPECT_EQ(lookup_stats.kv_blocks_used, 0);
  std::printf("lookup: %lld of %lld drafted tokens accepted\n", static_cast<long long>(lookup_stats.draft_tokens_accepted_total),
              static_cast<long long>(lookup_stats.draft_tokens_total));
  // A request asking for more than the engine allows is refused.
  BatchEngineOptions o;
  auto engine = make_engine(model, o);
  GenerationRequest too_long = request(0);
  too_long.lookup_draft = 17;
  Collector unused;
  EXPECT_FALSE(engine->submit(too_long, unused.callback()).is_ok());
  o.lookup_draft = -1;
  EXPECT_FALSE(make_batch_engine(model, o).is_ok());
}

// A draft model in the engine (frugal serve --draft): the target drafting for itself (every draft
// accepted), its early exit (self:1) and another random model with the same vocabulary all leave
// every output as plain decoding's, for greedy requests with penalties, next to a sampled one;
// above draft_model_sequences decoding sequences the draft model stands aside.
TEST(BatchEngine, DraftModelsChangeNoOutput) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  testing::TinyModelOptions other_options;
  other_options.seed = 5;
  other_options.n_layer = 1;
  const std::string other_path = testing::temp_dir() + "/tiny_other.gguf";
  ASSERT_TRUE(testing::write_tiny_model(other_path, other_options).is_ok());
  auto other = Model::load(other_path);
  ASSERT_TRUE(other.is_ok()) << other.status().message();
  auto request = [&](int i) {
    GenerationRequest r = i == 2 ? sampled(random_prompt(10, 700 + static_cast<uint32_t>(i), vocab), 40, 0.8f, 3)
                                 : greedy(random_prompt(10, 700 + static_cast<uint32_t>(i), vocab), 40);
    if (i == 1) r.presence_penalty = 0.4f;
    return r;
  };
  auto run = [&](int n_requests, std::shared_ptr<const Model> draft, int64_t exit_layer, int sequences, EngineStats* stats) {
    BatchEngineOptions o;
    o.n_ctx = 128;
    o.n_slots = 4;
    o.block_tokens = 4;
    o.step_tokens = 32;
    o.draft_model = std::move(draft);
    o.draft_exit_layer = exit_layer;
    o.draft_model_max = 4;
    o.draft_model_sequences = sequences;
    o.draft_p_min = 0;  // a tiny random model is never confident
    std::vector<GenerationRequest> requests;
    for (int i = 0; i < n_requests; ++i) requests.push_back(request(i));
    return run_to_length(model, o, requests, stats);
  };
  EngineStats plain_stats, stats;
  const auto plain = run(4, nullptr, 0, 1, &plain_stats);
  EXPECT_EQ(plain_stats.draft_tokens_total, 0);
  // One request alone: the target drafting for itself has every draft accepted.
  EXPECT_EQ(run(1, model, 0, 1, &stats)[0], plain[0]);
  EXPECT_GT(stats.draft_tokens_total, 0);
  EXPECT_EQ(stats.draft_tokens_accepted_total, stats.draft_tokens_total);
  // Four together, the draft model allowed for all of them: self, early exit, another model.
  const std::shared_ptr<const Model> other_model = *other;
  for (auto [draft, exit_layer] : {std::pair{model, int64_t{0}}, std::pair{model, int64_t{1}}, std::pair{other_model, int64_t{0}}}) {
    const auto out = run(4, draft, exit_layer, 4, &stats);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], plain[i]) << "request " << i << ", exit layer " << exit_layer;
    EXPECT_GT(stats.draft_tokens_total, 0);
    EXPECT_LE(stats.draft_tokens_accepted_total, stats.draft_tokens_total);
    EXPECT_EQ(stats.kv_blocks_used, 0);
  }
  // Allowed for one decoding sequence only: with four decoding together it drafts less.
  EngineStats all_stats;
  run(4, model, 0, 4, &all_stats);
  const auto limited = run(4, model, 0, 1, &stats);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(limited[i], plain[i]) << "request " << i;
  EXPECT_LT(stats.draft_tokens_total, all_stats.draft_tokens_total);
  // A draft with another vocabulary, or a draft length out of range, is refused at start.
  testing::TinyModelOptions small_vocab;
  small_vocab.n_merges = 4;
  const std::string small_path = testing::temp_dir() + "/tiny_small_vocab.gguf";
  ASSERT_TRUE(testing::write_tiny_model(small_path, small_vocab).is_ok());
  BatchEngineOptions o;
  o.draft_model = *Model::load(small_path);
  auto refused = make_batch_engine(model, o);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("vocabulary"), std::string::npos) << refused.status().message();
  o.draft_model = model;
  o.draft_model_max = 17;
  EXPECT_FALSE(make_batch_engine(model, o).is_ok());
}

TEST(BatchEngine, RejectsBadOptions) {
  const auto model = tiny_model(false);
  BatchEngineOptions o;
  o.n_slots = 0;
  EXPECT_FALSE(make_batch_engine(model, o).is_ok());
  o = BatchEngineOptions{};
  o.block_tokens = 10;
  EXPECT_FALSE(make_batch_engine(model, o).is_ok());
  o = BatchEngineOptions{};
  o.step_tokens = 2;
  o.n_slots = 4;
  EXPECT_FALSE(make_batch_engine(model, o).is_ok());
  EXPECT_FALSE(make_batch_engine(nullptr, BatchEngineOptions{}).is_ok());
}

// One sequence through the paged multi-sequence forward pass gives the Transformer's logits bit
// for bit, for every cache type: same kernels, same rows, and quantized caches store the same
// Hadamard-rotated heads (kv/kv_rotation.h). Greedy tokens alone would not notice a missing
// rotation on a tiny model; logits do.
TEST(BatchForward, OneSequenceGivesTheTransformersLogits) {
  for (KvType cache_type : {KvType::kF16, KvType::kQ8_0, KvType::kQ4_0}) {
    SCOPED_TRACE(kv_type_name(cache_type));
    const auto model = tiny_model(false, true);
    const ModelConfig& c = model->config();
    const std::vector<int32_t> prompt = random_prompt(20, 9, static_cast<int32_t>(c.n_vocab));
    const int64_t n = static_cast<int64_t>(prompt.size());

    TransformerOptions options;
    options.n_ctx = 64;
    options.n_batch = 64;
    options.all_logits = true;
    options.cache_type_k = options.cache_type_v = cache_type;
    Transformer transformer(model, options);
    ASSERT_TRUE(transformer.evaluate(prompt.data(), n).is_ok());

    PagedKvOptions paged;
    paged.n_layer = c.n_layer;
    paged.row_elements = c.kv_dim();
    paged.n_blocks = 8;
    paged.block_tokens = 8;
    paged.key_type = paged.value_type = cache_type;
    auto cache = PagedKvCache::create(paged);
    ASSERT_TRUE(cache.is_ok()) << cache.status().message();
    PagedKvCache::Sequence sequence;
    ASSERT_TRUE((*cache)->prepare_write(sequence, 0, n).is_ok());
    BatchForward forward(model, **cache, n, n, 2);
    std::vector<int64_t> positions(static_cast<size_t>(n)), rows(static_cast<size_t>(n));
    std::vector<const int32_t*> tables(static_cast<size_t>(n), sequence.blocks.data());
    for (int64_t i = 0; i < n; ++i) positions[i] = rows[i] = i;
    forward.run(prompt.data(), positions.data(), tables.data(), n, rows.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t v = 0; v < c.n_vocab; ++v) {
        ASSERT_EQ(forward.logits(i)[v], transformer.logits(i)[v]) << "token " << i << " logit " << v;
      }
    }
    (*cache)->release(sequence);
  }
}

// Speculative sampling in the batched step: prompt lookup's point masses and an early-exit draft
// model's distributions, verified row by row by the rejection rule (with the bonus token when a
// draft is kept whole). The first three tokens of thousands of requests follow the target's
// distribution (exact, enumerated with the one-token path), not the draft's.
TEST(BatchEngine, SpeculativeSamplingFollowsTheTargetDistribution) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  const SamplerOptions sampling = testing::top_k_sampling(2);
  TransformerOptions to;
  to.n_ctx = 64;
  to.n_threads = 1;
  // A prompt that gives prompt lookup something to propose after the first sampled token: it ends
  // in token b, and earlier b is followed by each token c the sampler may draw after the prompt,
  // then by the target's likeliest token after prompt + c (found by iterating to a fixed point).
  const std::vector<int32_t> tail = random_prompt(6, 900, vocab);
  const int32_t b = tail.back();
  std::map<int32_t, int32_t> likeliest_after;  // c -> the token lookup proposes after b c
  std::vector<int32_t> prompt;
  std::vector<double> p;
  auto distribution_after = [&](const std::vector<int32_t>& tokens) {
    Transformer t(model, to);
    EXPECT_TRUE(t.evaluate(tokens.data(), static_cast<int64_t>(tokens.size())).is_ok());
    sampling_distribution(t.last_logits(), vocab, sampling, p);
  };
  for (int round = 0; round < 16; ++round) {
    prompt.clear();
    for (const auto& [c, next] : likeliest_after) prompt.insert(prompt.end(), {b, c, next});
    prompt.insert(prompt.end(), tail.begin(), tail.end());
    bool fixed = true;
    distribution_after(prompt);
    for (int32_t c = 0; c < vocab; ++c) {
      if (p[c] > 0 && !likeliest_after.count(c)) {
        likeliest_after[c] = 0;
        fixed = false;
      }
    }
    for (auto& [c, next] : likeliest_after) {
      std::vector<int32_t> extended = prompt;
      extended.push_back(c);
      distribution_after(extended);
      const auto top = static_cast<int32_t>(std::max_element(p.begin(), p.end()) - p.begin());
      if (top != next) fixed = false;
      next = top;
    }
    if (fixed) break;
  }
  const auto exact = testing::exact_three_token_distribution(model, to, sampling, prompt);
  to.exit_layer = 1;
  const auto draft_only = testing::exact_three_token_distribution(model, to, sampling, prompt);
  const auto perturbed = testing::mixture(exact, draft_only, 0.2);
  struct Drafting {
    const char* name;
    int lookup;
    std::shared_ptr<const Model> draft;
  };
  for (const Drafting& d : {Drafting{"lookup", 4, nullptr}, Drafting{"early exit after 1 block", 0, model}}) {
    SCOPED_TRACE(d.name);
    BatchEngineOptions o;
    o.n_ctx = 64;
    o.n_slots = 8;
    o.block_tokens = 4;
    o.step_tokens = 64;
    o.n_threads = 1;
    o.lookup_draft = d.lookup;
    o.draft_model = d.draft;
    o.draft_exit_layer = 1;
    o.draft_model_max = 4;
    o.draft_model_sequences = o.n_slots;
    auto engine = make_engine(model, o);
    testing::TokenDistribution counts;
    std::vector<double> tv;
    int done = 0;
    for (int limit : {400, 4000}) {
      while (done < limit) {
        // 3 tokens: a one-token draft and the bonus token; 4: two drafts.
        std::vector<Collector> c(static_cast<size_t>(std::min(64, limit - done)));
        for (size_t i = 0; i < c.size(); ++i) {
          GenerationRequest r = greedy(prompt, 3 + static_cast<int64_t>(i % 2));
          r.sampling = sampling;
          r.sampling.seed = 1000 + static_cast<uint64_t>(done) + i;
          ASSERT_TRUE(engine->submit(r, c[i].callback()).is_ok());
        }
        for (auto& x : c) {
          ASSERT_TRUE(x.wait_done());
          ASSERT_GE(x.tokens.size(), 3u) << x.error;
          counts[{x.tokens[0], x.tokens[1], x.tokens[2]}] += 1;
        }
        done += static_cast<int>(c.size());
      }
      tv.push_back(testing::total_variation(counts, done, exact));
    }
    const EngineStats stats = idle_stats(*engine);
    const double to_draft = testing::total_variation(counts, done, draft_only);
    const double to_perturbed = testing::total_variation(counts, done, perturbed);
    std::printf("[ info ] %s: TV to the target %.4f (400 requests) -> %.4f (4000), to the draft %.4f, to 80/20 "
                "target/draft %.4f; %lld of %lld drafts accepted\n", d.name, tv[0], tv[1], to_draft, to_perturbed,
                static_cast<long long>(stats.draft_tokens_accepted_total), static_cast<long long>(stats.draft_tokens_total));
    EXPECT_GT(stats.draft_tokens_total, stats.draft_tokens_accepted_total);  // rejections happen ...
    EXPECT_GT(stats.draft_tokens_accepted_total, 0);                        // ... and so do acceptances
    EXPECT_LT(tv[1], tv[0]);  // the distance shrinks with samples (~ 1/sqrt(n)) ...
    EXPECT_LT(tv[1], 0.035);
    EXPECT_GT(to_draft, 4 * tv[1]);      // ... far below the distance to the draft's distribution
    EXPECT_GT(to_perturbed, 3 * tv[1]);  // ... and to the target moved 20% toward the draft
  }
}

// A sampled request whose caller chose the seed decodes without drafts, so the seed alone fixes
// its output; without a chosen seed the same request is speculated.
TEST(BatchEngine, ChosenSeedsAreNotSpeculated) {
  const auto model = tiny_model(false);
  const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);
  const std::vector<int32_t> unit = random_prompt(3, 901, vocab);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 6; ++i) prompt.insert(prompt.end(), unit.begin(), unit.end());
  BatchEngineOptions o;
  o.n_ctx = 64;
  o.n_slots = 2;
  o.block_tokens = 4;
  o.step_tokens = 32;
  GenerationRequest seeded = sampled(prompt, 24, 0.3f, 5);
  EngineStats plain_stats, stats;
  const auto plain = run_to_length(model, o, {seeded}, &plain_stats);
  o.lookup_draft = 4;
  EXPECT_EQ(run_to_length(model, o, {seeded}, &stats)[0], plain[0]);
  EXPECT_EQ(stats.draft_tokens_total, 0);
  seeded.reproducible_sampling = false;
  run_to_length(model, o, {seeded}, &stats);
  EXPECT_GT(stats.draft_tokens_total, 0);
}

}  // namespace
}  // namespace frugal::serve
