// compare_last_logits_with_llama (see logits_parity.h).
#include "support/logits_parity.h"

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <tuple>

#include "support/test_support.h"

namespace frugal::testing {
namespace {

std::vector<double> log_softmax(const float* logits, int64_t n) {
  double max = logits[0], sum = 0;
  for (int64_t v = 1; v < n; ++v) max = std::max(max, static_cast<double>(logits[v]));
  for (int64_t v = 0; v < n; ++v) sum += std::exp(logits[v] - max);
  std::vector<double> out(n);
  for (int64_t v = 0; v < n; ++v) out[v] = logits[v] - max - std::log(sum);
  return out;
}


// Logits from the peer tool; `flash_attention` selects llama.cpp's attention path.
std::vector<float> peer_logits(const std::string& model_path, const std::string& ids, bool flash_attention) {
  const auto r = run_command(std::string(flash_attention ? "" : "FRUGAL_PEER_FLASH_ATTN=0 ") + shell_quote(peer_tool("llama-logits")) +
                             " " + shell_quote(model_path) + " " + ids);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<float> out;
  std::istringstream in(r.out);
  for (float v; in >> v;) out.push_back(v);
  return out;
}

// (KL(reference || other), max |difference - mean difference|).
std::pair<double, double> divergence(const float* reference, const float* other, int64_t vocab) {
  double shift = 0, max = 0, kl = 0;
  for (int64_t v = 0; v < vocab; ++v) shift += (other[v] - reference[v]) / static_cast<double>(vocab);
  for (int64_t v = 0; v < vocab; ++v) max = std::max(max, std::fabs(other[v] - reference[v] - shift));
  const auto lp_ref = log_softmax(reference, vocab), lp_other = log_softmax(other, vocab);
  for (int64_t v = 0; v < vocab; ++v) kl += std::exp(lp_ref[v]) * (lp_ref[v] - lp_other[v]);
  return {kl, max};
}

}  // namespace

LogitComparison compare_last_logits_with_llama(const std::shared_ptr<const Model>& model, const std::string& prompt) {
  LogitComparison c;
  const auto ids = model->tokenizer().encode(prompt, true, true);
  std::string list;
  for (size_t i = 0; i < ids.size(); ++i) list += (i ? "," : "") + std::to_string(ids[i]);
  const int64_t vocab = model->config().n_vocab;
  const std::vector<float> peer = peer_logits(model->file().path(), list, true);
  const std::vector<float> peer_plain = peer_logits(model->file().path(), list, false);
  EXPECT_EQ(static_cast<int64_t>(peer.size()), vocab);
  EXPECT_EQ(static_cast<int64_t>(peer_plain.size()), vocab);
  if (static_cast<int64_t>(peer.size()) != vocab || static_cast<int64_t>(peer_plain.size()) != vocab) return c;
  std::tie(c.peer_noise_kl, c.peer_noise_max_abs_difference) = divergence(peer.data(), peer_plain.data(), vocab);

  TransformerOptions options;
  options.n_ctx = std::max<int64_t>(64, static_cast<int64_t>(ids.size()) + 1);
  options.n_threads = 2;
  Transformer transformer(model, options);
  Status s = transformer.evaluate(ids.data(), static_cast<int64_t>(ids.size()));
  EXPECT_TRUE(s.is_ok()) << s.message();
  if (!s.is_ok()) return c;
  const float* ours = transformer.last_logits();
  c.our_top = c.peer_top = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    c.mean_shift += (ours[v] - peer[v]) / static_cast<double>(vocab);
    if (ours[v] > ours[c.our_top]) c.our_top = v;
    if (peer[v] > peer[c.peer_top]) c.peer_top = v;
  }
  c.peer_top_margin = peer[c.peer_top] - peer[c.our_top];
  std::tie(c.kl, c.max_abs_difference) = divergence(peer.data(), ours, vocab);
  std::printf("%-40.40s frugal vs llama.cpp: max |dlogit| %.4f (shift %+.4f), KL %.6f, top %lld/%lld (margin %.4f) | "
              "llama.cpp fa vs no-fa: max %.4f, KL %.6f\n",
              prompt.c_str(), c.max_abs_difference, c.mean_shift, c.kl, static_cast<long long>(c.our_top),
              static_cast<long long>(c.peer_top), c.peer_top_margin, c.peer_noise_max_abs_difference, c.peer_noise_kl);
  return c;
}

void expect_logits_match_llama(const std::shared_ptr<const Model>& model, const std::vector<std::string>& prompts) {
  // The floor is the largest over the prompts: 8-bit activation rounding makes a single prompt
  // flip between closer and less close for perturbations far below any bug's size.
  std::vector<LogitComparison> results;
  double noise_kl = 0, noise_max = 0;
  for (const auto& prompt : prompts) {
    results.push_back(compare_last_logits_with_llama(model, prompt));
    noise_kl = std::max(noise_kl, results.back().peer_noise_kl);
    noise_max = std::max(noise_max, results.back().peer_noise_max_abs_difference);
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    const LogitComparison& c = results[i];
    EXPECT_LT(c.kl, std::max(0.01, 2.0 * noise_kl)) << prompts[i];
    EXPECT_LT(c.max_abs_difference, std::max(1.0, 2.0 * noise_max)) << prompts[i];
    // The same top token, unless the two are tied within llama.cpp's own rounding noise (its two
    // attention paths differ by noise_max on the same prompt): then either answer is right.
    if (c.our_top != c.peer_top) {
      EXPECT_LT(c.peer_top_margin, noise_max) << prompts[i] << ": top token " << c.our_top << " vs llama.cpp's "
                                              << c.peer_top << ", which leads ours by " << c.peer_top_margin;
    }
  }
}

}  // namespace frugal::testing
