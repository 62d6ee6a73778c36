// Exact speculative decoding (Leviathan et al. 2023, arXiv:2211.17192; Chen et al. 2023,
// arXiv:2302.01318): a cheap drafter proposes k tokens, the target evaluates [last, d1..dk] in one
// batched forward, keeps (greedy) the longest draft prefix equal to its own argmax plus one token
// of its own, or (sampling) what the rejection rule accepts plus one drawn token, and rolls its KV
// cache back over the rejected positions. Drafters: a draft model with the
// same vocabulary (also the target compressed by frugal), the target itself exiting early after a
// few layers, and prompt lookup (n-gram matches in the context, Saxena 2023, no model at all).
//
// Exactness. The batched verification rows are bit-identical to the one-token path plain greedy
// decoding uses: every matmul kernel is batch-invariant (kernels/matmul_simd.h: each token of a
// batch gets the activation quantization and the summation order of a token alone; attention and
// norms are per row), tested per format and ISA in tests/unit/batch_invariance_test.cpp and on
// SmolLM2-135M Q4_1 in tests/real/speculative_test.cpp. So the verifier's argmaxes are plain
// greedy's, the output is token-for-token plain greedy's for every drafter and draft length, and
// after a rollback the KV cache holds the bytes plain decoding wrote. (Before the kernels were made
// batch-invariant, rows differed by up to 0.9 logits on that model; a `tie_margin` workaround
// decided near-ties with the one-token path. It is kept as an off-by-default safeguard.)
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/model.h"
#include "model/transformer.h"
#include "runtime/sampler.h"

namespace frugal {

// Proposes tokens to follow a context. A drafter may keep state (a KV cache) between calls; it is
// told the whole context each time and resynchronises on the common prefix.
class Drafter {
 public:
  virtual ~Drafter() = default;
  virtual std::string name() const = 0;
  // Appends up to max_tokens proposed tokens to `out` (cleared first); fewer, or none, when unsure.
  virtual Status draft(std::span<const int32_t> context, int max_tokens, std::vector<int32_t>& out) = 0;
  // Called once with the prompt before generation (a model drafter evaluates it then).
  virtual Status prepare(std::span<const int32_t> context) {
    (void)context;
    return Status::ok();
  }
  // Speculative sampling: tokens drawn from the drafter's own next-token distribution after
  // `sampling`'s samplers (sampling_distribution below), with that distribution of each drafted
  // token in q (n_vocab entries). A drafter without a distribution (n-gram lookup) proposes
  // deterministic tokens and leaves q empty: point masses at the drafts, which the rejection rule
  // handles as well (accept with probability p(d), else draw from p without d).
  virtual Status draft_sampled(std::span<const int32_t> context, int max_tokens, const SamplerOptions& sampling,
                               std::mt19937_64& rng, std::vector<int32_t>& out, std::vector<std::vector<double>>& q) {
    (void)sampling;
    (void)rng;
    q.clear();
    return draft(context, max_tokens, out);
  }
};

struct ModelDrafterOptions {
  int n_threads = 2;
  int64_t n_ctx = 2048;
  // Stop drafting once the draft's top probability falls below this (0: never).
  float p_min = 0.5f;
  // > 0: run only this many blocks of the draft model (early-exit self-draft).
  int64_t exit_layer = 0;
};

// The same vocabulary: same token count and the same piece for every token; otherwise an error
// naming the first difference.
Status check_same_vocabulary(const Model& target, const Model& draft);

// A draft model (which may be the target itself with exit_layer set). Checks the vocabulary.
Result<std::unique_ptr<Drafter>> make_model_drafter(std::shared_ptr<const Model> draft, const Model& target,
                                                    const ModelDrafterOptions& options);

struct NgramDrafterOptions {
  int max_ngram = 4;  // longest suffix searched for
  int min_ngram = 2;  // shortest (1 proposes too often on open text)
};
// Prompt lookup: the latest earlier occurrence of the context's last n tokens (longest n first);
// proposes the tokens that followed it.
std::unique_ptr<Drafter> make_ngram_drafter(const NgramDrafterOptions& options);

struct SpeculativeOptions {
  int draft_max = 8;
  // A verification row whose top two logits are closer than this is decided by the one-token
  // path instead. 0 (off): with batch-invariant kernels the rows already equal the one-token
  // path; a safeguard for a kernel that is not (see the header comment).
  float tie_margin = 0.0f;
  // Adaptive length and switch-off: the draft length follows the measured accepted length, and
  // speculation pauses for `pause_tokens` plain steps when its measured time per token exceeds
  // plain decoding's.
  bool adaptive = true;
  int pause_tokens = 16;
  // temperature > 0: speculative sampling (Leviathan et al. 2023, Algorithm 1; Chen et al. 2023)
  // with these samplers applied alike to the target's and the draft's logits, so the output
  // follows the distribution plain sampling with them draws from; the repetition penalty is not
  // supported (it must be 1). temperature <= 0 (the default): greedy.
  SamplerOptions sampling = {.temperature = 0.0f};
};

struct SpeculativeStats {
  int64_t verifications = 0;  // batched target forwards
  int64_t drafted = 0;        // draft tokens verified
  int64_t accepted = 0;       // draft tokens accepted
  int64_t emitted = 0;        // tokens produced (accepted + target's own)
  int64_t tie_fallbacks = 0;  // rows decided by the one-token path
  int64_t plain_steps = 0;    // one-token steps (no draft, paused, or tie)
  double acceptance_rate() const { return drafted > 0 ? static_cast<double>(accepted) / drafted : 0.0; }
  double tokens_per_verification() const {
    return verifications > 0 ? static_cast<double>(emitted - plain_steps) / verifications : 0.0;
  }
};

// Draft length of the first adaptive steps (and after a pause); see probe_length().
inline constexpr int kProbeLength = 3;
// Rows per verification and prompt chunk: the target keeps all logits of up to this many tokens.
inline constexpr int64_t kSpeculativeBatch = 64;

// Generation with a drafter, greedy or sampling (SpeculativeOptions::sampling). The target must keep all logits (TransformerOptions::all_logits)
// with n_batch == kSpeculativeBatch (drafts are at most kSpeculativeBatch - 1 tokens). Usage: start(prompt), then step() until done; each step emits >= 1 token.
class SpeculativeDecoder {
 public:
  SpeculativeDecoder(Transformer& target, Drafter* drafter, const SpeculativeOptions& options);

  // Clears the target's cache and evaluates the prompt (all but its last token).
  Status start(std::span<const int32_t> prompt);
  // Appends the next tokens (one or more) to `out` (not cleared).
  Status step(std::vector<int32_t>& out);
  // The prompt and every emitted token.
  const std::vector<int32_t>& context() const { return context_; }
  const SpeculativeStats& stats() const { return stats_; }
  int current_draft_length() const { return draft_length_; }

 private:
  Status plain_step(std::vector<int32_t>& out);
  // The next token from one row of logits: argmax, or a draw from the sampling distribution.
  int32_t choose(const float* logits);
  // The verification of batch_ (last token + k drafts) in sampling mode; returns the accepted count.
  int verify_sampled(int k, std::vector<int32_t>& out);
  void emit(int32_t token, std::vector<int32_t>& out);
  // The draft length speculation starts and restarts with.
  int probe_length() const;
  // Feeds one speculative step's time and emitted tokens to the switch-off rule.
  void adapt(double seconds, int emitted);

  Transformer& target_;
  Drafter* drafter_;
  SpeculativeOptions options_;
  SpeculativeStats stats_;
  std::vector<int32_t> context_;  // the target's cache holds all but the last
  std::vector<int32_t> batch_, draft_;
  bool sampling_ = false;
  std::mt19937_64 rng_;
  std::vector<std::vector<double>> p_rows_, q_rows_;
  int draft_length_;
  // Adaptation: exponential moving averages of seconds per emitted token.
  double plain_seconds_ = 0, speculative_seconds_ = 0;
  int speculative_samples_ = 0;
  int paused_ = 0;
  int pause_length_ = 16;
  bool first_pending_ = false;
};

// Plain greedy decoding with the one-token path (the reference speculative decoding must match):
// the prompt (in chunks of kSpeculativeBatch), then n tokens each from evaluate(previous, 1).
// Returns the prompt followed by the n tokens.
// decode_seconds (optional): time spent after the prompt.
Result<std::vector<int32_t>> greedy_reference(Transformer& target, std::span<const int32_t> prompt, int64_t n,
                                              double* decode_seconds = nullptr);

// Index of the largest logit (lowest index on ties) and its margin over the runner-up.
int32_t argmax_with_margin(const float* logits, int64_t n, float* margin);

}  // namespace frugal

namespace frugal {

// Speculative sampling (Leviathan et al. 2023, Algorithm 1; Chen et al. 2023): the target's and
// the draft's next-token distributions p and q after the same samplers; SpeculativeDecoder uses
// them when SpeculativeOptions::sampling has temperature > 0.

// The sampling distribution Sampler draws from (top-k, top-p, min-p, then temperature; no
// repetition penalty), as n_vocab probabilities (zero outside the kept set). temperature must be > 0.
void sampling_distribution(const float* logits, int64_t n_vocab, const SamplerOptions& options, std::vector<double>& out);

// One verification with the rejection rule: draft i (drawn from q[i]) is accepted with
// probability min(1, p[i][d] / q[i][d]); at the first rejection a token is drawn from
// norm(max(0, p[i] - q[i])) and the step ends; when all k are accepted one bonus token is drawn
// from p[k]. p has k + 1 rows, q has k, or none: deterministic drafts (point masses). Returns the
// emitted tokens (accepted drafts + one more).
std::vector<int32_t> speculative_sample(std::span<const std::vector<double>> p, std::span<const std::vector<double>> q,
                                        std::span<const int32_t> drafts, std::mt19937_64& rng);

}  // namespace frugal
