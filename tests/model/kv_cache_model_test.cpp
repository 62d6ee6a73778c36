// Model tests of the KV cache options on tiny random models: quantized caches (decode equals
// batched recompute; q8_0 logits close to f16), and the rolling cache with attention sinks
// (window >= text equals no window; generation continues past the window in constant memory;
// re-rotated keys equal keys computed at the new positions; bad settings refused).
#include <gtest/gtest.h>

#include <cmath>

#include "support/test_support.h"

namespace frugal {
namespace {

const std::vector<int32_t> kTokens = {72, 101, 108, 108, 111, 256, 44, 32, 119, 111, 114, 108, 100, 257, 33, 10,
                                      84, 104, 101, 32, 99, 97, 116, 32, 115, 97, 116, 46, 10, 65, 66, 67};

// head_dim 32: the smallest head the q8_0/q4_0 blocks tile.
std::shared_ptr<const Model> tiny_model(bool gemma3) {
  testing::TinyModelOptions o;
  o.n_embd = 128;
  o.n_head = 4;
  o.n_head_kv = 2;
  o.gemma3 = gemma3;
  const std::string path = testing::temp_dir() + (gemma3 ? "/tiny_kv_gemma.gguf" : "/tiny_kv.gguf");
  EXPECT_TRUE(testing::write_tiny_model(path, o).is_ok());
  auto model = Model::load(path);
  EXPECT_TRUE(model.is_ok()) << model.status().message();
  return model.is_ok() ? model.value() : nullptr;
}

std::vector<std::vector<float>> decode(const std::shared_ptr<const Model>& model, TransformerOptions options,
                                       const std::vector<int32_t>& tokens) {
  options.n_batch = 4;
  Transformer t(model, options);
  std::vector<std::vector<float>> rows;
  for (int32_t token : tokens) {
    EXPECT_TRUE(t.evaluate(&token, 1).is_ok());
    rows.emplace_back(t.last_logits(), t.last_logits() + model->config().n_vocab);
  }
  return rows;
}

class QuantizedCache : public ::testing::TestWithParam<bool> {};

TEST_P(QuantizedCache, DecodeMatchesRecomputeAndStaysCloseToF16) {
  auto model = tiny_model(GetParam());
  ASSERT_TRUE(model);
  ASSERT_EQ(model->config().head_dim, 32);
  const int64_t vocab = model->config().n_vocab, n = static_cast<int64_t>(kTokens.size());
  TransformerOptions f16;
  f16.n_ctx = 64;
  const auto reference = decode(model, f16, kTokens);
  for (KvType type : {KvType::kQ8_0, KvType::kQ4_0}) {
    TransformerOptions options = f16;
    options.cache_type_k = options.cache_type_v = type;
    ASSERT_TRUE(check_transformer_options(model->config(), options).is_ok());
    const auto incremental = decode(model, options, kTokens);
    options.n_batch = n;
    options.all_logits = true;
    Transformer full(model, options);
    ASSERT_TRUE(full.evaluate(kTokens.data(), n).is_ok());
    EXPECT_LT(full.kv_cache_bytes(), Transformer(model, f16).kv_cache_bytes() * (type == KvType::kQ8_0 ? 0.54 : 0.29));
    // Decode and batched prefill store the same quantized rows and read them the same way.
    float worst = 0, scale = 0, vs_f16 = 0;
    int same_top = 0;
    for (int64_t i = 0; i < n; ++i) {
      int64_t top_a = 0, top_b = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        worst = std::max(worst, std::fabs(full.logits(i)[v] - incremental[i][v]));
        scale = std::max(scale, std::fabs(reference[i][v]));
        vs_f16 = std::max(vs_f16, std::fabs(incremental[i][v] - reference[i][v]));
        if (incremental[i][v] > incremental[i][top_a]) top_a = v;
        if (reference[i][v] > reference[i][top_b]) top_b = v;
      }
      same_top += top_a == top_b;
    }
    EXPECT_GT(scale, 0.1f);
    EXPECT_LT(worst, 2e-4f) << kv_type_name(type);
    EXPECT_GT(vs_f16, 0.0f) << kv_type_name(type) << ": the cache type changed nothing";
    if (type == KvType::kQ8_0) {
      // q8_0 moves keys/values by <= 1/254 of their block's max: logits within 2% of their range.
      EXPECT_LT(vs_f16, 0.02f * scale);
      EXPECT_GE(same_top, n - 1);
    } else {
      EXPECT_LT(vs_f16, 0.25f * scale);  // q4_0: 1/16 steps, reported rather than held to q8_0's bound
    }
  }
}

// The Hadamard rotation (kv/kv_rotation.h) is on by default for quantized caches and really runs:
// switching it off changes the logits, and both stay close to the f16 cache's.
TEST_P(QuantizedCache, HadamardRotationIsOnByDefaultAndChangesOnlyRounding) {
  auto model = tiny_model(GetParam());
  ASSERT_TRUE(model);
  const int64_t vocab = model->config().n_vocab;
  TransformerOptions f16;
  f16.n_ctx = 64;
  EXPECT_FALSE(Transformer(model, f16).rotates_keys());
  const auto reference = decode(model, f16, kTokens);
  TransformerOptions rotated = f16;
  rotated.cache_type_k = rotated.cache_type_v = KvType::kQ8_0;
  TransformerOptions plain = rotated;
  plain.kv_rotation = false;
  EXPECT_TRUE(Transformer(model, rotated).rotates_keys());
  EXPECT_TRUE(Transformer(model, rotated).rotates_values());
  EXPECT_FALSE(Transformer(model, plain).rotates_keys());
  const auto a = decode(model, rotated, kTokens), b = decode(model, plain, kTokens);
  float differ = 0, scale = 0, a_vs_f16 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    for (int64_t v = 0; v < vocab; ++v) {
      differ = std::max(differ, std::fabs(a[i][v] - b[i][v]));
      a_vs_f16 = std::max(a_vs_f16, std::fabs(a[i][v] - reference[i][v]));
      scale = std::max(scale, std::fabs(reference[i][v]));
    }
  }
  EXPECT_GT(differ, 0.0f) << "kv_rotation changed nothing";
  EXPECT_LT(a_vs_f16, 0.02f * scale);
}

INSTANTIATE_TEST_SUITE_P(Graphs, QuantizedCache, ::testing::Values(false, true),
                         [](const auto& info) { return std::string(info.param ? "gemma3" : "llama"); });

TEST(RollingCache, WindowLongerThanTheTextChangesNothing) {
  auto model = tiny_model(false);
  ASSERT_TRUE(model);
  TransformerOptions plain;
  plain.n_ctx = 64;
  TransformerOptions rolling = plain;
  rolling.window = static_cast<int64_t>(kTokens.size());
  rolling.sinks = 4;
  const auto a = decode(model, plain, kTokens), b = decode(model, rolling, kTokens);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << i;
}

// Past the window generation continues, the cache's memory is that of the window, and the kept
// keys are those computed at their new positions: in layer 0 a key depends only on its token and
// its position, so after an eviction the cache must hold what a fresh cache fed the kept tokens
// holds (up to the f16 rounding of the rotated key).
TEST(RollingCache, ContinuesPastTheWindowWithReRotatedKeys) {
  for (bool gemma3 : {false, true}) {
   // q8_0 keys are stored Hadamard-rotated: the shift must un-rotate, apply RoPE and rotate again.
   for (KvType key_type : {KvType::kF16, KvType::kQ8_0}) {
    auto model = tiny_model(gemma3);
    ASSERT_TRUE(model);
    TransformerOptions options;
    options.cache_type_k = key_type;
    options.n_ctx = 1 << 20;  // ignored when rolling: the window is the cache
    options.window = 16;
    options.sinks = 4;
    options.n_batch = 4;
    Transformer t(model, options);
    const size_t bytes = t.kv_cache_bytes();
    EXPECT_EQ(bytes, Transformer(model, TransformerOptions{.n_ctx = 16, .cache_type_k = key_type}).kv_cache_bytes());
    std::vector<int32_t> kept;  // the tokens the cache holds, in order
    for (int step = 0; step < 3; ++step) {
      for (int32_t token : kTokens) {
        const int64_t before = t.evicted();
        ASSERT_TRUE(t.evaluate(&token, 1).is_ok());
        const int64_t dropped = t.evicted() - before;
        if (dropped > 0) kept.erase(kept.begin() + 4, kept.begin() + 4 + dropped);
        kept.push_back(token);
        ASSERT_LE(t.position(), 16);
        ASSERT_EQ(t.position(), static_cast<int64_t>(kept.size()));
        for (int64_t v = 0; v < model->config().n_vocab; ++v) ASSERT_TRUE(std::isfinite(t.last_logits()[v]));
      }
    }
    EXPECT_GT(t.evicted(), 64);
    EXPECT_EQ(t.kv_cache_bytes(), bytes);

    TransformerOptions fresh_options;
    fresh_options.n_ctx = 16;
    fresh_options.cache_type_k = key_type;
    Transformer fresh(model, fresh_options);
    ASSERT_TRUE(fresh.evaluate(kept.data(), static_cast<int64_t>(kept.size())).is_ok());
    const int64_t kvd = model->config().kv_dim();
    std::vector<float> a(kvd), b(kvd);
    float worst = 0, scale = 0;
    for (int64_t p = 0; p < t.position(); ++p) {
      KvCache::load(t.kv_cache().key_row(0, p), kvd, key_type, a.data());
      KvCache::load(fresh.kv_cache().key_row(0, p), kvd, key_type, b.data());
      for (int64_t i = 0; i < kvd; ++i) worst = std::max(worst, std::fabs(a[i] - b[i])), scale = std::max(scale, std::fabs(b[i]));
    }
    EXPECT_GT(scale, 0.1f);
    // A key re-rotated up to ~7 times, each rounding to f16 (relative 2^-11): a few 1e-3 of its
    // scale; q8_0 re-quantizes each time (steps of 1/127 of a block's max).
    EXPECT_LT(worst, (key_type == KvType::kF16 ? 5e-3f : 4e-2f) * scale)
        << (gemma3 ? "gemma3 " : "llama ") << kv_type_name(key_type);
   }
  }
}

// Streaming perplexity: a window longer than the stream gives the plain cache's number; a window
// far shorter than the stream still scores every token, with the cache's memory fixed.
TEST(RollingCache, StreamingPerplexity) {
  auto model = tiny_model(false);
  ASSERT_TRUE(model);
  std::vector<int32_t> stream;
  for (int i = 0; i < 4; ++i) stream.insert(stream.end(), kTokens.begin(), kTokens.end());
  const int64_t n = static_cast<int64_t>(stream.size());
  TransformerOptions plain;
  plain.n_ctx = n;
  plain.n_batch = 8;
  plain.all_logits = true;
  Transformer a(model, plain);
  auto pa = compute_streaming_perplexity(a, stream, -1, 8, nullptr);
  ASSERT_TRUE(pa.is_ok()) << pa.status().message();
  TransformerOptions wide = plain;
  wide.window = n;
  Transformer b(model, wide);
  auto pb = compute_streaming_perplexity(b, stream, -1, 8, nullptr);
  ASSERT_TRUE(pb.is_ok());
  EXPECT_EQ(pa->scored_tokens, n - 1);
  EXPECT_NEAR(pa->ppl, pb->ppl, 1e-9 * pa->ppl);
  TransformerOptions narrow = plain;
  narrow.window = 24;
  Transformer c(model, narrow);
  auto pc = compute_streaming_perplexity(c, stream, -1, 8, nullptr);
  ASSERT_TRUE(pc.is_ok());
  EXPECT_EQ(pc->scored_tokens, n - 1);
  EXPECT_GT(c.evicted(), 0);
  EXPECT_TRUE(std::isfinite(pc->ppl));
  EXPECT_GT(pc->ppl, 1.0);
}

// The windowed-recompute baseline (StreamingLLM sec. 4.1): a window covering the whole stream is
// full attention, so it equals the plain cache's streaming number at any stride; with a short
// window the stride changes only how much context a token gets (exact at stride 1), every token
// is still scored once, and the trace has one entry per recomputation. Bad strides are refused.
TEST(RollingCache, WindowedRecomputePerplexity) {
  auto model = tiny_model(false);
  ASSERT_TRUE(model);
  std::vector<int32_t> stream;
  for (int i = 0; i < 3; ++i) stream.insert(stream.end(), kTokens.begin(), kTokens.end());
  const int64_t n = static_cast<int64_t>(stream.size());
  TransformerOptions plain;
  plain.n_ctx = n;
  plain.n_batch = n;
  plain.all_logits = true;
  Transformer a(model, plain);
  auto full = compute_streaming_perplexity(a, stream, -1, 8, nullptr);
  ASSERT_TRUE(full.is_ok()) << full.status().message();
  for (int64_t stride : {int64_t{1}, int64_t{5}, n}) {
    auto r = compute_recompute_perplexity(a, stream, -1, n, stride, nullptr);
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    EXPECT_EQ(r->scored_tokens, n - 1);
    EXPECT_NEAR(r->ppl, full->ppl, 1e-5 * full->ppl) << "stride " << stride;
    EXPECT_EQ(static_cast<int64_t>(r->scored_at.size()), (n - 1 + stride - 1) / stride);
    EXPECT_EQ(r->scored_at.back(), n - 1);
  }
  // A window of 6: the exact form differs from full attention and from a coarse stride.
  auto exact = compute_recompute_perplexity(a, stream, -1, 6, 1, nullptr);
  auto coarse = compute_recompute_perplexity(a, stream, -1, 6, 6, nullptr);
  ASSERT_TRUE(exact.is_ok() && coarse.is_ok());
  EXPECT_EQ(exact->scored_tokens, n - 1);
  EXPECT_EQ(coarse->scored_tokens, n - 1);
  EXPECT_GT(std::fabs(exact->ppl - full->ppl), 1e-6 * full->ppl);
  EXPECT_GT(std::fabs(exact->ppl - coarse->ppl), 1e-6 * full->ppl);
  EXPECT_FALSE(compute_recompute_perplexity(a, stream, -1, 6, 7, nullptr).is_ok());
  EXPECT_FALSE(compute_recompute_perplexity(a, stream, -1, 6, 0, nullptr).is_ok());
}

TEST(RollingCache, BadSettingsAreRefused) {
  auto model = tiny_model(false);
  ASSERT_TRUE(model);
  TransformerOptions options;
  options.window = 4;
  options.sinks = 4;
  Status s = check_transformer_options(model->config(), options);
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("--window"), std::string::npos);
  options.window = 8;
  options.sinks = 4;
  EXPECT_TRUE(check_transformer_options(model->config(), options).is_ok());
  // A batch that cannot fit next to the sinks is an error, not a crash.
  options.n_batch = 8;
  Transformer t(model, options);
  std::vector<int32_t> tokens(8, 5);
  EXPECT_FALSE(t.evaluate(tokens.data(), 8).is_ok());
  // Block types need heads the blocks tile: the default tiny model's are 16 wide.
  auto small = Model::load([] {
    const std::string path = testing::temp_dir() + "/tiny_small_heads.gguf";
    EXPECT_TRUE(testing::write_tiny_model(path, {}).is_ok());
    return path;
  }());
  ASSERT_TRUE(small.is_ok());
  TransformerOptions q8;
  q8.cache_type_k = KvType::kQ8_0;
  EXPECT_FALSE(check_transformer_options(small.value()->config(), q8).is_ok());
}

}  // namespace
}  // namespace frugal
