// The continuous-batching Engine (engine.h) behind `frugal serve`: one engine thread steps every
// active sequence through one batched forward pass over a paged KV cache (Yu et al. 2022, "Orca":
// iteration-level scheduling; Kwon et al. 2023, "PagedAttention"/vLLM), admitting queued requests
// between steps and retiring finished ones.
#pragma once

#include <cstdint>
#include <memory>

#include "base/status.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "serve/engine.h"

namespace frugal::serve {

struct BatchEngineOptions {
  int64_t n_ctx = 4096;        // tokens one sequence may hold (prompt + generated)
  int n_slots = 4;             // sequences decoded together at most (-np)
  int64_t kv_blocks = 0;       // KV pool size in blocks; 0: n_slots * n_ctx / block_tokens
  int64_t block_tokens = 16;   // tokens per KV block (a power of two)
  int64_t step_tokens = 512;   // tokens per batched forward step (decode tokens + prompt chunks)
  int64_t max_queue = 256;     // queued requests beyond this are refused (HTTP 429)
  int n_threads = 2;
  KvType cache_type_k = KvType::kF16, cache_type_v = KvType::kF16;
  bool prefix_cache = true;
  bool kv_rotation = true;  // Hadamard-rotated heads in a quantized cache (kv/kv_rotation.h)
  // true: admit on the prompt's blocks and preempt (recompute) the newest sequence when the pool
  // runs dry; false: reserve prompt + max_tokens at admission, never preempt (batch_engine.cpp).
  bool preempt = true;
  // Prompt-lookup drafts per step for requests that do not say (GenerationRequest::lookup_draft).
  int lookup_draft = 0;
  // A draft model (`frugal serve --draft`; its vocabulary must be the target's): its drafts are
  // verified in the batched step as lookup's are (greedy: exact; sampled: the rejection rule).
  // It drafts for one sequence at a time between the batched steps, so it runs only while at
  // most draft_model_sequences sequences are decoding (above that, prompt lookup if enabled): at low
  // concurrency the step is latency-bound and a good draft pays; at high concurrency the batch is
  // compute-bound and serial drafting would stall every sequence (vLLM likewise turns speculation
  // off above a batch size).
  std::shared_ptr<const Model> draft_model;
  int64_t draft_exit_layer = 0;  // > 0: run only that many blocks (the target itself: early exit)
  int draft_model_max = 8;       // drafted tokens per step at most
  int draft_model_sequences = 1;
  float draft_p_min = 0.0f;  // the draft stops where its top probability falls below this (0: never)
};

// Checks the options against the model and starts the engine's thread.
Result<std::unique_ptr<Engine>> make_batch_engine(std::shared_ptr<const Model> model, const BatchEngineOptions& options);

}  // namespace frugal::serve
