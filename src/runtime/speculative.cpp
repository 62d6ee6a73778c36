// Speculative decoding (see speculative.h): the drafters, the verifier with KV-cache rollback (and
// the optional one-token fallback on near-ties), and the adaptive draft length / switch-off.
#include "runtime/speculative.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "base/timer.h"

namespace frugal {

int32_t argmax_with_margin(const float* logits, int64_t n, float* margin) {
  int32_t best = 0;
  float top = logits[0], second = -INFINITY;
  for (int64_t i = 1; i < n; ++i) {
    if (logits[i] > top) {
      second = top;
      top = logits[i];
      best = static_cast<int32_t>(i);
    } else if (logits[i] > second) {
      second = logits[i];
    }
  }
  if (margin) *margin = top - second;
  return best;
}

namespace {

// A draw from unnormalized probabilities (zeros are never drawn).
int32_t draw_from(const std::vector<double>& probabilities, std::mt19937_64& rng) {
  double total = 0;
  for (double x : probabilities) total += x;
  double r = std::uniform_real_distribution<double>(0.0, total)(rng);
  int32_t last = 0;
  for (size_t i = 0; i < probabilities.size(); ++i) {
    if (probabilities[i] <= 0) continue;
    last = static_cast<int32_t>(i);
    r -= probabilities[i];
    if (r < 0) return last;
  }
  return last;
}

// Evaluates tokens in calls of at most n_batch (a target keeping all logits takes no more).
Status evaluate_chunked(Transformer& t, std::span<const int32_t> tokens, int64_t n_batch) {
  for (size_t start = 0; start < tokens.size(); start += static_cast<size_t>(n_batch)) {
    const int64_t count = std::min<int64_t>(n_batch, static_cast<int64_t>(tokens.size() - start));
    FRUGAL_RETURN_IF_ERROR(t.evaluate(tokens.data() + start, count));
  }
  return Status::ok();
}

// Bytes of the weights one decoded token reads: the first `layers` blocks' matrices and the
// output head (the embedding lookup reads one row).
double decode_weight_bytes(const Model& model, int64_t layers) {
  auto bytes = [](const WeightMatrix& w) { return static_cast<double>(w.rows) * static_cast<double>(w.row_bytes); };
  double total = bytes(model.output());
  for (int64_t l = 0; l < layers && l < static_cast<int64_t>(model.layers().size()); ++l) {
    const LayerWeights& lw = model.layers()[static_cast<size_t>(l)];
    for (const WeightMatrix* w : {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down}) total += bytes(*w);
  }
  return total;
}

class ModelDrafter final : public Drafter {
 public:
  ModelDrafter(std::shared_ptr<const Model> model, const ModelDrafterOptions& options)
      : options_(options), transformer_(std::move(model), transformer_options(options)) {}

  std::string name() const override { return options_.exit_layer > 0 ? "self-draft" : "draft model"; }

  Status draft(std::span<const int32_t> context, int max_tokens, std::vector<int32_t>& out) override {
    return run(context, max_tokens, nullptr, nullptr, out, nullptr);
  }

  Status prepare(std::span<const int32_t> context) override { return sync(context); }

  Status prepare_with_choices(std::span<const int32_t> context, int64_t rows, std::vector<int32_t>& choices) override {
    choices.clear();
    const int64_t size = static_cast<int64_t>(context.size());
    rows = std::min({rows, size - 1, kAgreementRows});
    if (rows <= 0 || size >= transformer_.context_size()) return sync(context);
    FRUGAL_RETURN_IF_ERROR(sync(context.first(static_cast<size_t>(size - rows))));
    FRUGAL_RETURN_IF_ERROR(transformer_.evaluate_keeping_logits(context.data() + size - rows, rows));
    history_.insert(history_.end(), context.end() - rows, context.end());
    const int64_t vocab = transformer_.model().config().n_vocab;
    for (int64_t i = 0; i < rows; ++i) choices.push_back(argmax_with_margin(transformer_.logits(i), vocab, nullptr));
    return Status::ok();
  }

  double estimated_cost(const Model& target) const override {
    const double target_bytes = decode_weight_bytes(target, target.config().n_layer);
    const Model& draft = transformer_.model();
    const int64_t layers = options_.exit_layer > 0 ? std::min(options_.exit_layer, draft.config().n_layer) : draft.config().n_layer;
    return target_bytes > 0 ? decode_weight_bytes(draft, layers) / target_bytes : -1;
  }

  Status draft_sampled(std::span<const int32_t> context, int max_tokens, const SamplerOptions& sampling, std::mt19937_64& rng,
                       std::vector<int32_t>& out, std::vector<std::vector<double>>& q) override {
    return run(context, max_tokens, &sampling, &rng, out, &q);
  }

 private:
  // Greedy drafts (sampling null) or drafts drawn from the sampling distribution, recorded in q.
  Status run(std::span<const int32_t> context, int max_tokens, const SamplerOptions* sampling, std::mt19937_64* rng,
             std::vector<int32_t>& out, std::vector<std::vector<double>>* q) {
    out.clear();
    if (q) q->clear();
    if (context.empty() || max_tokens <= 0) return Status::ok();
    if (static_cast<int64_t>(context.size()) >= transformer_.context_size()) return Status::ok();
    FRUGAL_RETURN_IF_ERROR(sync(context));
    const int64_t vocab = transformer_.model().config().n_vocab;
    for (int i = 0; i < max_tokens; ++i) {
      const float* logits = transformer_.last_logits();
      int32_t token;
      if (sampling) {
        // Drawn from q, the distribution the verifier's rejection rule is told about. Stopping
        // on the draft's own confidence keeps the rule exact: it depends on nothing the target says.
        std::vector<double>& row = q->emplace_back();
        sampling_distribution(logits, vocab, *sampling, row);
        if (options_.p_min > 0 && *std::max_element(row.begin(), row.end()) < options_.p_min) {
          q->pop_back();
          break;
        }
        token = draw_from(row, *rng);
      } else {
        token = argmax_with_margin(logits, vocab, nullptr);
        if (options_.p_min > 0) {
          // Top probability of the softmax: 1 / sum exp(l - max) (Leviathan et al.'s draft confidence
          // cut-off, as llama.cpp's --draft-p-min).
          const float top = logits[token];
          double sum = 0;
          for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(logits[v] - top));
          if (1.0 / sum < options_.p_min) break;
        }
      }
      out.push_back(token);
      if (i + 1 == max_tokens || transformer_.position() + 1 >= transformer_.context_size()) break;
      FRUGAL_RETURN_IF_ERROR(transformer_.evaluate(&token, 1));
      history_.push_back(token);
    }
    return Status::ok();
  }

  // Resynchronises the draft's cache with `context`: keeps the common prefix, evaluates the rest
  // (at least one token, for logits).
  Status sync(std::span<const int32_t> context) {
    if (context.empty() || static_cast<int64_t>(context.size()) >= transformer_.context_size()) return Status::ok();
    size_t common = 0;
    while (common < history_.size() && common < context.size() && history_[common] == context[common]) ++common;
    if (common == context.size()) --common;
    transformer_.truncate(static_cast<int64_t>(common));
    history_.assign(context.begin(), context.begin() + static_cast<int64_t>(common));
    FRUGAL_RETURN_IF_ERROR(transformer_.evaluate(context.data() + common, static_cast<int64_t>(context.size() - common)));
    history_.insert(history_.end(), context.begin() + static_cast<int64_t>(common), context.end());
    return Status::ok();
  }

  static TransformerOptions transformer_options(const ModelDrafterOptions& o) {
    TransformerOptions t;
    t.n_ctx = o.n_ctx;
    t.n_batch = std::min<int64_t>(512, o.n_ctx);
    t.n_threads = o.n_threads;
    t.shared_pool = o.shared_pool;
    t.kept_logit_rows = kAgreementRows;  // prepare_with_choices (a drafter per serve sequence: keep it small)
    t.exit_layer = o.exit_layer;
    return t;
  }

  ModelDrafterOptions options_;
  Transformer transformer_;
  std::vector<int32_t> history_;  // tokens in the draft's cache
};

class NgramDrafter final : public Drafter {
 public:
  explicit NgramDrafter(const NgramDrafterOptions& options) : options_(options) {}
  std::string name() const override { return "n-gram lookup"; }

  Status draft(std::span<const int32_t> context, int max_tokens, std::vector<int32_t>& out) override {
    out.clear();
    const int64_t size = static_cast<int64_t>(context.size());
    for (int n = options_.max_ngram; n >= std::max(1, options_.min_ngram); --n) {
      if (size < n + 1) continue;
      const int32_t* suffix = context.data() + size - n;
      // Latest earlier occurrence: recent text predicts the continuation best.
      for (int64_t s = size - n - 1; s >= 0; --s) {
        if (!std::equal(suffix, suffix + n, context.data() + s)) continue;
        for (int64_t i = s + n; i < size && static_cast<int>(out.size()) < max_tokens; ++i) out.push_back(context[i]);
        return Status::ok();
      }
    }
    return Status::ok();
  }

 private:
  NgramDrafterOptions options_;
};

}  // namespace

Status check_same_vocabulary(const Model& target, const Model& draft) {
  const auto& a = target.tokenizer().vocab().tokens;
  const auto& b = draft.tokenizer().vocab().tokens;
  if (target.config().n_vocab != draft.config().n_vocab || a.size() != b.size()) {
    return Status::error("the draft model's vocabulary has " + std::to_string(draft.config().n_vocab) + " tokens, the target's " +
                         std::to_string(target.config().n_vocab) + ": a draft must share the target's vocabulary");
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) {
      return Status::error("the draft model's vocabulary differs from the target's at token " + std::to_string(i) + " ('" + b[i] +
                           "' vs '" + a[i] + "'): a draft must share the target's vocabulary");
    }
  }
  return Status::ok();
}

Result<std::unique_ptr<Drafter>> make_model_drafter(std::shared_ptr<const Model> draft, const Model& target,
                                                    const ModelDrafterOptions& options) {
  FRUGAL_RETURN_IF_ERROR(check_same_vocabulary(target, *draft));
  if (options.exit_layer < 0 || options.exit_layer > draft->config().n_layer) {
    return Status::error("self-draft exit layer " + std::to_string(options.exit_layer) + " is outside 1.." +
                         std::to_string(draft->config().n_layer));
  }
  return std::unique_ptr<Drafter>(new ModelDrafter(std::move(draft), options));
}

std::unique_ptr<Drafter> make_ngram_drafter(const NgramDrafterOptions& options) {
  return std::make_unique<NgramDrafter>(options);
}

SpeculativeDecoder::SpeculativeDecoder(Transformer& target, Drafter* drafter, const SpeculativeOptions& options)
    : target_(target),
      drafter_(drafter),
      options_(options),
      sampling_(options.sampling.temperature > 0),
      rng_(options.sampling.seed),
      draft_length_(std::clamp(options.draft_max, 1, static_cast<int>(kSpeculativeBatch - 1))),
      costs_(static_cast<int>(kSpeculativeBatch)) {
  options_.draft_max = draft_length_;
  draft_length_ = probe_length();
}

int SpeculativeDecoder::probe_length() const {
  // Adaptive: the first speculative step (which measures the drafter's cost) drafts few tokens, so
  // a drafter that proposes nothing useful costs one cheap probe, not a draft_max-token one.
  return options_.adaptive ? std::min(options_.draft_max, kProbeLength) : options_.draft_max;
}

int32_t SpeculativeDecoder::choose(const float* logits) {
  const int64_t vocab = target_.model().config().n_vocab;
  if (!sampling_) return argmax_with_margin(logits, vocab, nullptr);
  std::vector<double>& p = p_rows_.empty() ? p_rows_.emplace_back() : p_rows_[0];
  sampling_distribution(logits, vocab, options_.sampling, p);
  return draw_from(p, rng_);
}

Status SpeculativeDecoder::start(std::span<const int32_t> prompt) {
  if (prompt.empty()) return Status::error("speculative decoding needs a prompt of at least one token");
  if (sampling_ && options_.sampling.repeat_penalty != 1.0f) {
    return Status::error("speculative sampling does not support a repetition penalty (it must be 1)");
  }
  stats_ = {};
  costs_ = SpeculationCostModel(static_cast<int>(kSpeculativeBatch));
  if (options_.assumed_draft_cost >= 0 && options_.assumed_verify_slope >= 0) {
    costs_.assume_costs(options_.assumed_draft_cost, options_.assumed_verify_slope);
  }
  off_ = probing_ = false;
  until_probe_ = failed_probes_ = 0;
  draft_length_ = probe_length();
  // The target's cache holds context_ minus its last token: a prompt that extends what it holds
  // (a chat's next turn) reuses that prefix; at least one token is evaluated, for its logits.
  size_t common = 0;
  const size_t cached = std::min(static_cast<size_t>(target_.position()), context_.empty() ? size_t{0} : context_.size() - 1);
  while (common < cached && common < prompt.size() && context_[common] == prompt[common]) ++common;
  if (common == prompt.size()) --common;
  target_.truncate(static_cast<int64_t>(common));
  context_.assign(prompt.begin(), prompt.end());
  // As plain decoding: the prompt, then the first token from its last row.
  FRUGAL_RETURN_IF_ERROR(evaluate_chunked(target_, prompt.subspan(common), kSpeculativeBatch));
  prompt_evaluated_ = static_cast<int64_t>(prompt.size() - common);
  // A model drafter reads the prompt now, as the target does (prompt time, not generation time).
  measured_catch_up_rate_ = -1;
  draft_calls_ = 0;
  last_draft_context_ = prompt.size();  // the drafter reads the prompt below
  if (drafter_ && options_.adaptive) {
    costs_.set_prior_draft_cost(drafter_->estimated_cost(target_.model()));
    if (costs_.has_prior_draft_cost() && !costs_.could_pay(options_.draft_max)) {
      // A drafter that reads about as many weight bytes as the target (a same-size copy) cannot
      // win even if every draft were accepted: it does not read the prompt either (time to the
      // first token), and is first probed after kMaxProbeSpacing tokens.
      off_ = true;
      ++stats_.switched_off;
      until_probe_ = kMaxProbeSpacing;
    }
  }
  if (drafter_ && !off_) {
    // The target kept the logits of the prompt's last chunk: its choices there, against the
    // drafter's, give a first acceptance estimate.
    const int64_t last_chunk = (prompt_evaluated_ - 1) % kSpeculativeBatch + 1;
    FRUGAL_RETURN_IF_ERROR(drafter_->prepare_with_choices(prompt, std::min(last_chunk, kAgreementRows), drafter_choices_));
    const int64_t rows = static_cast<int64_t>(drafter_choices_.size());
    if (rows >= kMinAgreementRows && rows <= last_chunk) {
      const int64_t vocab = target_.model().config().n_vocab;
      int64_t agree = 0;
      for (int64_t i = 0; i < rows; ++i) {
        agree += argmax_with_margin(target_.logits(last_chunk - rows + i), vocab, nullptr) == drafter_choices_[static_cast<size_t>(i)];
      }
      stats_.prompt_agreement = static_cast<double>(agree) / static_cast<double>(rows);
      if (options_.assumed_draft_cost < 0) costs_.observe_prompt_agreement(stats_.prompt_agreement, kAgreementTrials);
    }
  }
  // Batch-invariant kernels: the last row of the prompt's last chunk has the logits plain
  // decoding's one-row output head computes, bit for bit.
  const int64_t last_row = (prompt_evaluated_ - 1) % kSpeculativeBatch;
  const int32_t first = choose(target_.logits(last_row));
  first_pending_ = true;
  context_.push_back(first);
  return Status::ok();
}

void SpeculativeDecoder::emit(int32_t token, std::vector<int32_t>& out) {
  context_.push_back(token);
  out.push_back(token);
  ++stats_.emitted;
}

Status SpeculativeDecoder::plain_step(std::vector<int32_t>& out) {
  const int32_t last = context_.back();
  FRUGAL_RETURN_IF_ERROR(target_.evaluate(&last, 1));
  emit(choose(target_.last_logits()), out);
  return Status::ok();
}

Status SpeculativeDecoder::step(std::vector<int32_t>& out) {
  if (context_.empty()) return Status::error("speculative decoding: step() before start()");
  if (first_pending_) {
    // The token the prompt's last row chose.
    first_pending_ = false;
    out.push_back(context_.back());
    ++stats_.emitted;
    return Status::ok();
  }
  const int64_t vocab = target_.model().config().n_vocab;
  const int64_t pos0 = target_.position();  // holds context_ minus its last token
  const int64_t room = std::min<int64_t>(target_.context_size() - pos0 - 1, kSpeculativeBatch - 1);
  Timer timer;
  int k = std::min<int>(options_.adaptive ? next_draft_length() : draft_length_, static_cast<int>(room));
  if (drafter_ == nullptr || k <= 0) {
    // Plain step: speculation off, or plain decoding's speed not measured yet.
    ++stats_.plain_steps;
    FRUGAL_RETURN_IF_ERROR(plain_step(out));
    // The first step after the prompt (and the draft's prompt) runs on cold caches: 11 -> 17 ms
    // on an F16 SmolLM2 with a draft model, a unit that then skewed every ratio for the whole
    // answer (speculation on, plain steps are rare). It is not counted; the second one is.
    if (stats_.plain_steps > 1 || !drafter_) costs_.observe_plain(timer.seconds());
    return Status::ok();
  }
  if (probing_) {
    // A probe after a plain stretch: a model drafter first catches up on the tokens it missed.
    // That is the probe's cost (timer: it spaces the probes), not drafting's per-token cost c.
    Timer catch_up_timer;
    FRUGAL_RETURN_IF_ERROR(drafter_->prepare(std::span<const int32_t>(context_).first(context_.size() - 1)));
    const size_t skipped = context_.size() - 1 - std::min(context_.size() - 1, last_draft_context_);
    if (costs_.has_prior_draft_cost() && skipped >= 8 && costs_.plain_seconds() > 0) {
      measured_catch_up_rate_ = catch_up_timer.seconds() / static_cast<double>(skipped) / costs_.plain_seconds();
    }
  }
  last_draft_context_ = context_.size();
  Timer draft_timer;
  if (sampling_) {
    FRUGAL_RETURN_IF_ERROR(drafter_->draft_sampled(context_, k, options_.sampling, rng_, draft_, q_rows_));
  } else {
    FRUGAL_RETURN_IF_ERROR(drafter_->draft(context_, k, draft_));
  }
  // The first draft after the prompt runs on caches the target's prompt pass just filled (a Q4_1
  // draft for an F16 target: c ~0.7 then, ~0.45 after): like the first plain step it is not
  // counted, unless no cost estimate exists at all (a drafter without a prior).
  if (++draft_calls_ > 1 || !costs_.has_prior_draft_cost()) {
    costs_.observe_draft(draft_timer.seconds(), static_cast<int>(std::min<size_t>(draft_.size(), static_cast<size_t>(k))));
  }
  costs_.observe_proposal(!draft_.empty());
  if (draft_.empty()) {
    // Drafting proposed nothing: a plain step.
    ++stats_.plain_steps;
    Timer plain_timer;
    FRUGAL_RETURN_IF_ERROR(plain_step(out));
    costs_.observe_plain(plain_timer.seconds());
    if (options_.adaptive) adapt(timer.seconds(), 1, false);
    return Status::ok();
  }
  k = static_cast<int>(std::min<size_t>(draft_.size(), static_cast<size_t>(k)));
  Timer verify_timer;
  batch_.assign(1, context_.back());
  batch_.insert(batch_.end(), draft_.begin(), draft_.begin() + k);
  FRUGAL_RETURN_IF_ERROR(target_.evaluate(batch_.data(), k + 1));
  ++stats_.verifications;
  stats_.drafted += k;

  if (sampling_) {
    const int m = verify_sampled(k, out);
    stats_.accepted += m;
    target_.truncate(pos0 + 1 + m);  // keep [last, accepted drafts]
    costs_.observe_verify(k + 1, verify_timer.seconds());
    costs_.observe_acceptance(m, k);
    if (options_.adaptive) adapt(timer.seconds(), m + 1, true);
    return Status::ok();
  }

  // Row j holds the target's logits after batch_[j]; draft j is batch_[j + 1].
  int m = 0;
  bool tie = false;
  int32_t correction = -1;
  for (int j = 0; j <= k; ++j) {
    float margin = 0;
    const int32_t best = argmax_with_margin(target_.logits(j), vocab, &margin);
    if (margin < options_.tie_margin) {
      tie = true;
      break;
    }
    if (j < k && best == batch_[j + 1]) {
      ++m;
      continue;
    }
    correction = best;
    break;
  }
  stats_.accepted += m;
  for (int j = 0; j < m; ++j) emit(batch_[j + 1], out);
  costs_.observe_verify(k + 1, verify_timer.seconds());
  if (tie) {
    // Roll back to just before the undecided row's token and decide it with the one-token path.
    target_.truncate(pos0 + m);
    ++stats_.tie_fallbacks;
    ++stats_.plain_steps;
    FRUGAL_RETURN_IF_ERROR(plain_step(out));
  } else {
    // Keep [last, accepted drafts]; the rejected drafts' keys and values are forgotten.
    target_.truncate(pos0 + 1 + m);
    emit(correction, out);
  }
  costs_.observe_acceptance(m, k);
  if (options_.adaptive) adapt(timer.seconds(), m + 1, true);
  return Status::ok();
}

int SpeculativeDecoder::verify_sampled(int k, std::vector<int32_t>& out) {
  // p: the target's sampling distributions of rows 0..k (row j follows batch_[j]); q: the draft's
  // for drafts 0..k-1 (none for a deterministic drafter). The rejection rule then emits the
  // accepted drafts and one token drawn from the residual or, all accepted, from p[k].
  const int64_t vocab = target_.model().config().n_vocab;
  if (static_cast<int>(q_rows_.size()) > k) q_rows_.resize(static_cast<size_t>(k));
  if (static_cast<int>(p_rows_.size()) < k + 1) p_rows_.resize(static_cast<size_t>(k + 1));
  for (int j = 0; j <= k; ++j) sampling_distribution(target_.logits(j), vocab, options_.sampling, p_rows_[j]);
  const std::vector<int32_t> emitted =
      speculative_sample(std::span<const std::vector<double>>(p_rows_.data(), static_cast<size_t>(k + 1)), q_rows_,
                         std::span<const int32_t>(draft_.data(), static_cast<size_t>(k)), rng_);
  for (int32_t token : emitted) emit(token, out);
  return static_cast<int>(emitted.size()) - 1;
}

int SpeculativeDecoder::next_draft_length() {
  // Plain decoding's step time is the unit of every cost: measure it first.
  if (!costs_.has_plain()) return 0;
  // Until a draft is timed: without priors (a drafter with no estimate of its cost) a one-token
  // first draft measures c (a useless draft model then costs c + V(2) - 1 ~ 0.7 of a step once,
  // not 3c + V(4) - 1 ~ 2; a good drafter's length grows at the next step).
  if (!costs_.has_draft() && !off_) {
    if (!costs_.has_prior_draft_cost()) return 1;
    // With the priors (weight bytes for c, prompt agreement for a) the first drafts already take
    // the length they promise.
    if (const int k = costs_.decide(options_.draft_max); k > 0) return k;
    // A drafter whose estimated cost (Drafter::estimated_cost) loses at the prior acceptance
    // starts switched off, its first probe spaced like any other by the probe's estimated extra
    // cost (the three or four one-token drafts a useless draft model spent before being switched
    // off measured 5-8% of a 64-token answer).
    off_ = true;
    ++stats_.switched_off;
    // A probe after n plain steps costs its drafts, the wider verification and the drafter's
    // catch-up over the n skipped tokens; spaced so that stays within kProbeBudget of the n steps.
    const double c = costs_.draft_cost();
    const double probe_extra = kOffProbeLength * c + costs_.verify_cost(kOffProbeLength + 1) - 1;
    const double room = kProbeBudget - catch_up_rate();
    until_probe_ = costs_.could_pay(options_.draft_max) && room > 0
                       ? static_cast<int>(std::clamp<double>(std::ceil(probe_extra / room), 1, kMaxProbeSpacing))
                       : kMaxProbeSpacing;
  }
  if (!off_) return draft_length_;
  if (until_probe_ > 0) {
    --until_probe_;
    return 0;
  }
  // A probe: a short draft that refreshes the acceptance estimate, so that a drafter that starts
  // to pay (a copy-heavy stretch for lookup) is switched back on.
  probing_ = true;
  ++stats_.probes;
  return std::min(options_.draft_max, kOffProbeLength);
}

void SpeculativeDecoder::adapt(double step_seconds, int emitted, bool verified) {
  const int k = costs_.decide(options_.draft_max);
  if (k > 0) {
    off_ = probing_ = false;
    failed_probes_ = 0;
    draft_length_ = k;
    return;
  }
  if (!off_) ++stats_.switched_off;
  // A probe whose draft was verified and lost doubles the spacing; one that proposed nothing
  // taught nothing and is spaced by its cost only (a free lookup tries again next step).
  if (probing_ && verified) ++failed_probes_;
  const bool count_spacing = !off_ || verified;
  off_ = true;
  probing_ = false;
  // The next probe: after pause_tokens plain steps, doubling with every probe that left
  // speculation off, and at least so many that this step's extra cost over plain decoding
  // (drafting, a model drafter's catch-up, the wider verification) is ~3% of them.
  const double plain = costs_.plain_seconds();
  const double extra = plain > 0 && options_.assumed_draft_cost < 0 ? std::max(0.0, step_seconds / plain - emitted) : 0.0;
  const int64_t by_count =
      count_spacing ? static_cast<int64_t>(std::max(1, options_.pause_tokens)) << std::min(failed_probes_, 6) : 0;
  const int64_t by_cost = static_cast<int64_t>(std::ceil(extra / kProbeBudget));
  until_probe_ = static_cast<int>(std::clamp<int64_t>(std::max(by_count, by_cost), 0, kMaxProbeSpacing));
  // A drafter that would lose even if every draft were accepted (a same-size quantized copy on a
  // compute-bound target: c >= 1) has nothing to gain from probes; one every 1024 tokens still
  // re-measures its cost, should the load change.
  if (!costs_.could_pay(options_.draft_max)) until_probe_ = kMaxProbeSpacing;
  // A model drafter must catch up on every token it skipped before it can probe (self:12 on
  // SmolLM2 ~0.12 plain steps a token); when that alone exceeds the budget no spacing keeps probes
  // cheap, so once a probe has lost too it is probed only every kMaxProbeSpacing tokens. (The
  // first switch-off still gets its probe: one rejected draft of a drafter that agreed with the
  // target on the whole prompt must not end speculation for the rest of the answer.)
  if (failed_probes_ > 0 && catch_up_rate() >= kProbeBudget) until_probe_ = kMaxProbeSpacing;
}

double SpeculativeDecoder::catch_up_rate() const {
  if (options_.assumed_draft_cost >= 0 || !costs_.has_prior_draft_cost()) return 0.0;
  return measured_catch_up_rate_ >= 0 ? measured_catch_up_rate_ : kCatchUpShare * costs_.draft_cost();
}

std::string SpeculativeDecoder::describe_costs() const {
  char line[448];
  char agreement[16] = "-";
  if (stats_.prompt_agreement >= 0) std::snprintf(agreement, sizeof agreement, "%.2f", stats_.prompt_agreement);
  const double plain_ms = costs_.plain_seconds() * 1e3;
  const int k = std::max(1, options_.draft_max);
  std::snprintf(line, sizeof line,
                "cost model: plain step %.2f ms, draft %.2f ms per token = c %.2f plain steps, verify V(2) = %.2f, V(%d) = %.2f, "
                "acceptance a = %.2f (prompt agreement %s), proposal rate %.2f, chosen k = %d%s (%lld probes, switched off %lld times)",
                plain_ms, costs_.draft_seconds() * 1e3, costs_.draft_cost(), costs_.verify_cost(2), k + 1, costs_.verify_cost(k + 1), costs_.acceptance(), agreement,
                costs_.proposal_rate(),
                off_ ? 0 : draft_length_, off_ ? " (off)" : "", static_cast<long long>(stats_.probes),
                static_cast<long long>(stats_.switched_off));
  return line;
}

int best_draft_length(double acceptance, double draft_cost, std::span<const double> verify_cost, int k_max, double min_gain,
                      double* speedup, double proposal_rate) {
  int best = 0;
  double best_speedup = 1.0;
  const double r = std::clamp(proposal_rate, 0.0, 1.0);
  const int limit = std::min<int>(k_max, static_cast<int>(verify_cost.size()) - 1);
  for (int k = 1; k <= limit; ++k) {
    const double cost = r * (k * draft_cost + verify_cost[static_cast<size_t>(k)]) + (1 - r) * (draft_cost + 1);
    if (!(cost > 0)) continue;
    const double s = (r * expected_tokens_per_step(acceptance, k) + (1 - r)) / cost;
    if (s > best_speedup) {
      best_speedup = s;
      best = k;
    }
  }
  if (best_speedup <= min_gain) {
    best = 0;
    best_speedup = 1.0;
  }
  if (speedup) *speedup = best_speedup;
  return best;
}

SpeculationCostModel::SpeculationCostModel(int max_batch) : verify_(static_cast<size_t>(std::max(2, max_batch)) + 1, 0.0) {}

namespace {
// Exponential moving average (weight 0.3 on the new sample; the first sample is taken as is).
// A sample over 1.5x the average weighs 0.05: on a shared machine a step is now and then stalled
// (another process took the core), and at 0.3 one stall moved every ratio the decision uses by a
// third (a V(9) of 2.8 where 2.0 was typical, and the draft length fell to 1 for a whole answer);
// a lasting change of load still moves the average within ~20 samples.
void ema(double& average, double sample) {
  if (average == 0) {
    average = sample;
    return;
  }
  const double weight = sample > 1.5 * average ? 0.05 : 0.3;
  average = (1 - weight) * average + weight * sample;
}
}  // namespace

void SpeculationCostModel::observe_plain(double seconds) {
  if (seconds > 0) ema(plain_, seconds);
}

void SpeculationCostModel::observe_draft(double seconds, int drafted) {
  if (seconds > 0) ema(draft_, seconds / std::max(1, drafted));
  else if (draft_ == 0) draft_ = 1e-9;  // a free drafter (timer resolution): measured, ~0
}

void SpeculationCostModel::observe_verify(int n, double seconds) {
  if (n < 2 || n >= static_cast<int>(verify_.size()) || !(seconds > 0)) return;
  double& average = verify_[static_cast<size_t>(n)];
  // The first sample of a batch size is capped at kFirstSampleCap times what the other sizes (or
  // the prior slope) predict for it: one stalled first verification (V(2) = 5.1 plain steps where
  // 1.1-1.3 is typical) had switched prompt lookup off for a whole 76-token answer (0.96x where
  // the same prompt gives 2.2x), its next probe spaced past the end by that V. A verification that
  // really costs more than predicted (up to 1.5x the capped value: V(2) is below 2 unless the
  // machine stalls) raises the average within a few samples.
  if (average == 0 && plain_ > 0) {
    average = std::min(seconds, kFirstSampleCap * verify_cost(n) * plain_);
    return;
  }
  ema(average, seconds);
}

void SpeculationCostModel::observe_proposal(bool proposed) {
  proposals_ = kDecay * proposals_ + (proposed ? 1 : 0);
  calls_ = kDecay * calls_ + 1;
}

void SpeculationCostModel::observe_acceptance(int accepted, int drafted) {
  if (drafted <= 0) return;
  successes_ = kDecay * successes_ + accepted;
  trials_ = kDecay * trials_ + accepted + (accepted < drafted ? 1 : 0);
}

double SpeculationCostModel::acceptance() const { return (successes_ + 0.5 * kPriorTrials) / (trials_ + kPriorTrials); }

double SpeculationCostModel::draft_cost() const {
  if (assumed_c_ >= 0) return assumed_c_;
  if (draft_ > 0 && plain_ > 0) return draft_ / plain_;
  return prior_c_ >= 0 ? prior_c_ : 0.0;
}

double SpeculationCostModel::verify_cost(int n) const {
  if (n <= 1) return 1.0;
  if (assumed_slope_ >= 0) return 1.0 + assumed_slope_ * (n - 1);
  if (plain_ <= 0) return 1.0 + kPriorSlope * (n - 1);
  if (n < static_cast<int>(verify_.size()) && verify_[static_cast<size_t>(n)] > 0) return verify_[static_cast<size_t>(n)] / plain_;
  // Least squares line through (1, 1): V(n) = 1 + b (n - 1).
  double sxy = 0, sxx = 0;
  for (size_t i = 2; i < verify_.size(); ++i) {
    if (verify_[i] <= 0) continue;
    const double x = static_cast<double>(i) - 1, y = verify_[i] / plain_ - 1;
    sxy += x * y;
    sxx += x * x;
  }
  const double slope = sxx > 0 ? std::max(0.0, sxy / sxx) : kPriorSlope;
  return 1.0 + slope * (n - 1);
}

bool SpeculationCostModel::could_pay(int k_max) const {
  k_max = std::clamp(k_max, 0, static_cast<int>(verify_.size()) - 2);
  std::vector<double> v(static_cast<size_t>(k_max) + 1);
  for (int k = 0; k <= k_max; ++k) v[static_cast<size_t>(k)] = verify_cost(k + 1);
  return best_draft_length(1.0, draft_cost(), v, k_max, kMinGain) > 0;
}

int SpeculationCostModel::decide(int k_max, double* speedup) const {
  k_max = std::clamp(k_max, 0, static_cast<int>(verify_.size()) - 2);
  std::vector<double> v(static_cast<size_t>(k_max) + 1);
  for (int k = 0; k <= k_max; ++k) v[static_cast<size_t>(k)] = verify_cost(k + 1);
  return best_draft_length(acceptance(), draft_cost(), v, k_max, kMinGain, speedup, proposal_rate());
}

Result<std::vector<int32_t>> greedy_reference(Transformer& target, std::span<const int32_t> prompt, int64_t n,
                                              double* decode_seconds) {
  if (prompt.empty()) return Status::error("greedy decoding needs a prompt of at least one token");
  target.truncate(0);
  std::vector<int32_t> out(prompt.begin(), prompt.end());
  FRUGAL_RETURN_IF_ERROR(evaluate_chunked(target, prompt, kSpeculativeBatch));
  const int64_t vocab = target.model().config().n_vocab;
  Timer timer;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t next = argmax_with_margin(target.last_logits(), vocab, nullptr);
    out.push_back(next);
    if (i + 1 < n) FRUGAL_RETURN_IF_ERROR(target.evaluate(&next, 1));
  }
  if (decode_seconds) *decode_seconds = timer.seconds();
  return out;
}

}  // namespace frugal

namespace frugal {

void sampling_distribution(const float* logits, int64_t n_vocab, const SamplerOptions& o, std::vector<double>& out) {
  // The same truncations in the same order as Sampler::sample, on a list sorted by logit.
  std::vector<int32_t> order(static_cast<size_t>(n_vocab));
  for (int64_t i = 0; i < n_vocab; ++i) order[i] = static_cast<int32_t>(i);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  size_t n = order.size();
  if (o.top_k > 0 && static_cast<size_t>(o.top_k) < n) {
    // Only the top k are ever kept: a partial sort (a full one of a 49k vocabulary per row would
    // cost more than a verification).
    n = static_cast<size_t>(o.top_k);
    std::partial_sort(order.begin(), order.begin() + static_cast<int64_t>(n), order.end(), by_logit);
  } else {
    std::sort(order.begin(), order.end(), by_logit);
  }
  std::vector<double> p(n);
  auto normalize = [&](size_t count, double temperature) {
    double sum = 0;
    for (size_t i = 0; i < count; ++i) sum += p[i] = std::exp((logits[order[i]] - logits[order[0]]) / temperature);
    for (size_t i = 0; i < count; ++i) p[i] /= sum;
  };
  normalize(n, 1.0);
  if (o.top_p < 1.0f) {
    double cumulative = 0;
    for (size_t i = 0; i < n; ++i) {
      cumulative += p[i];
      if (cumulative >= o.top_p) {
        n = i + 1;
        break;
      }
    }
  }
  if (o.min_p > 0.0f) {
    const double threshold = p[0] * o.min_p;
    size_t keep = 1;
    while (keep < n && p[keep] >= threshold) ++keep;
    n = keep;
  }
  normalize(n, o.temperature);
  out.assign(static_cast<size_t>(n_vocab), 0.0);
  for (size_t i = 0; i < n; ++i) out[order[i]] = p[i];
}

SpeculativeRowResult speculative_sample_row(const std::vector<double>& p, std::span<const double> q,
                                            std::optional<int32_t> draft, std::mt19937_64& rng) {
  if (!draft) return {draw_from(p, rng), false};
  const int32_t d = *draft;
  // An empty q is a point mass at the draft (a deterministic drafter): q(d) = 1.
  const bool point = q.empty();
  const double pd = p[d], qd = point ? 1.0 : q[d];
  if (qd > 0 && std::uniform_real_distribution<double>(0.0, 1.0)(rng) < std::min(1.0, pd / qd)) return {d, true};
  // Rejected: the residual norm(max(0, p - q)) makes the emitted token exactly p-distributed.
  std::vector<double> residual(p);
  double total = 0;
  for (size_t v = 0; v < residual.size(); ++v) {
    const double qv = point ? (static_cast<int32_t>(v) == d ? 1.0 : 0.0) : q[v];
    total += residual[v] = std::max(0.0, residual[v] - qv);
  }
  return {total > 0 ? draw_from(residual, rng) : draw_from(p, rng), false};
}

std::vector<int32_t> speculative_sample(std::span<const std::vector<double>> p, std::span<const std::vector<double>> q,
                                        std::span<const int32_t> drafts, std::mt19937_64& rng) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < drafts.size(); ++i) {
    const std::span<const double> qi = i < q.size() ? std::span<const double>(q[i]) : std::span<const double>();
    const SpeculativeRowResult row = speculative_sample_row(p[i], qi, drafts[i], rng);
    out.push_back(row.token);
    if (!row.accepted) return out;
  }
  out.push_back(draw_from(p[drafts.size()], rng));
  return out;
}

}  // namespace frugal
