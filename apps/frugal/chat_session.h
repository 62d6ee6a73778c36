// Streaming generation shared by `frugal run` and its --chat loop: stop sequences, Ctrl-C that
// stops the current reply, and a conversation that drops its oldest turns when the context fills.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "frugal/frugal.h"

namespace frugal::cli {

struct Speed {
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0;
  int64_t generated_tokens = 0;
  double generate_seconds = 0;
};
void print_speed(const Speed& s);

enum class StopReason { kEndOfText, kLength, kStopSequence, kInterrupted, kContextFull };

struct GenerateOptions {
  int64_t max_new = 128;
  std::vector<std::string> stops;  // --stop: generation ends before the first occurrence of any
  bool ignore_eos = false;         // --ignore-eos: end-of-generation tokens are never sampled
};

// Feeds the part of `tokens` the cache does not hold yet (the cache holds `history`), then
// samples up to max_new tokens, printing each piece as soon as no stop sequence can start in it.
// The printed text (without the stop sequence) goes to `reply` when given.
Status generate(Transformer& transformer, Sampler& sampler, std::vector<int32_t>& history,
                const std::vector<int32_t>& tokens, const GenerateOptions& options, Speed& speed,
                std::string* reply, StopReason* reason);

// generate() through speculative decoding (runtime/speculative.h): the decoder's target holds
// the cache; it reuses the prefix the tokens share with its previous context. Stop sequences,
// Ctrl-C and the context limit as generate(); --ignore-eos is refused. The generated tokens
// (end-of-text excluded) are appended to `generated` when given.
Status generate_speculative(SpeculativeDecoder& decoder, const std::vector<int32_t>& tokens, const GenerateOptions& options,
                            Speed& speed, std::string* reply, StopReason* reason, std::vector<int32_t>* generated);

// Ctrl-C (SIGINT) sets a flag that generate() checks after every token; the chat prompt reads
// with read(2) so a Ctrl-C there ends the session. Installed by `frugal run`.
void install_interrupt_handler();
bool interrupted();
void clear_interrupt();

// Tokens of a rendered prompt: BOS is added as the tokenizer's metadata asks unless the
// template already wrote the BOS text (Gemma's template starts with {{ bos_token }}).
std::vector<int32_t> encode_prompt(const Model& model, const std::string& text);

struct ChatOptions {
  std::string system;        // --system: the first message, if not empty
  std::string first_prompt;  // -p: the first user message, if not empty
  GenerateOptions generate;
  // Speculative decoding (--draft): replies come from this decoder, whose target is the
  // transformer run_chat is given; null: plain sampling.
  SpeculativeDecoder* speculative = nullptr;
};

// The interactive conversation of `frugal run --chat`; returns the exit code.
int run_chat(const Model& model, Transformer& transformer, Sampler& sampler, const ChatOptions& options);

}  // namespace frugal::cli
