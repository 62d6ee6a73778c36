// The generation engine behind `frugal serve`: requests of token ids in, tokens out through a
// callback, many sequences sharing one model. The HTTP layer (OpenAI API, SSE, page) talks only
// to this interface; the continuous-batching implementation (a scheduler stepping every active
// sequence through one batched forward pass over a paged KV cache) lives beside it.
// Thread safety: every method may be called from any thread (HTTP worker threads submit and
// cancel while the engine's own thread steps).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "runtime/sampler.h"

namespace frugal::serve {

// Why a sequence stopped (OpenAI's finish_reason: "stop", "length"; "cancelled" when the
// consumer stopped it, e.g. a client disconnect or a stop string found by the HTTP layer;
// "error" when the engine failed it).
enum class FinishReason { kNone, kEndOfText, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason reason);

struct GenerationRequest {
  std::vector<int32_t> prompt;    // already tokenized (chat template applied by the caller)
  int64_t max_tokens = 256;       // generated tokens at most (the engine also stops at its context)
  SamplerOptions sampling;        // temperature <= 0: greedy
  float presence_penalty = 0.0f;  // OpenAI's penalties on generated tokens' logits; 0: off
  float frequency_penalty = 0.0f;
  bool ignore_end_of_text = false;
  // A seed the caller chose: such a request decodes without speculation, so that the seed alone
  // fixes its output (the drafts a sequence gets depend on what shares its steps, and speculative
  // sampling draws differently from plain sampling).
  bool reproducible_sampling = false;
  // Prompt-lookup speculative decoding (n-gram drafts from the sequence's own tokens, checked by
  // the target in the same batched step; runtime/speculative.h): drafted tokens per step at most.
  // -1: the engine's default (BatchEngineOptions::lookup_draft); 0: off. Greedy requests get token
  // for token what plain decoding gives; sampled ones (without a repetition penalty or a chosen
  // seed) the target's distribution, by the rejection rule of speculative sampling.
  int lookup_draft = -1;
};

// One event per generated token, then a final event (token < 0) carrying the finish reason.
struct TokenEvent {
  int32_t token = -1;
  FinishReason finish = FinishReason::kNone;
  std::string error;  // set when finish == kError
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache
  int64_t generated_tokens = 0;      // including this one
};

// Called on the engine's thread; must be quick (queue the text, do not block on a socket).
// Returning false cancels the request: its sequence and KV blocks are freed before the next step,
// and a final event with kCancelled follows.
using TokenCallback = std::function<bool(const TokenEvent&)>;

struct EngineStats {
  int64_t requests_total = 0;
  int64_t requests_active = 0;  // sequences being prefilled or decoded
  int64_t requests_queued = 0;  // waiting for a slot or KV blocks
  int64_t prompt_tokens_total = 0;
  int64_t prompt_tokens_cached_total = 0;
  int64_t prompt_tokens_computed_total = 0;  // prompt tokens run through the model (prefill work)
  int64_t generated_tokens_total = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_cached = 0;  // unreferenced blocks kept for the prefix cache (evictable: free for new work)
  int64_t kv_block_tokens = 0;   // tokens per block
  int64_t preemptions_total = 0;  // sequences preempted for KV blocks (recomputed later)
  int64_t draft_tokens_total = 0;           // draft tokens verified (prompt lookup or the draft model)
  int64_t draft_tokens_accepted_total = 0;  // of which the target accepted
  double generated_tokens_per_second = 0.0;  // recent decode throughput over all sequences
};

using RequestId = uint64_t;

// submit()'s error when the queue is full begins with this text, so the HTTP layer can answer 429
// (overload) rather than 400 (a bad request).
inline constexpr char kQueueFullError[] = "the request queue is full";
inline bool is_queue_full(const Status& status) {
  return !status.is_ok() && status.message().rfind(kQueueFullError, 0) == 0;
}

class Engine {
 public:
  virtual ~Engine() = default;
  // Queues a request. Errors (returned, no callback): empty prompt, prompt + max_tokens beyond
  // the context, the queue full (the HTTP layer answers 429), the engine stopping.
  virtual Result<RequestId> submit(GenerationRequest request, TokenCallback on_event) = 0;
  // Cancels a queued or running request (no-op if it already finished).
  virtual void cancel(RequestId id) = 0;
  virtual EngineStats stats() const = 0;
  // Tokens of context one sequence may hold (prompt + generated).
  virtual int64_t context_size() const = 0;
  // Stops admitting requests; drain: finish running and queued ones first, else cancel them.
  // Returns when the engine's thread has stopped.
  virtual void shutdown(bool drain) = 0;
};

}  // namespace frugal::serve
