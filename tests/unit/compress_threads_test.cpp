// The compressors split their work over a thread pool (compress/parallel.h): every result must be
// bit-identical for any thread count, including counts that split the rows unevenly.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "compress/awq.h"
#include "compress/gptq.h"
#include "compress/prune.h"
#include "support/synthetic_data.h"

namespace frugal::compress {
namespace {

using testing::gaussian_weights;
using testing::llm_activations;

constexpr int kThreadCounts[] = {2, 3};

TEST(CompressThreads, HessianAndFactorsDoNotDependOnThreads) {
  std::mt19937 rng(11);
  const int64_t cols = 203, tokens = 300;  // odd sizes: uneven chunks, a partial row quad
  const std::vector<float> x = llm_activations(tokens, cols, 2, rng);
  HessianAccumulator serial(cols);
  serial.add(x.data(), tokens);
  const std::vector<double> h = serial.hessian();
  auto prepared = gptq_prepare(h.data(), cols);
  ASSERT_TRUE(prepared.is_ok());
  for (int threads : kThreadCounts) {
    ThreadPool pool(threads);
    HessianAccumulator acc(cols);
    acc.add(x.data(), tokens, 0, &pool);
    EXPECT_EQ(acc.hessian(), h) << threads << " threads";
    GptqOptions options;
    options.pool = &pool;
    auto threaded = gptq_prepare(h.data(), cols, options);
    ASSERT_TRUE(threaded.is_ok());
    EXPECT_EQ(threaded->u, prepared->u) << threads << " threads";
    EXPECT_EQ(threaded->damp, prepared->damp);
  }
}

TEST(CompressThreads, GptqAndSparseGptDoNotDependOnThreads) {
  std::mt19937 rng(12);
  const int64_t rows = 37, cols = 256, tokens = 512;
  const std::vector<float> x = llm_activations(tokens, cols, 3, rng);
  const std::vector<float> w = gaussian_weights(rows, cols, rng);
  HessianAccumulator acc(cols);
  acc.add(x.data(), tokens);
  const std::vector<double> h = acc.hessian();
  struct Case {
    QuantTarget target;
    bool act_order;
    double sparsity;
    int n, m;
  };
  const Case cases[] = {{QuantTarget::format(DType::Q4_K), false, 0.0, 0, 0},
                        {QuantTarget::generic_grid(3, 100, false), true, 0.0, 0, 0},
                        {QuantTarget::format(DType::Q4_0), false, 0.5, 0, 0},
                        {QuantTarget::format(DType::Q8_0), false, 0.0, 2, 4}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.target.name());
    GptqOptions options;
    options.act_order = c.act_order;
    options.sparsity = c.sparsity;
    options.sparsity_n = c.n;
    options.sparsity_m = c.m;
    options.block_size = 64;
    auto serial = gptq_quantize(w.data(), rows, cols, h.data(), c.target, options);
    ASSERT_TRUE(serial.is_ok()) << serial.status().message();
    for (int threads : kThreadCounts) {
      ThreadPool pool(threads);
      options.pool = &pool;
      auto threaded = gptq_quantize(w.data(), rows, cols, h.data(), c.target, options);
      ASSERT_TRUE(threaded.is_ok());
      EXPECT_EQ(threaded->quantized.data, serial->quantized.data) << threads << " threads";
      EXPECT_EQ(threaded->quantized.values, serial->quantized.values) << threads << " threads";
      EXPECT_EQ(threaded->proxy_loss, serial->proxy_loss);
      EXPECT_EQ(threaded->grid_fits, serial->grid_fits);
      EXPECT_EQ(threaded->sub_block_refits, serial->sub_block_refits);
      EXPECT_EQ(threaded->error_update_multiply_adds, serial->error_update_multiply_adds);
      options.pool = nullptr;
    }
  }
  auto prepared = gptq_prepare(h.data(), cols);
  ASSERT_TRUE(prepared.is_ok());
  for (const SparsityPattern pattern : {SparsityPattern{}, SparsityPattern{2, 4}}) {
    std::vector<float> serial = w;
    auto s = sparsegpt_prune(serial.data(), rows, cols, *prepared, pattern.is_n_m() ? 0.0 : 0.5, pattern);
    ASSERT_TRUE(s.is_ok());
    for (int threads : kThreadCounts) {
      ThreadPool pool(threads);
      SparseGptOptions options;
      options.pool = &pool;
      std::vector<float> threaded = w;
      auto t = sparsegpt_prune(threaded.data(), rows, cols, *prepared, pattern.is_n_m() ? 0.0 : 0.5, pattern, options);
      ASSERT_TRUE(t.is_ok());
      EXPECT_EQ(threaded, serial) << pattern.name() << ", " << threads << " threads";
      EXPECT_EQ(t->zeros, s->zeros);
      EXPECT_EQ(t->proxy_loss, s->proxy_loss);
    }
  }
}

TEST(CompressThreads, AwqDoesNotDependOnThreads) {
  std::mt19937 rng(13);
  const int64_t cols = 128;
  const std::vector<float> wq = gaussian_weights(45, cols, rng), wk = gaussian_weights(19, cols, rng);
  const AwqWeight weights[] = {{wq.data(), 45}, {wk.data(), 19}};
  // Fewer tokens than columns (the activations are the sketch) and more (a Cholesky sketch).
  for (int64_t tokens : {int64_t{96}, int64_t{400}}) {
    const std::vector<float> x = llm_activations(tokens, cols, 2, rng);
    AwqOptions options;
    options.alpha_grid = 5;
    options.clip_grid = 10;
    auto serial = awq_quantize(weights, cols, x.data(), tokens, QuantTarget::format(DType::Q4_0), options);
    ASSERT_TRUE(serial.is_ok());
    for (int threads : kThreadCounts) {
      ThreadPool pool(threads);
      options.pool = &pool;
      auto threaded = awq_quantize(weights, cols, x.data(), tokens, QuantTarget::format(DType::Q4_0), options);
      ASSERT_TRUE(threaded.is_ok());
      EXPECT_EQ(threaded->scales, serial->scales);
      EXPECT_EQ(threaded->error, serial->error);
      EXPECT_EQ(threaded->clipped, serial->clipped);
      ASSERT_EQ(threaded->quantized.size(), serial->quantized.size());
      for (size_t i = 0; i < serial->quantized.size(); ++i) EXPECT_EQ(threaded->quantized[i].data, serial->quantized[i].data);
      options.pool = nullptr;
    }
  }
}

}  // namespace
}  // namespace frugal::compress
