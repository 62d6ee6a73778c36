// BatchEngine: the scheduler of the continuous-batching engine (see batch_engine.h). The engine
// thread loops: drop cancelled requests, admit queued ones while a slot is free and the KV pool
// can promise their blocks, run one batched step (every decoding sequence's next token first,
// then prompt chunks of prefilling ones up to step_tokens), sample per sequence, retire finished
// sequences. KV blocks, two policies (BatchEngineOptions::preempt):
// - preempt (default, as vLLM): admission reserves the prompt's blocks only; decode takes blocks as
//   it goes. When the pool runs dry the most recently admitted sequence is preempted: its blocks
//   are released (its full blocks stay in the prefix cache) and it waits, ahead of new requests, to
//   be recomputed from its tokens (prompt + generated so far) with the same sampler state, so its
//   output is what it would have been (recompute preemption, Kwon et al. 2023, section 4.5). The
//   pool then holds as many sequences as their actual lengths allow, not their max_tokens.
// - reserve: admission reserves every block a request can need (prompt + max_tokens), so an
//   admitted sequence never runs out and nothing is preempted, at the price of admitting fewer.
// Prompt blocks found in the prefix cache are shared instead of reserved. Requests with a common prefix
// that arrive together compute it once: blocks are published as each chunk fills them, a
// prefilling sequence takes blocks published since its admission (returning the reservation they
// replace), and one that would compute the very block an earlier sequence is computing waits.
#include "serve/batch_engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>

#include "base/check.h"
#include "base/timer.h"
#include "kv/kv_cache.h"
#include "kv/paged_kv_cache.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"
#include "serve/batch_forward.h"

namespace frugal::serve {
namespace {

// Prompt-lookup drafts per step at most (longer ones are rarely accepted whole).
constexpr int kMaxLookupDraft = 16;

struct Request {
  RequestId id = 0;
  GenerationRequest request;
  TokenCallback on_event;
  std::atomic<bool> cancelled{false};
};

// A request admitted to a slot: its tokens (prompt, then generated), the KV positions stored so
// far, and its sampler.
struct Sequence {
  std::shared_ptr<Request> request;
  PagedKvCache::Sequence kv;
  std::vector<int32_t> tokens;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens whose keys/values came from the prefix cache
  int64_t n_past = 0;         // positions whose keys and values are stored
  int64_t generated = 0;
  std::unique_ptr<Sampler> sampler;
  std::unordered_map<int32_t, int32_t> counts;  // generated tokens (presence/frequency penalties)
  int64_t admission = 0;  // order of first admission: the newest is preempted first
  // Speculation (prompt lookup or the draft model): this step's drafted tokens, run after the
  // sequence's last token and verified against the target's own choice (greedy: its argmax;
  // sampled: the rejection rule); the adaptive draft length; plain steps left before drafting
  // again after repeated misses.
  std::vector<int32_t> draft;
  // Speculative sampling (temperature > 0): the draft model's distribution of each draft (none for
  // lookup's point masses), the target's distribution of the row being verified, and the rejection
  // rule's random numbers (seeded from the request's seed; the sampler keeps its own).
  std::vector<std::vector<double>> draft_q;
  std::vector<double> target_p;
  std::mt19937_64 rejection_rng;
  int draft_max = 0;
  int draft_length = 0;
  int draft_misses = 0;
  int draft_pause = 0;
  // The draft model's state for this sequence (its own KV cache), made when it first drafts and
  // dropped when concurrency rises above BatchEngineOptions::draft_model_sequences.
  std::unique_ptr<Drafter> model_drafter;
  bool finished = false;
  bool preempted = false;  // released its blocks; waits in preempted_ to be recomputed
};

class BatchEngine final : public Engine {
 public:
  BatchEngine(std::shared_ptr<const Model> model, const BatchEngineOptions& options, std::unique_ptr<PagedKvCache> cache)
      : model_(std::move(model)),
        options_(options),
        cache_(std::move(cache)),
        forward_(model_, *cache_, options.step_tokens, options.n_slots + draft_rows(options), options.n_threads, options.kv_rotation) {
    stats_.kv_blocks_total = cache_->total_blocks();
    stats_.kv_block_tokens = cache_->block_tokens();
    thread_ = std::thread([this] { run(); });
    thread_id_ = thread_.get_id();
  }

  ~BatchEngine() override { shutdown(false); }

  Result<RequestId> submit(GenerationRequest request, TokenCallback on_event) override {
    const int64_t n = static_cast<int64_t>(request.prompt.size());
    if (n == 0) return Status::error("the prompt is empty");
    const int64_t vocab = model_->config().n_vocab;
    for (int32_t token : request.prompt) {
      if (token < 0 || token >= vocab) {
        return Status::error("prompt token id " + std::to_string(token) + " is outside the vocabulary of " + std::to_string(vocab));
      }
    }
    if (request.max_tokens <= 0) return Status::error("max_tokens must be at least 1, not " + std::to_string(request.max_tokens));
    if (n + request.max_tokens > options_.n_ctx) {
      return Status::error("the prompt's " + std::to_string(n) + " tokens plus max_tokens " + std::to_string(request.max_tokens) +
                           " exceed the context of " + std::to_string(options_.n_ctx) + " tokens");
    }
    if (cache_->blocks_for(n + request.max_tokens) > cache_->total_blocks()) {
      return Status::error("the request needs more KV blocks than the whole pool holds (" +
                           std::to_string(cache_->total_blocks()) + " blocks of " + std::to_string(cache_->block_tokens()) + ")");
    }
    if (request.lookup_draft > kMaxLookupDraft) {
      return Status::error("lookup drafts are at most " + std::to_string(kMaxLookupDraft) + " tokens per step, not " +
                           std::to_string(request.lookup_draft));
    }
    if (!on_event) return Status::error("submit needs a callback");
    auto r = std::make_shared<Request>();
    r->request = std::move(request);
    r->on_event = std::move(on_event);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return Status::error("the engine is shutting down");
      if (static_cast<int64_t>(queue_.size()) >= options_.max_queue) {
        return Status::error(std::string(kQueueFullError) + " (" + std::to_string(options_.max_queue) + " requests waiting)");
      }
      r->id = next_id_++;
      queue_.push_back(r);
      live_[r->id] = r;
      ++stats_requests_total_;
    }
    wake_.notify_one();
    return r->id;
  }

  void cancel(RequestId id) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto it = live_.find(id);
      if (it == live_.end()) return;
      it->second->cancelled = true;
    }
    wake_.notify_one();
  }

  EngineStats stats() const override {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    EngineStats s = stats_;
    {
      std::lock_guard<std::mutex> queue_lock(mutex_);
      s.requests_total = stats_requests_total_;
      s.requests_queued = static_cast<int64_t>(queue_.size());
    }
    return s;
  }

  int64_t context_size() const override { return options_.n_ctx; }

  void shutdown(bool drain) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!stopping_) {
        stopping_ = true;
        drain_ = drain;
      } else if (!drain) {
        drain_ = false;  // a second, impatient call stops draining
      }
    }
    wake_.notify_all();
    // From a callback (the engine's own thread) the loop stops after this step; joining would
    // wait for itself.
    if (std::this_thread::get_id() == thread_id_) return;
    std::lock_guard<std::mutex> join_lock(join_mutex_);
    if (thread_.joinable()) thread_.join();
  }

 private:
  // Calls the consumer: true to go on; false when it wants the request stopped (kCancelled) or
  // threw (`failure` says what; the request fails with kError, the engine goes on).
  static bool emit(Request& r, const TokenEvent& event, std::string* failure = nullptr) {
    try {
      return r.on_event(event);
    } catch (const std::exception& e) {
      if (failure) *failure = std::string("the token callback threw: ") + e.what();
    } catch (...) {
      if (failure) *failure = "the token callback threw";
    }
    return false;
  }

  static TokenEvent event_for(const Sequence& s) {
    TokenEvent e;
    e.prompt_tokens = s.prompt_tokens;
    e.cached_prompt_tokens = s.cached_tokens;
    e.generated_tokens = s.generated;
    return e;
  }

  // The final event of a request that never reached a slot.
  static void finish_queued(Request& r, FinishReason reason, const std::string& error = {}) {
    TokenEvent e;
    e.finish = reason;
    e.error = error;
    e.prompt_tokens = static_cast<int64_t>(r.request.prompt.size());
    emit(r, e);
  }

  void finish(Sequence& s, FinishReason reason, const std::string& error = {}) {
    if (s.finished) return;
    s.finished = true;
    cache_->release(s.kv);
    TokenEvent e = event_for(s);
    e.finish = reason;
    e.error = error;
    emit(*s.request, e);
    std::lock_guard<std::mutex> lock(mutex_);
    live_.erase(s.request->id);
  }

  void run() {
    for (;;) {
      std::vector<std::shared_ptr<Request>> dropped;
      bool stop_now = false;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !active_.empty() || !preempted_.empty(); });
        // Cancelled requests leave the queue; without drain, stopping cancels everything.
        for (auto it = queue_.begin(); it != queue_.end();) {
          if ((*it)->cancelled || (stopping_ && !drain_)) {
            dropped.push_back(*it);
            live_.erase((*it)->id);
            it = queue_.erase(it);
          } else {
            ++it;
          }
        }
        stop_now = stopping_ && (!drain_ || (queue_.empty() && active_.empty() && preempted_.empty()));
      }
      for (auto& r : dropped) finish_queued(*r, FinishReason::kCancelled);
      const auto cancel_if_asked = [&](Sequence& s) {
        if (s.request->cancelled || (stop_now && !s.finished)) finish(s, FinishReason::kCancelled);
      };
      for (auto& s : active_) cancel_if_asked(*s);
      for (auto& s : preempted_) cancel_if_asked(*s);
      retire();
      if (stop_now && active_.empty() && preempted_.empty()) break;
      admit();
      if (!active_.empty()) step();
      retire();
      publish_stats();
    }
    publish_stats();
  }

  // Drops finished sequences; moves preempted ones to preempted_, kept in admission order.
  void retire() {
    for (auto& s : active_) {
      if (s->preempted && !s->finished) {
        const auto at = std::upper_bound(preempted_.begin(), preempted_.end(), s->admission,
                                         [](int64_t a, const auto& p) { return a < p->admission; });
        preempted_.insert(at, std::move(s));
      }
    }
    const auto gone = [](const auto& s) { return !s || s->finished; };
    active_.erase(std::remove_if(active_.begin(), active_.end(), gone), active_.end());
    preempted_.erase(std::remove_if(preempted_.begin(), preempted_.end(), gone), preempted_.end());
  }

  // Blocks kept free beyond an admission's own needs, so the decoding sequences can grow a while
  // before the next preemption (vLLM's watermark: 1% of the pool).
  int64_t admission_watermark() const { return options_.preempt ? std::max<int64_t>(1, cache_->total_blocks() / 100) : 0; }

  // Gives `s` its cached prefix and reserves the blocks it needs to run tokens[n_past, size):
  // with preemption the blocks of the tokens it already has (prompt, or prompt + generated when
  // recomputed), else also those of every token it may still generate. False (nothing held) when
  // the pool cannot promise them.
  bool hold_blocks(Sequence& s) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    const int64_t remaining = s.request->request.max_tokens - s.generated;
    // Positions it writes: its tokens, and without preemption every generated token but the last.
    const int64_t max_positions = options_.preempt ? n : n + remaining - 1;
    int64_t cached = cache_->match_prefix(s.kv, s.tokens.data(), n);
    // The last token is always run: its logits choose the next token. When every token was
    // cached, the last block is copied before that token is written (COW).
    const bool copy_last = cached == n;
    if (copy_last) cached = n - 1;
    const int64_t need = cache_->blocks_for(max_positions) - static_cast<int64_t>(s.kv.blocks.size()) + (copy_last ? 1 : 0);
    // Alone, a sequence needs no headroom (submit() checked that it fits the pool by itself).
    const int64_t watermark = active_.empty() ? 0 : admission_watermark();
    if (cache_->available_blocks() - need < watermark || !cache_->reserve(s.kv, need)) {
      cache_->release(s.kv);
      return false;
    }
    s.n_past = cached;
    return true;
  }

  // Recompute preemption: the sequence gives back every block and waits (retire() moves it to
  // preempted_); admit() brings it back before any new request.
  void preempt(Sequence& s) {
    cache_->release(s.kv);
    s.draft.clear();
    s.n_past = 0;
    s.preempted = true;
    std::lock_guard<std::mutex> lock(stats_mutex_);
    ++stats_.preemptions_total;
  }

  // The sequence to preempt when the pool runs dry: the most recently admitted one still running.
  Sequence* newest_running() {
    Sequence* newest = nullptr;
    for (auto& s : active_) {
      if (!s->finished && !s->preempted && (!newest || s->admission > newest->admission)) newest = s.get();
    }
    return newest;
  }

  // First come, first served: preempted sequences first (oldest first), then the head of the
  // queue; each waits for a slot and its KV blocks, and those behind it wait too (no overtaking,
  // so a long prompt is not starved by short ones).
  void admit() {
    while (!preempted_.empty()) {
      if (static_cast<int>(active_.size()) >= options_.n_slots) return;
      Sequence& s = *preempted_.front();
      if (!hold_blocks(s)) return;
      s.preempted = false;
      active_.push_back(std::move(preempted_.front()));
      preempted_.pop_front();
    }
    for (;;) {
      std::shared_ptr<Request> r;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (queue_.empty() || static_cast<int>(active_.size()) >= options_.n_slots) return;
        r = queue_.front();
      }
      auto s = std::make_unique<Sequence>();
      s->request = r;
      s->tokens = r->request.prompt;
      s->prompt_tokens = static_cast<int64_t>(s->tokens.size());
      if (!hold_blocks(*s)) return;  // wait for running sequences to return blocks
      {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.pop_front();
      }
      const int64_t cached = s->n_past;
      s->cached_tokens = cached;
      s->admission = next_admission_++;
      if (may_speculate(r->request)) {
        s->draft_max = r->request.lookup_draft >= 0 ? r->request.lookup_draft : options_.lookup_draft;
        if (options_.draft_model) s->draft_max = std::max(s->draft_max, options_.draft_model_max);
        s->draft_max = static_cast<int>(std::min<int64_t>(s->draft_max, options_.step_tokens - 1));
        s->draft_length = std::min(s->draft_max, kProbeLength);
      }
      s->sampler = std::make_unique<Sampler>(r->request.sampling, static_cast<int32_t>(model_->config().n_vocab));
      s->rejection_rng.seed(r->request.sampling.seed ^ kRejectionSeedSalt);
      for (int32_t token : s->tokens) s->sampler->accept(token);
      {
        std::lock_guard<std::mutex> lock(stats_mutex_);
        stats_.prompt_tokens_total += s->prompt_tokens;
        stats_.prompt_tokens_cached_total += cached;
      }
      active_.push_back(std::move(s));
    }
  }

  // Takes the full prompt blocks other sequences have published since `s` was admitted (or since
  // its last chunk), so concurrent requests with a common prefix compute it once. Only at a block
  // boundary, and never the block holding the last prompt token: that token is always run (its
  // logits choose the first generated token).
  void extend_prefix(Sequence& s) {
    const int64_t block = cache_->block_tokens();
    const int64_t held = static_cast<int64_t>(s.kv.blocks.size());
    if ((s.n_past & (block - 1)) != 0 || held * block != s.n_past || s.kv.hashed_blocks != held) return;
    const int64_t taken = cache_->extend_prefix(s.kv, s.tokens.data(), s.prompt_tokens - 1);
    if (taken == 0) return;
    s.n_past += taken * block;
    s.cached_tokens += taken * block;
    std::lock_guard<std::mutex> lock(stats_mutex_);
    stats_.prompt_tokens_cached_total += taken * block;
  }

  // True when a sequence ahead of active_[index] in admission order is prefilling right now the
  // very block `s` would compute next (same history: same chain hash and same tokens), and `s`
  // could take that block once it is published: `s` then waits a step instead of computing a
  // duplicate. The sequence it waits for is earlier in the order, so the first of such a group
  // always runs and the group cannot deadlock; if it is cancelled, the next one computes.
  bool prefilled_by_another(const Sequence& s, size_t index) const {
    const int64_t block = cache_->block_tokens();
    const int64_t held = static_cast<int64_t>(s.kv.blocks.size());
    if ((s.n_past & (block - 1)) != 0 || held * block != s.n_past || s.kv.hashed_blocks != held) return false;
    const int64_t end = s.n_past + block;  // the next block, if it is one extend_prefix may take
    if (end >= s.prompt_tokens) return false;
    for (size_t j = 0; j < index; ++j) {
      const Sequence& l = *active_[j];
      if (l.finished || l.n_past >= l.prompt_tokens || l.prompt_tokens < end) continue;
      if (l.kv.hashed_blocks != held || l.kv.chain_hash != s.kv.chain_hash) continue;
      if (std::equal(s.tokens.begin() + s.n_past, s.tokens.begin() + end, l.tokens.begin() + s.n_past)) return true;
    }
    return false;
  }

  // One batched forward step and the sampling after it.
  void step() {
    step_tokens_.clear();
    step_positions_.clear();
    step_tables_.clear();
    step_logit_rows_.clear();
    step_sampling_.clear();
    std::vector<std::pair<Sequence*, int64_t>>& runs = step_runs_;  // sequence, tokens it runs this step
    runs.clear();
    int64_t budget = options_.step_tokens;
    int64_t prompt_computed = 0;
    // Drafts share the step's spare logit rows, and never take the token budget of a decoding
    // sequence that comes later in the pass.
    int64_t draft_rows_left = draft_rows(options_);
    int64_t decoding_left = 0;
    for (const auto& s : active_) {
      if (!s->finished && !s->preempted && s->n_past >= s->prompt_tokens) ++decoding_left;
    }
    const int64_t decoding_total = decoding_left;
    // Decoding sequences first (one token each, latency-bound), then prompt chunks in admission
    // order with what is left (chunked prefill, as Sarathi (Agrawal et al. 2023) and vLLM do).
    const int64_t block = cache_->block_tokens();
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = 0; i < active_.size(); ++i) {
        Sequence* s = active_[i].get();
        const bool decoding = s->n_past >= s->prompt_tokens;
        if (s->finished || s->preempted || decoding != (pass == 0) || budget == 0) continue;
        if (!decoding && options_.prefix_cache) {
          extend_prefix(*s);
          if (prefilled_by_another(*s, i)) continue;
        }
        const int64_t pending = static_cast<int64_t>(s->tokens.size()) - s->n_past;
        if (pending <= 0) continue;
        s->draft.clear();
        s->draft_q.clear();
        if (decoding) {
          --decoding_left;
          if (pending == 1) plan_draft(*s, std::min(budget - 1 - decoding_left, draft_rows_left), decoding_total);
        }
        const int64_t drafted = static_cast<int64_t>(s->draft.size());
        draft_rows_left -= drafted;
        int64_t count = std::min(pending, budget);
        // A chunk cut short by the budget ends on a block boundary when it can, so the sequence
        // can pick up blocks others publish meanwhile (extend_prefix works at boundaries).
        if (count < pending) {
          const int64_t aligned = ((s->n_past + count) & ~(block - 1)) - s->n_past;
          if (aligned > 0) count = aligned;
        }
        count += drafted;  // the drafts run after the last token (budget left for them in plan_draft)
        Status writable = cache_->prepare_write(s->kv, s->n_past, s->n_past + count);
        // Out of blocks: preempt the newest running sequence (maybe `s` itself) until it fits.
        while (!writable.is_ok() && options_.preempt) {
          Sequence* victim = newest_running();
          if (victim == s && runs.empty() && active_.size() == 1) break;  // alone and still too big
          const auto run = std::find_if(runs.begin(), runs.end(), [&](const auto& r) { return r.first == victim; });
          if (run != runs.end()) {
            budget += run->second;
            if (run->first->n_past < run->first->prompt_tokens) prompt_computed -= run->second;
            runs.erase(run);
          }
          preempt(*victim);
          if (victim == s) break;
          writable = cache_->prepare_write(s->kv, s->n_past, s->n_past + count);  // NOLINT: retried after the preemption
        }
        if (s->preempted) continue;
        if (!writable.is_ok()) {
          finish(*s, FinishReason::kError, writable.message());
          continue;
        }
        budget -= count;
        if (!decoding) prompt_computed += count;
        runs.push_back({s, count});
      }
    }
    // Block tables may grow (reallocate) in prepare_write above, so pointers are taken after it.
    for (auto& [s, count] : runs) {
      const int64_t drafted = static_cast<int64_t>(s->draft.size());
      const int64_t own = count - drafted;  // the sequence's own tokens; the drafts follow
      for (int64_t i = 0; i < count; ++i) {
        step_tokens_.push_back(i < own ? s->tokens[s->n_past + i] : s->draft[i - own]);
        step_positions_.push_back(s->n_past + i);
        step_tables_.push_back(s->kv.blocks.data());
      }
      if (s->n_past + own == static_cast<int64_t>(s->tokens.size())) {
        // Logits of the last token, and of every draft (each verifies the next draft).
        for (int64_t i = count - 1 - drafted; i < count; ++i) {
          step_logit_rows_.push_back(static_cast<int64_t>(step_tokens_.size()) - count + i);
        }
        step_sampling_.push_back(s);
      }
    }
    if (step_tokens_.empty()) return;
    {
      std::lock_guard<std::mutex> lock(stats_mutex_);
      stats_.prompt_tokens_computed_total += prompt_computed;
    }
    forward_.run(step_tokens_.data(), step_positions_.data(), step_tables_.data(), static_cast<int64_t>(step_tokens_.size()),
                 step_logit_rows_.data(), static_cast<int64_t>(step_logit_rows_.size()));
    // The sequences' own tokens are stored now; a draft's position counts once it is accepted.
    for (auto& [s, count] : runs) s->n_past += count - static_cast<int64_t>(s->draft.size());
    int64_t generated = 0, drafted_total = 0, accepted_total = 0;
    // Each sequence's first choice (row 0 of its rows) on the forward pass's threads: a sampler
    // reads only its own sequence's logits and state, so the tokens are those of the serial loop
    // below, while sampling 16 sequences (a pass over 49152 logits each, a sort for temperature
    // sampling) no longer runs on one thread while the others wait (~9% of a 16-sequence step).
    const int64_t n_sampling = static_cast<int64_t>(step_sampling_.size());
    step_first_rows_.resize(static_cast<size_t>(n_sampling));
    step_first_tokens_.resize(static_cast<size_t>(n_sampling));
    for (int64_t i = 0, r = 0; i < n_sampling; ++i) {
      step_first_rows_[i] = r;
      r += static_cast<int64_t>(step_sampling_[i]->draft.size()) + 1;
    }
    forward_.pool().parallel_for(n_sampling, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        // A sampled sequence with drafts verifies row 0 by the rejection rule below instead.
        if (samples_drafts(*step_sampling_[i])) continue;
        step_first_tokens_[i] = next_token(*step_sampling_[i], forward_.logits(step_first_rows_[i]));
      }
    });
    int64_t row = 0;
    for (int64_t i = 0; i < n_sampling; ++i) {
      Sequence* s = step_sampling_[i];
      const int64_t drafted = static_cast<int64_t>(s->draft.size());
      int64_t accepted = 0;
      // Row j holds the target's logits after the last token and drafts 1..j. Greedy: its choice is
      // what plain decoding would emit next, so tokens are emitted until one differs from the draft.
      // Sampled: the rejection rule keeps draft j or replaces it with a token that makes the
      // emitted one exactly p-distributed (Leviathan et al. 2023), and verification stops there.
      const bool sampled = samples_drafts(*s);
      for (int64_t j = 0; j <= drafted; ++j) {
        int32_t token;
        bool kept;
        if (sampled) {
          const SpeculativeRowResult verdict = verify_sampled_row(*s, forward_.logits(row + j), j);
          token = verdict.token;
          kept = verdict.accepted;
        } else {
          token = j == 0 ? step_first_tokens_[i] : next_token(*s, forward_.logits(row + j));
          kept = j < drafted && token == s->draft[j];
        }
        if (!emit_token(*s, token, generated)) break;
        if (!kept) break;
        ++accepted;
        ++s->n_past;  // the draft's keys and values at this position are the accepted token's
      }
      row += drafted + 1;
      if (drafted > 0) {
        drafted_total += drafted;
        accepted_total += accepted;
        adapt_draft_length(*s, drafted, accepted);
      }
      s->draft.clear();
    }
    // Published after the verification: a rejected draft's position is not part of the history.
    for (auto& [s, count] : runs) {
      if (!s->finished) cache_->publish(s->kv, s->tokens.data(), s->n_past);
    }
    std::lock_guard<std::mutex> lock(stats_mutex_);
    stats_.generated_tokens_total += generated;
    stats_.draft_tokens_total += drafted_total;
    stats_.draft_tokens_accepted_total += accepted_total;
    const double now = clock_.seconds();
    rate_.push_back({now, stats_.generated_tokens_total});
    // Decode throughput over the last few seconds of steps.
    while (rate_.size() > 2 && now - rate_.front().first > kRateWindowSeconds) rate_.pop_front();
  }

  // The next token from one row of logits: the request's penalties, then the sampler.
  int32_t next_token(Sequence& s, const float* row) {
    float* logits = const_cast<float*>(row);
    apply_penalties(s, logits);
    const int32_t token = s.sampler->sample(logits);
    FRUGAL_CHECK(token >= 0 && token < model_->config().n_vocab);
    return token;
  }

  // OpenAI's penalties over the tokens generated so far: logit -= count * frequency_penalty +
  // (count > 0) * presence_penalty.
  static void apply_penalties(const Sequence& s, float* logits) {
    const GenerationRequest& req = s.request->request;
    if (req.presence_penalty == 0.0f && req.frequency_penalty == 0.0f) return;
    for (const auto& [token, count] : s.counts) {
      logits[token] -= static_cast<float>(count) * req.frequency_penalty + req.presence_penalty;
    }
  }

  // Speculation is exact for greedy requests and, by the rejection rule, for sampled ones whose
  // distribution sampling_distribution() reproduces (no repetition penalty: it depends on a window
  // of the context the rule does not track). A caller-chosen seed decodes plainly: the drafts a
  // sequence gets depend on what else shares its steps, and the seed should fix the output alone.
  static bool may_speculate(const GenerationRequest& request) {
    const SamplerOptions& o = request.sampling;
    return o.temperature <= 0.0f || (o.repeat_penalty == 1.0f && !request.reproducible_sampling);
  }

  static bool samples_drafts(const Sequence& s) {
    return s.request->request.sampling.temperature > 0.0f && !s.draft.empty();
  }

  // Row j of a sampled sequence's verification: p is the sampler's distribution after the
  // penalties (counting the drafts accepted before j), q the draft's (empty: lookup's point mass);
  // row `drafted` has no draft (the bonus token).
  SpeculativeRowResult verify_sampled_row(Sequence& s, const float* row, int64_t j) {
    float* logits = const_cast<float*>(row);
    apply_penalties(s, logits);
    sampling_distribution(logits, model_->config().n_vocab, s.request->request.sampling, s.target_p);
    const int64_t drafted = static_cast<int64_t>(s.draft.size());
    const std::span<const double> q = j < static_cast<int64_t>(s.draft_q.size()) ? std::span<const double>(s.draft_q[j])
                                                                                 : std::span<const double>();
    const SpeculativeRowResult verdict = speculative_sample_row(
        s.target_p, q, j < drafted ? std::optional<int32_t>(s.draft[j]) : std::nullopt, s.rejection_rng);
    FRUGAL_CHECK(verdict.token >= 0 && verdict.token < model_->config().n_vocab);
    return verdict;
  }

  // Appends a generated token and tells the consumer; false once the sequence has finished
  // (end of text, max_tokens, the context, or the consumer stopped it).
  bool emit_token(Sequence& s, int32_t token, int64_t& generated) {
    const GenerationRequest& req = s.request->request;
    if (!req.ignore_end_of_text && model_->tokenizer().is_end_of_generation(token)) {
      finish(s, FinishReason::kEndOfText);
      return false;
    }
    s.sampler->accept(token);
    ++s.counts[token];
    s.tokens.push_back(token);
    ++s.generated;
    ++generated;
    TokenEvent e = event_for(s);
    e.token = token;
    std::string failure;
    if (!emit(*s.request, e, &failure)) {
      finish(s, failure.empty() ? FinishReason::kCancelled : FinishReason::kError, failure);
    } else if (s.generated >= req.max_tokens || static_cast<int64_t>(s.tokens.size()) >= options_.n_ctx) {
      finish(s, FinishReason::kLength);
    }
    return !s.finished;
  }

  // Drafts for a decoding sequence: up to its draft length, what fits the step's `room`, its
  // remaining max_tokens and the context (every emitted token must fit). From the draft model
  // while at most draft_model_sequences sequences decode, else from prompt lookup (if the
  // request asked for it).
  void plan_draft(Sequence& s, int64_t room, int64_t decoding) {
    if (s.draft_max <= 0) return;
    const bool use_model = options_.draft_model && decoding <= options_.draft_model_sequences;
    if (!use_model) s.model_drafter.reset();  // its cache would only go stale; free it
    const int lookup = s.request->request.lookup_draft >= 0 ? s.request->request.lookup_draft : options_.lookup_draft;
    if (!use_model && lookup <= 0) return;
    if (s.draft_pause > 0) {
      --s.draft_pause;
      return;
    }
    const int64_t size = static_cast<int64_t>(s.tokens.size());
    const int64_t k = std::min({static_cast<int64_t>(use_model ? s.draft_length : std::min(s.draft_length, lookup)), room,
                                s.request->request.max_tokens - s.generated - 1, options_.n_ctx - size - 1});
    if (k <= 0) return;
    Drafter* drafter = lookup_.get();
    if (use_model) {
      if (!s.model_drafter) {
        ModelDrafterOptions mo;
        mo.n_threads = options_.n_threads;
        mo.shared_pool = &forward_.pool();  // the draft and the batched step take turns
        mo.n_ctx = options_.n_ctx;
        mo.exit_layer = options_.draft_exit_layer;
        mo.p_min = options_.draft_p_min;
        auto made = make_model_drafter(options_.draft_model, *model_, mo);
        if (!made.is_ok()) return;  // checked at start; no draft is always safe
        s.model_drafter = std::move(*made);
      }
      drafter = s.model_drafter.get();
    }
    const SamplerOptions& sampling = s.request->request.sampling;
    // Sampled: the draft model draws its drafts from q (the same samplers on its logits), which the
    // rejection rule needs; lookup proposes point masses (q left empty).
    const Status drafted = sampling.temperature > 0.0f
                               ? drafter->draft_sampled(s.tokens, static_cast<int>(k), sampling, s.rejection_rng, s.draft, s.draft_q)
                               : drafter->draft(s.tokens, static_cast<int>(k), s.draft);
    if (!drafted.is_ok()) s.draft.clear();  // no draft is always safe
  }

  // Longer drafts while they are accepted whole, shorter when rejected, and a pause of plain
  // steps after repeated misses (a rejected draft costs a step's compute for nothing).
  static void adapt_draft_length(Sequence& s, int64_t drafted, int64_t accepted) {
    if (accepted == drafted) {
      s.draft_length = std::min(s.draft_max, 2 * s.draft_length);
      s.draft_misses = 0;
    } else if (accepted == 0) {
      s.draft_length = std::max(1, s.draft_length / 2);
      if (++s.draft_misses >= kDraftMissesBeforePause) {
        s.draft_pause = kDraftPauseSteps;
        s.draft_misses = 0;
        s.draft_length = std::min(s.draft_max, kProbeLength);
      }
    } else {
      s.draft_length = std::max<int>(1, static_cast<int>(accepted) + 1);
      s.draft_misses = 0;
    }
  }

  // Logit rows a step keeps for drafts beyond one per slot (each row is n_vocab floats).
  static int64_t draft_rows(const BatchEngineOptions& o) {
    return std::min<int64_t>(o.step_tokens - o.n_slots, std::max<int64_t>(4 * kMaxLookupDraft, int64_t{o.n_slots} * o.lookup_draft));
  }

  static constexpr int kDraftMissesBeforePause = 2;
  // Keeps the rejection rule's random numbers apart from the sampler's (seeded with the same seed).
  static constexpr uint64_t kRejectionSeedSalt = 0x9e3779b97f4a7c15ULL;
  static constexpr int kDraftPauseSteps = 16;

  void publish_stats() {
    int64_t active = 0;
    for (const auto& s : active_) active += s->finished ? 0 : 1;
    std::lock_guard<std::mutex> lock(stats_mutex_);
    stats_.requests_active = active;
    stats_.kv_blocks_used = cache_->used_blocks();
    stats_.kv_blocks_cached = cache_->cached_blocks();
    const double now = clock_.seconds();
    if (rate_.size() >= 2 && now - rate_.back().first < kRateWindowSeconds) {
      const double span = now - rate_.front().first;
      stats_.generated_tokens_per_second =
          span > 0 ? static_cast<double>(rate_.back().second - rate_.front().second) / span : 0.0;
    } else {
      stats_.generated_tokens_per_second = 0.0;
    }
  }

  static constexpr double kRateWindowSeconds = 5.0;

  std::shared_ptr<const Model> model_;
  BatchEngineOptions options_;
  std::unique_ptr<PagedKvCache> cache_;
  BatchForward forward_;

  mutable std::mutex mutex_;  // queue_, live_, stopping_, drain_, next_id_, stats_requests_total_
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Request>> queue_;
  std::unordered_map<RequestId, std::shared_ptr<Request>> live_;  // queued or running (for cancel)
  bool stopping_ = false;
  bool drain_ = false;
  RequestId next_id_ = 1;
  int64_t stats_requests_total_ = 0;
  std::mutex join_mutex_;
  std::thread thread_;
  std::thread::id thread_id_;

  // Engine thread only.
  std::vector<std::unique_ptr<Sequence>> active_;
  std::deque<std::unique_ptr<Sequence>> preempted_;  // in admission order, oldest first
  int64_t next_admission_ = 0;
  std::vector<int32_t> step_tokens_;
  std::vector<int64_t> step_positions_;
  std::vector<const int32_t*> step_tables_;
  std::vector<int64_t> step_logit_rows_;
  std::vector<Sequence*> step_sampling_;  // sequences choosing tokens, in logit-row order
  std::vector<int64_t> step_first_rows_;     // per step_sampling_ entry: its first logit row
  std::vector<int32_t> step_first_tokens_;   // and the token sampled from it
  std::unique_ptr<Drafter> lookup_ = make_ngram_drafter(NgramDrafterOptions{});
  std::vector<std::pair<Sequence*, int64_t>> step_runs_;
  Timer clock_;

  mutable std::mutex stats_mutex_;
  EngineStats stats_;
  std::deque<std::pair<double, int64_t>> rate_;
};

}  // namespace

Result<std::unique_ptr<Engine>> make_batch_engine(std::shared_ptr<const Model> model, const BatchEngineOptions& options) {
  if (!model) return Status::error("make_batch_engine: no model");
  const ModelConfig& c = model->config();
  if (options.n_slots < 1) return Status::error("-np (slots) must be at least 1, not " + std::to_string(options.n_slots));
  if (options.n_ctx < 2) return Status::error("the context (-c) must hold at least 2 tokens, not " + std::to_string(options.n_ctx));
  if (options.n_threads < 1) return Status::error("threads must be at least 1");
  if (options.step_tokens < options.n_slots) {
    return Status::error("step tokens (" + std::to_string(options.step_tokens) + ") must be at least the number of slots (" +
                         std::to_string(options.n_slots) + ")");
  }
  if (options.max_queue < 0) return Status::error("the queue bound must not be negative");
  if (options.lookup_draft < 0 || options.lookup_draft > kMaxLookupDraft) {
    return Status::error("--lookup takes 0 to " + std::to_string(kMaxLookupDraft) + " draft tokens, not " + std::to_string(options.lookup_draft));
  }
  if (options.draft_model) {
    FRUGAL_RETURN_IF_ERROR(check_same_vocabulary(*model, *options.draft_model));
    if (options.draft_model_max < 1 || options.draft_model_max > kMaxLookupDraft) {
      return Status::error("--draft-max takes 1 to " + std::to_string(kMaxLookupDraft) + " tokens, not " +
                           std::to_string(options.draft_model_max));
    }
    if (options.draft_exit_layer < 0) return Status::error("a self-draft needs at least one block");
  }
  FRUGAL_RETURN_IF_ERROR(check_kv_type(options.cache_type_k, c.head_dim));
  FRUGAL_RETURN_IF_ERROR(check_kv_type(options.cache_type_v, c.head_dim));
  PagedKvOptions kv;
  kv.n_layer = c.n_layer;
  kv.row_elements = c.kv_dim();
  kv.block_tokens = options.block_tokens;
  kv.n_blocks = options.kv_blocks > 0 ? options.kv_blocks
                                      : (options.n_slots * options.n_ctx + options.block_tokens - 1) / std::max<int64_t>(1, options.block_tokens);
  kv.key_type = options.cache_type_k;
  kv.value_type = options.cache_type_v;
  kv.prefix_cache = options.prefix_cache;
  FRUGAL_ASSIGN_OR_RETURN(auto cache, PagedKvCache::create(kv));
  return std::unique_ptr<Engine>(new BatchEngine(std::move(model), options, std::move(cache)));
}

}  // namespace frugal::serve
