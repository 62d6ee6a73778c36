// compare_last_logits_with_llama (see logits_parity.h).
#include "support/logits_parity.h"

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

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

}  // namespace

LogitComparison compare_last_logits_with_llama(const std::shared_ptr<const Model>& model, const std::string& prompt) {
  LogitComparison c;
  const auto ids = model->tokenizer().encode(prompt, true, true);
  std::string list;
  for (size_t i = 0; i < ids.size(); ++i) list += (i ? "," : "") + std::to_string(ids[i]);
  const auto r = run_command(shell_quote(peer_tool("llama-logits")) + " " + shell_quote(model->file().path()) + " " + list);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<float> peer;
  std::istringstream in(r.out);
  for (float v; in >> v;) peer.push_back(v);
  const int64_t vocab = model->config().n_vocab;
  EXPECT_EQ(static_cast<int64_t>(peer.size()), vocab);
  if (r.exit_code != 0 || static_cast<int64_t>(peer.size()) != vocab) return c;

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
  for (int64_t v = 0; v < vocab; ++v) {
    c.max_abs_difference = std::max(c.max_abs_difference, std::fabs(ours[v] - peer[v] - c.mean_shift));
  }
  const auto lp_peer = log_softmax(peer.data(), vocab), lp_ours = log_softmax(ours, vocab);
  for (int64_t v = 0; v < vocab; ++v) c.kl += std::exp(lp_peer[v]) * (lp_peer[v] - lp_ours[v]);
  std::printf("%-48.48s max |dlogit| %.4f (mean shift %+.4f), KL %.6f, top %lld/%lld\n", prompt.c_str(), c.max_abs_difference,
              c.mean_shift, c.kl, static_cast<long long>(c.our_top), static_cast<long long>(c.peer_top));
  return c;
}

}  // namespace frugal::testing
