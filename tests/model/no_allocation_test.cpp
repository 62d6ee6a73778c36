// The decode loop allocates nothing: after a warm-up, evaluating a token (and sampling the next)
// makes no heap allocation on any thread. Counted by replacing the global operator new in this
// test binary.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "support/isa_scope.h"
#include "support/test_support.h"

namespace {
std::atomic<bool> counting{false};
std::atomic<int64_t> allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace frugal {
namespace {

TEST(DecodeLoop, AllocatesNothingAfterWarmUp) {
  const std::string path = testing::temp_dir() + "/tiny.gguf";
  testing::TinyModelOptions o;
  o.weight_type = DType::Q8_0;
  ASSERT_TRUE(testing::write_tiny_model(path, o).is_ok());
  auto model = Model::load(path);
  ASSERT_TRUE(model.is_ok());
  // On every ISA, so FRUGAL_ISA=scalar (the reference twins) keeps the promise too.
  for (Isa isa : testing::supported_isas()) {
    testing::ScopedIsa scoped(isa);
    TransformerOptions options;
    options.n_ctx = 256;
    options.n_threads = 2;
    Transformer transformer(model.value(), options);
    SamplerOptions sampling;
    sampling.repeat_penalty = 1.1f;
    Sampler sampler(sampling, static_cast<int32_t>(model.value()->config().n_vocab));
    const std::vector<int32_t> prompt = {10, 20, 30, 40};
    ASSERT_TRUE(transformer.evaluate(prompt.data(), 4).is_ok());
    int32_t token = sampler.sample(transformer.last_logits());
    for (int i = 0; i < 64; ++i) sampler.accept(token);  // fill the penalty window

    allocations = 0;
    counting = true;
    for (int i = 0; i < 200; ++i) {
      Status s = transformer.evaluate(&token, 1);
      if (!s.is_ok()) break;
      token = sampler.sample(transformer.last_logits());
      sampler.accept(token);
    }
    counting = false;
    EXPECT_EQ(allocations.load(), 0) << isa_name(isa);
    EXPECT_EQ(transformer.position(), 4 + 200);
  }
}

}  // namespace
}  // namespace frugal
