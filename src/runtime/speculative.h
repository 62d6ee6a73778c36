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

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
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
  // prepare(), also returning in `choices` the drafter's greedy choice after each of the context's
  // last `rows` tokens (what it would have drafted there), so that its agreement with the target
  // over the prompt can stand in for the acceptance before any draft is verified. Empty: no
  // choices (the default; n-gram lookup).
  virtual Status prepare_with_choices(std::span<const int32_t> context, int64_t rows, std::vector<int32_t>& choices) {
    (void)rows;
    choices.clear();
    return prepare(context);
  }
  // Drafting one token in the target's one-token decode steps, estimated before any draft is
  // timed (the cost model's prior for c); < 0: no estimate. A decode step reads every weight once,
  // so a model drafter estimates the ratio of the weight bytes it reads to the target's.
  virtual double estimated_cost(const Model& target) const {
    (void)target;
    return -1;
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
  // The target's pool, so that draft and target (which take turns) share the cores' workers
  // (TransformerOptions::shared_pool); null: an own pool of n_threads.
  ThreadPool* shared_pool = nullptr;
  int64_t n_ctx = 2048;
  // Stop drafting once the draft's top probability falls below this (0: never, llama.cpp's
  // default too). The cost model already sets the length from the measured acceptance; 0.5 cut the
  // drafts of a Q4_1 file for its F16 copy (acceptance 0.95) short and its 1.3-1.4x to ~1.0x.
  float p_min = 0.0f;
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

// The cost model of adaptive speculation (Leviathan et al. 2023, arXiv:2211.17192, §3.3-3.4): with
// per-token acceptance a (i.i.d. assumption), a draft of k tokens yields (1 - a^(k+1)) / (1 - a)
// tokens per step (their eq. 1), and costs k·c (c: drafting one token, in plain decode steps) plus
// V(k+1) (verifying k+1 tokens in one batched target forward, in plain decode steps). Leviathan et
// al. assume V ≈ 1, true of a bandwidth-bound target; a cache-resident or compute-bound one (as
// SmolLM2-135M on a CPU: its output head alone is 28M multiply-adds per row) pays noticeably per
// extra row, so V is measured, not assumed.
inline double expected_tokens_per_step(double acceptance, int k) {
  if (k <= 0) return 1.0;
  if (acceptance >= 1.0) return k + 1.0;
  return (1.0 - std::pow(acceptance, k + 1)) / (1.0 - acceptance);
}

// The decision: the k in 1..k_max maximising expected tokens per unit time,
//   S(k) = E(a, k) / (k·c + V(k+1)),   verify_cost[k] = V(k+1) (verify_cost[0] = 1: a plain step),
// or 0 (speculation off) when no k beats plain decoding by more than min_gain (S(k) <= min_gain).
// A drafter may propose nothing (no n-gram match, or a draft model below its confidence cut-off):
// with proposal rate r, a step yields r·E(a, k) + (1 - r) tokens in r·(k·c + V(k+1)) + (1 - r)·(c + 1)
// (an empty call still costs one draft step, then a plain step). A pure function of measured
// costs, acceptance and proposal rate. speedup (optional) receives S at the returned k (1 for k = 0).
int best_draft_length(double acceptance, double draft_cost, std::span<const double> verify_cost, int k_max,
                      double min_gain = 1.0, double* speedup = nullptr, double proposal_rate = 1.0);

// Online estimates for best_draft_length: the seconds of a plain step, of drafting per drafted
// token and of a verification per batch size (exponential moving averages, so a drifting load
// shifts them), and the acceptance a as decayed counts of accepted drafts over drafts tried up to
// and including the first rejection (the maximum-likelihood a of the i.i.d. model: a step that
// accepts m of k observes m successes and, if m < k, one failure).
class SpeculationCostModel {
 public:
  explicit SpeculationCostModel(int max_batch = 64);
  void observe_plain(double seconds);
  // Seconds spent drafting `drafted` tokens (a call that drafts nothing counts as one token's cost).
  void observe_draft(double seconds, int drafted);
  // Seconds of one target forward over n tokens keeping all logits (n >= 2).
  void observe_verify(int n, double seconds);
  // Decays the counts by kDecay per verification, then adds this one's (plain steps while
  // speculation is off do not age them: a failed probe leaves a low estimate low, and a probe
  // whose draft is accepted whole raises it at once).
  void observe_acceptance(int accepted, int drafted);
  // Before any verification: the drafter agreed with the target's greedy choice on this share of
  // the prompt's last tokens, counted as `trials` draft trials (decayed like the others).
  void observe_prompt_agreement(double agreement, double trials) {
    successes_ += agreement * trials;
    trials_ += trials;
  }
  // One draft call: did it propose at least one token (decayed by kDecay per call)?
  void observe_proposal(bool proposed);
  double proposal_rate() const { return (proposals_ + kPriorTrials) / (calls_ + kPriorTrials); }

  bool has_plain() const { return plain_ > 0 || assumed_c_ >= 0; }
  double plain_seconds() const { return plain_; }
  double draft_seconds() const { return draft_; }
  bool has_draft() const { return draft_ > 0 || assumed_c_ >= 0; }
  double acceptance() const;
  // An estimate of c used until a draft is measured (Drafter::estimated_cost); < 0: none.
  void set_prior_draft_cost(double c) { prior_c_ = c; }
  bool has_prior_draft_cost() const { return prior_c_ >= 0; }
  // c: drafting one token in plain steps (the prior, or 0, before a draft was measured).
  double draft_cost() const;
  // V(n) in plain steps: the measured average for n, else a line through (1, 1) fitted to the
  // measured batch sizes (a prior slope before any was measured).
  double verify_cost(int n) const;
  // Replaces the measured costs by fixed ones (c per drafted token, V(n) = 1 + slope (n - 1)):
  // for tests of the decisions that must not depend on a machine's timing.
  void assume_costs(double draft_cost, double verify_slope) {
    assumed_c_ = draft_cost;
    assumed_slope_ = verify_slope;
  }
  // best_draft_length over the current estimates.
  int decide(int k_max, double* speedup = nullptr) const;
  // Whether some k would pay if every draft were accepted (a = 1, every call proposing): false
  // means the drafter costs too much to ever win (c near or above a plain step), whatever it drafts.
  bool could_pay(int k_max) const;

  // Before any verification is measured: V(n) = 1 + kPriorSlope·(n - 1) (measured slopes: 0.04-0.17,
  // SmolLM2 Q4_1 and F16 targets, docs/SPECULATIVE.md).
  static constexpr double kPriorSlope = 0.1;
  // The weight (in trials) of the prior acceptance 0.5, and the decay of the counts per
  // verification (0.8: the last ~5 verifications dominate).
  static constexpr double kPriorTrials = 1.0, kDecay = 0.8;
  // Speculation must promise at least this speed-up to run (estimates are noisy; a 2% promised
  // gain is not worth the risk of a loss).
  static constexpr double kMinGain = 1.03;
  // The first measured V(n) is at most this times the prediction (observe_verify).
  static constexpr double kFirstSampleCap = 1.5;

 private:
  double plain_ = 0, draft_ = 0;
  std::vector<double> verify_;  // seconds by batch size, 0 = not measured
  double successes_ = 0, trials_ = 0;
  double proposals_ = 0, calls_ = 0;
  double assumed_c_ = -1, assumed_slope_ = -1;  // < 0: measured
  double prior_c_ = -1;
};

struct SpeculativeOptions {
  int draft_max = 8;
  // A verification row whose top two logits are closer than this is decided by the one-token
  // path instead. 0 (off): with batch-invariant kernels the rows already equal the one-token
  // path; a safeguard for a kernel that is not (see the header comment).
  float tie_margin = 0.0f;
  // Adaptive (the default): before every step the cost model (SpeculationCostModel) picks the
  // draft length that maximises expected tokens per second, or switches speculation off when no
  // length beats plain decoding; while off it probes with a short draft after `pause_tokens` plain
  // steps (doubling while probes keep losing, and spaced so a probe's measured extra cost stays
  // ~3% of the plain steps between probes), so a drafter that starts to pay comes back.
  // false: always draft_max tokens.
  bool adaptive = true;
  int pause_tokens = 8;
  // temperature > 0: speculative sampling (Leviathan et al. 2023, Algorithm 1; Chen et al. 2023)
  // with these samplers applied alike to the target's and the draft's logits, so the output
  // follows the distribution plain sampling with them draws from; the repetition penalty is not
  // supported (it must be 1). temperature <= 0 (the default): greedy.
  SamplerOptions sampling = {.temperature = 0.0f};
  // Tests: >= 0 fixes the cost model's draft cost c and verification slope instead of measuring
  // them (SpeculationCostModel::assume_costs), so its decisions depend on acceptance only.
  double assumed_draft_cost = -1, assumed_verify_slope = -1;
};

struct SpeculativeStats {
  int64_t verifications = 0;  // batched target forwards
  int64_t drafted = 0;        // draft tokens verified
  int64_t accepted = 0;       // draft tokens accepted
  int64_t emitted = 0;        // tokens produced (accepted + target's own)
  int64_t tie_fallbacks = 0;  // rows decided by the one-token path
  int64_t plain_steps = 0;    // one-token steps (no draft, paused, or tie)
  int64_t probes = 0;         // speculative steps taken while the cost model had speculation off
  int64_t switched_off = 0;   // times the cost model switched speculation off
  double prompt_agreement = -1;  // the drafter's agreement with the target over the prompt (< 0: not measured)
  double acceptance_rate() const { return drafted > 0 ? static_cast<double>(accepted) / drafted : 0.0; }
  // Mean accepted length: the accepted drafts plus the target's own token per verification (a
  // tie fallback's token comes from a plain step). (emitted - plain_steps counted the prompt's
  // first token too.)
  double tokens_per_verification() const {
    return verifications > 0 ? static_cast<double>(accepted + verifications - tie_fallbacks) / verifications : 0.0;
  }
};

// Draft length of the first adaptive steps (and after a pause); see probe_length().
inline constexpr int kProbeLength = 3;
// Draft length of a probe while the cost model has speculation off.
inline constexpr int kOffProbeLength = 2;
// Probes while off are spaced so their measured extra cost is about this share of the plain steps.
inline constexpr double kProbeBudget = 0.03;
// The longest pause between probes (plain steps): a drafter that cannot pay is still re-measured
// this often, should the load change.
inline constexpr int kMaxProbeSpacing = 1024;
// A model drafter's catch-up over skipped tokens, per token, as a share of its one-token draft
// cost c, until measured (a batch of 50 tokens ran at 0.15-0.2 of a one-token step per token:
// self:12 caught up on 54 tokens in 25-27 ms at 4 ms per plain step and c = 0.6).
inline constexpr double kCatchUpShare = 0.2;
// The prompt agreement (Drafter::prepare_with_choices) counts as this many draft trials, when
// measured over at least kMinAgreementRows tokens. The prompt is someone's text, the answer the
// target's own, which a draft usually predicts better: a cautious prior, soon outweighed.
inline constexpr double kAgreementTrials = 4;
inline constexpr int64_t kMinAgreementRows = 8;
// At most this many of the prompt's last tokens: each costs the draft an output-head row (49152
// x 576 multiply-adds for SmolLM2; 64 rows measured ~20 ms of prompt time and a 3-5% slower
// start of decoding, from the logits' 12 MB pushing the target's weights out of cache).
inline constexpr int64_t kAgreementRows = 16;
// Rows per verification and prompt chunk: the target keeps all logits of up to this many tokens.
inline constexpr int64_t kSpeculativeBatch = 64;

// Generation with a drafter, greedy or sampling (SpeculativeOptions::sampling). The target must keep all logits (TransformerOptions::all_logits)
// with n_batch == kSpeculativeBatch (drafts are at most kSpeculativeBatch - 1 tokens). Usage: start(prompt), then step() until done; each step emits >= 1 token.
class SpeculativeDecoder {
 public:
  SpeculativeDecoder(Transformer& target, Drafter* drafter, const SpeculativeOptions& options);

  // Evaluates the prompt and chooses the first token (the next step() emits it). The prefix the
  // prompt shares with the previous context, which the target's cache still holds, is reused (a
  // chat's next turn); a target whose cache was truncated meanwhile is simply re-fed.
  Status start(std::span<const int32_t> prompt);
  // Appends the next tokens (one or more) to `out` (not cleared).
  Status step(std::vector<int32_t>& out);
  // The prompt and every emitted token.
  const std::vector<int32_t>& context() const { return context_; }
  // Prompt tokens the last start() evaluated (the rest was cached from the previous context).
  int64_t prompt_evaluated() const { return prompt_evaluated_; }
  const Transformer& target() const { return target_; }
  std::string drafter_name() const { return drafter_ ? drafter_->name() : "none"; }
  const SpeculativeStats& stats() const { return stats_; }
  int current_draft_length() const { return draft_length_; }
  const SpeculationCostModel& costs() const { return costs_; }
  // The cost model's estimates in one line (milliseconds and ratios to a plain step).
  std::string describe_costs() const;

 private:
  Status plain_step(std::vector<int32_t>& out);
  // The next token from one row of logits: argmax, or a draw from the sampling distribution.
  int32_t choose(const float* logits);
  // The verification of batch_ (last token + k drafts) in sampling mode; returns the accepted count.
  int verify_sampled(int k, std::vector<int32_t>& out);
  void emit(int32_t token, std::vector<int32_t>& out);
  // The draft length speculation starts and restarts with.
  int probe_length() const;
  // Adaptive: the draft length of the next step from the cost model (0: a plain step).
  int next_draft_length();
  // Adaptive: after a speculative step, the cost model's new decision (and the probe schedule).
  // verified: the step verified a draft (false: the drafter proposed nothing).
  void adapt(double step_seconds, int emitted, bool verified);

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
  // Adaptation (see SpeculativeOptions::adaptive).
  SpeculationCostModel costs_;
  bool off_ = false;         // the cost model has speculation off
  bool probing_ = false;     // the current step is a probe while off
  int until_probe_ = 0;      // plain steps left before the next probe
  int failed_probes_ = 0;    // consecutive probes after which speculation stayed off
  // A model drafter catches up on the tokens it skipped while speculation was off before it can
  // draft again: that cost in plain steps per skipped token, measured at the last probe (< 0:
  // not yet), and the context length at the last draft call.
  double measured_catch_up_rate_ = -1;
  size_t last_draft_context_ = 0;
  std::vector<int32_t> drafter_choices_;  // Drafter::prepare_with_choices
  int64_t prompt_evaluated_ = 0;
  int64_t draft_calls_ = 0;  // since start()
  // The measured catch-up rate, else kCatchUpShare x c for a model drafter, 0 for a drafter with
  // no cache to keep (n-gram lookup) or with assumed costs.
  double catch_up_rate() const;
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

// One row of that rule, for a verifier that emits as it goes (frugal serve applies a request's
// penalties to row i + 1 only after row i's token is emitted): with a draft (drawn from q; q empty:
// a point mass) the draft is accepted with probability min(1, p[d] / q[d]) or a token drawn from
// norm(max(0, p - q)) replaces it; without one (the bonus row) the token is drawn from p.
struct SpeculativeRowResult {
  int32_t token = -1;
  bool accepted = false;  // the draft was kept (verification goes on to the next row)
};
SpeculativeRowResult speculative_sample_row(const std::vector<double>& p, std::span<const double> q,
                                            std::optional<int32_t> draft, std::mt19937_64& rng);

}  // namespace frugal
