// frugal run: stream a continuation of a prompt, or hold a chat (--chat) with the model's template.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "chat_session.h"
#include "cli_args.h"
#include "commands.h"
#include "runtime/memory_check.h"
#include "speculative_cli.h"

namespace frugal::cli {
namespace {

// Generation with speculative decoding (runtime/speculative.h): --draft MODEL.gguf | ngram |
// self:N (the target's first N blocks); greedy with --temp 0, else speculative sampling with the
// same samplers as plain sampling. Prints the continuation, then acceptance statistics; with
// --draft-compare also plain decoding of the same prompt and its speed, and (greedy) whether the
// two outputs are identical.
// With `chat`, the conversation of --chat (chat_session.h) runs on the decoder instead.
// `echo`: the prompt text to print once the drafter is made (so a bad --draft prints only its error).
int run_speculative(const Args& args, const std::shared_ptr<const Model>& m, const std::vector<int32_t>& prompt,
                    const std::string& echo, const GenerateOptions& generation, ChatOptions* chat, int64_t n_ctx,
                    int n_threads, const SamplerOptions& sampling) {
  const int64_t max_new = generation.max_new;
  auto draft_max = args.get_int("--draft-max", 1, kSpeculativeBatch - 1);
  auto p_min = args.get_float("--draft-p-min", 0, 1);
  auto tie_margin = args.get_float("--draft-tie-margin", 0, 1e30);
  if (!tie_margin) return fail(tie_margin.status().message());
  if (!draft_max) return fail(draft_max.status().message());
  if (!p_min) return fail(p_min.status().message());
  auto spec = draft_spec(args);
  if (!spec) return fail(spec.status().message());
  if (static_cast<int64_t>(prompt.size()) >= n_ctx) return fail("the prompt does not fit in the context (raise -c)");
  TransformerOptions options;
  options.n_ctx = n_ctx;
  options.n_threads = n_threads;
  options.n_batch = kSpeculativeBatch;
  options.all_logits = true;
  Transformer target(m, options);
  ModelDrafterOptions mo;
  mo.n_threads = n_threads;
  mo.shared_pool = &target.pool();
  mo.n_ctx = n_ctx;
  mo.p_min = static_cast<float>(*p_min);
  auto made = make_drafter(*spec, m, mo);
  if (!made) return fail(made.status().message());
  std::unique_ptr<Drafter> drafter = std::move(*made);
  SpeculativeOptions so;
  so.draft_max = static_cast<int>(*draft_max);
  so.adaptive = !args.has("--draft-fixed");
  so.tie_margin = static_cast<float>(*tie_margin);
  so.sampling = sampling;
  const bool greedy = sampling.temperature <= 0;
  SpeculativeDecoder decoder(target, drafter.get(), so);
  std::fwrite(echo.data(), 1, echo.size(), stdout);
  if (chat) {
    chat->speculative = &decoder;
    Sampler unused(sampling, static_cast<int32_t>(m->config().n_vocab));  // run_chat's plain path
    return run_chat(*m, target, unused, *chat);
  }
  // --draft-compare (greedy) times plain decoding both before and after the speculative pass and
  // compares against the two together, so neither side profits from running second (warm caches,
  // a settled CPU) — frugal bench alternates the order for the same reason.
  TransformerOptions plain_options = options;
  plain_options.all_logits = false;
  plain_options.shared_pool = &target.pool();
  const bool compare_greedy = args.has("--draft-compare") && sampling.temperature <= 0;
  int64_t plain_before_tokens = 0;
  double plain_before_seconds = 0;
  if (compare_greedy && max_new < (int64_t{1} << 30) && static_cast<int64_t>(prompt.size()) + max_new < n_ctx) {
    Transformer plain_before(m, plain_options);
    auto before = greedy_reference(plain_before, prompt, max_new, &plain_before_seconds);
    if (!before) return fail(before.status().message());
    plain_before_tokens = max_new;
  }
  Speed speed;
  StopReason why = StopReason::kLength;
  std::vector<int32_t> generated;
  if (Status s = generate_speculative(decoder, prompt, generation, speed, nullptr, &why, &generated); !s) return fail(s.message());
  const double prompt_seconds = speed.prompt_seconds, seconds = speed.generate_seconds;
  if (why == StopReason::kInterrupted) std::fprintf(stderr, "\n[interrupted]");
  if (why == StopReason::kContextFull) std::fprintf(stderr, "\n[context of %lld tokens is full]", static_cast<long long>(n_ctx));
  const SpeculativeStats& st = decoder.stats();
  const double speculative_ts = seconds > 0 ? generated.size() / seconds : 0.0;
  std::fprintf(stderr,
               "\nprompt: %zu tokens in %.3f s | generation: %zu tokens in %.3f s (%.2f tokens/s)\n"
               "speculative %s (%s, draft-max %lld%s): %lld verifications, acceptance %.1f%% (%lld of %lld drafted), "
               "%.2f tokens per verification, %lld plain steps, %lld tie fallbacks\n",
               prompt.size(), prompt_seconds, generated.size(), seconds, speculative_ts, greedy ? "greedy" : "sampling",
               drafter->name().c_str(),
               static_cast<long long>(*draft_max), so.adaptive ? ", adaptive" : "", static_cast<long long>(st.verifications),
               100.0 * st.acceptance_rate(), static_cast<long long>(st.accepted), static_cast<long long>(st.drafted),
               st.tokens_per_verification(), static_cast<long long>(st.plain_steps), static_cast<long long>(st.tie_fallbacks));
  std::fprintf(stderr, "%s\n", decoder.describe_costs().c_str());
  if (args.has("--draft-compare") && !generated.empty() && !greedy) {
    // Plain sampling of the same number of tokens with the same samplers: speed only (the two
    // outputs are draws from one distribution, not the same tokens).
    Transformer plain(m, plain_options);
    Sampler sampler(sampling, static_cast<int32_t>(m->config().n_vocab));
    Status ps = plain.evaluate(prompt.data(), static_cast<int64_t>(prompt.size()));
    if (!ps) return fail(ps.message());
    Timer plain_timer;
    for (size_t i = 0; i < generated.size(); ++i) {
      const int32_t next = sampler.sample(plain.last_logits());
      if (i + 1 < generated.size()) {
        ps = plain.evaluate(&next, 1);
        if (!ps) return fail(ps.message());
      }
    }
    const double plain_seconds = plain_timer.seconds();
    const double plain_ts = plain_seconds > 0 ? generated.size() / plain_seconds : 0.0;
    std::fprintf(stderr, "plain sampling: %zu tokens in %.3f s (%.2f tokens/s) | speed-up %.2fx\n", generated.size(), plain_seconds,
                 plain_ts, plain_ts > 0 ? speculative_ts / plain_ts : 0.0);
  } else if (compare_greedy && !generated.empty()) {
    // Plain greedy decoding of the same number of tokens: speed and token-for-token equality.
    Transformer plain(m, plain_options);
    double plain_seconds = 0;
    auto reference = greedy_reference(plain, prompt, static_cast<int64_t>(generated.size()), &plain_seconds);
    if (!reference) return fail(reference.status().message());
    const bool same = std::equal(generated.begin(), generated.end(), reference->begin() + static_cast<int64_t>(prompt.size()));
    const double plain_total_seconds = plain_seconds + plain_before_seconds;
    const double plain_ts =
        plain_total_seconds > 0 ? static_cast<double>(generated.size() + plain_before_tokens) / plain_total_seconds : 0.0;
    std::fprintf(stderr, "plain greedy: %zu tokens in %.3f s (%.2f tokens/s; %s) | speed-up %.2fx | outputs identical: %s\n",
                 generated.size() + static_cast<size_t>(plain_before_tokens), plain_total_seconds, plain_ts,
                 plain_before_tokens > 0 ? "timed before and after" : "timed after", plain_ts > 0 ? speculative_ts / plain_ts : 0.0,
                 same ? "yes" : "NO");
    if (!same) {
      const auto diff = std::mismatch(generated.begin(), generated.end(), reference->begin() + static_cast<int64_t>(prompt.size()));
      return fail("speculative output differs from plain greedy decoding at generated token " +
                  std::to_string(diff.first - generated.begin()) + " (" + std::to_string(*diff.first) + " vs " +
                  std::to_string(*diff.second) + ")");
    }
  }
  return 0;
}

}  // namespace

int command_run(const std::vector<std::string>& argv) {
  Command command("run");
  command.model()
      .option("-p,--prompt", "TEXT", "the prompt; escapes (\\n \\t \\\\ \\\" \\xHH) are processed unless --no-escape")
      .option("-f,--file", "FILE", "read the prompt from FILE (- for stdin)")
      .flag("--no-escape", "take -p literally")
      .flag("--no-display-prompt", "do not print the prompt before the continuation")
      .option("-n,--n-predict", "N", "tokens to generate (-1 = until the end of text or the context)", "128")
      .option("-c,--ctx-size", "N", "context size in tokens", "2048")
      .threads()
      .option("--temp", "T", "sampling temperature (0 = greedy)", "0.8")
      .option("--top-k", "K", "keep the K most likely tokens (0 = all)", "40")
      .option("--top-p", "P", "nucleus sampling threshold", "0.95")
      .option("--min-p", "P", "drop tokens below P x the top probability", "0.05")
      .option("--repeat-penalty", "R", "penalty on recently seen tokens (1 = off)", "1.0")
      .option("--repeat-last-n", "N", "tokens the repeat penalty looks back on", "64")
      .option("--seed", "S", "sampling seed (-1 = random)", "-1")
      .flag("--chat", "hold a conversation in the model's chat template (stdin, one line per turn)")
      .option("--system", "TEXT", "system message of the conversation (--chat)")
      .option("--draft", "D", "speculative decoding with DRAFT.gguf, ngram (prompt lookup) or self:N (first N layers): exact greedy with --temp 0, else speculative sampling")
      .option("--draft-max", "K", "most tokens drafted per step", "8")
      .option("--draft-p-min", "P", "stop drafting below this draft probability", "0")
      .option("--draft-tie-margin", "M", "logit margin under which a verification tie falls back to a plain step",
              [] {
                char text[32];
                std::snprintf(text, sizeof text, "%g", SpeculativeOptions{}.tie_margin);
                return std::string(text);
              }())
      .option("--draft-self", "N", "speculative decoding with the target's first N blocks as the draft (= --draft self:N)")
      .flag("--lookup", "speculative decoding with prompt lookup (= --draft ngram)")
      .flag("--draft-fixed", "always draft --draft-max tokens (no cost model: no adaptive length, no switch-off)")
      .flag("--draft-compare", "also run plain greedy decoding and report the speed-up and equality")
      .repeated("--stop", "STR", "stop generating when STR appears (repeatable; not printed)")
      .flag("--ignore-eos", "keep generating past the end-of-text token")
      .cache_flags(true);
  auto args = command.parse(argv);
  if (!args) return fail(args.status().message());
  if (args->help_shown()) return 0;
  const bool chat = args->has("--chat");
  if (args->has("-p") && args->has("-f")) return fail("give the prompt with -p or -f, not both");
  if (!chat && !args->has("-p") && !args->has("-f")) return fail("run needs a prompt: -p TEXT or -f FILE (or --chat)");
  if (args->has("--system") && !chat) return fail("--system applies only with --chat");
  if (args->has("--no-escape") && !args->has("-p")) return fail("--no-escape applies only to -p");
  const bool speculative = args->has("--draft") || args->has("--draft-self") || args->has("--lookup");
  if (!speculative) {
    for (const char* flag : {"--draft-max", "--draft-p-min", "--draft-tie-margin", "--draft-fixed", "--draft-compare"}) {
      if (args->has(flag)) return fail(std::string(flag) + " applies only with --draft");
    }
  }
  std::string prompt_text;
  if (args->has("-f")) {
    auto read = read_text_argument(args->get("-f"));
    if (!read) return fail(read.status().message());
    prompt_text = std::move(*read);
  } else if (args->has("-p")) {
    prompt_text = args->has("--no-escape") ? args->get("-p") : process_escapes(args->get("-p"));
  }
  const bool display_prompt = !args->has("--no-display-prompt");
  auto n_predict = args->get_int("-n", -1, 1 << 24);
  auto n_ctx = args->get_int("-c", 8, 1 << 20);
  auto n_threads = args->get_int("-t", 1, 512);
  auto temp = args->get_float("--temp", 0, 100);
  auto top_k = args->get_int("--top-k", 0, 1 << 24);
  auto top_p = args->get_float("--top-p", 0, 1);
  auto min_p = args->get_float("--min-p", 0, 1);
  auto repeat_penalty = args->get_float("--repeat-penalty", 0.01, 100);
  auto repeat_last_n = args->get_int("--repeat-last-n", 0, 1 << 20);
  auto seed = args->get_int("--seed", -1, INT64_MAX);
  for (const Status* s : {&n_predict.status(), &n_ctx.status(), &n_threads.status(), &temp.status(), &top_k.status(),
                          &top_p.status(), &min_p.status(), &repeat_penalty.status(), &repeat_last_n.status(), &seed.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  warn_threads(*n_threads);
  auto model = Model::load(model_path(*args));
  if (!model) return fail(model.status().message());
  std::shared_ptr<const Model> m = *model;
  // A model or context too large for this machine gets a message, not an OOM kill (issue 14).
  if (Status s = check_context(*m, *n_ctx, std::min<int64_t>(512, *n_ctx)); !s) return fail(s.message());

  TransformerOptions options;
  options.n_ctx = *n_ctx;
  options.n_threads = static_cast<int>(*n_threads);
  options.n_batch = std::min<int64_t>(512, *n_ctx);
  if (Status s = read_cache_flags(*args, options); !s) return fail(s.message());
  if (options.window > 0) options.n_batch = std::min(options.n_batch, options.window - options.sinks);
  if (Status s = check_transformer_options(m->config(), options); !s) return fail(s.message());
  Transformer transformer(m, options);
  SamplerOptions sampling;
  sampling.temperature = static_cast<float>(*temp);
  sampling.top_k = static_cast<int32_t>(*top_k);
  sampling.top_p = static_cast<float>(*top_p);
  sampling.min_p = static_cast<float>(*min_p);
  sampling.repeat_penalty = static_cast<float>(*repeat_penalty);
  sampling.repeat_last_n = static_cast<int32_t>(*repeat_last_n);
  sampling.seed = *seed >= 0 ? static_cast<uint64_t>(*seed) : static_cast<uint64_t>(std::random_device{}());
  Sampler sampler(sampling, static_cast<int32_t>(m->config().n_vocab));
  const int64_t max_new = *n_predict < 0 ? (1 << 30) : *n_predict;
  const Tokenizer& tokenizer = m->tokenizer();
  std::vector<int32_t> history;
  Speed speed;

  // Ctrl-C stops the generation (and, in --chat, the current reply) instead of killing the process.
  install_interrupt_handler();
  GenerateOptions generation;
  generation.max_new = max_new;
  generation.stops = args->get_all("--stop");
  std::erase(generation.stops, std::string());  // an empty stop string would end every reply at once
  generation.ignore_eos = args->has("--ignore-eos");
  if (speculative) {
    if (sampling.temperature > 0 && sampling.repeat_penalty != 1.0f) {
      return fail("--draft with sampling (--temp > 0) does not support --repeat-penalty (use 1, or --temp 0)");
    }
    if (options.window > 0 || options.cache_type_k != KvType::kF16 || options.cache_type_v != KvType::kF16) {
      return fail("--draft runs with the default f16 KV cache and no --window so far");
    }
    if (generation.ignore_eos) return fail("--ignore-eos does not work with --draft");
    std::vector<int32_t> tokens;
    if (!chat) {
      tokens = tokenizer.encode(prompt_text, true, true);
      if (tokens.empty()) return fail("the prompt is empty");
      if (static_cast<int64_t>(tokens.size()) >= *n_ctx) return fail("the prompt does not fit in the context (raise -c)");
    }
    ChatOptions chat_options;
    chat_options.system = args->get("--system");
    chat_options.first_prompt = prompt_text;
    chat_options.generate = generation;
    return run_speculative(*args, m, tokens, !chat && display_prompt ? prompt_text : std::string(), generation,
                           chat ? &chat_options : nullptr, *n_ctx, static_cast<int>(*n_threads), sampling);
  }
  if (!chat) {
    const std::string& prompt = prompt_text;
    std::vector<int32_t> tokens = tokenizer.encode(prompt, true, true);
    if (tokens.empty()) return fail("the prompt is empty");
    // Checked before the prompt is echoed, so a failing run prints only its error.
    if (!transformer.rolling() && static_cast<int64_t>(tokens.size()) > transformer.context_size()) {
      return fail("prompt is " + std::to_string(tokens.size()) + " tokens, longer than the context of " +
                  std::to_string(transformer.context_size()) + " (raise -c)");
    }
    if (display_prompt) std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    StopReason why = StopReason::kLength;
    Status s = generate(transformer, sampler, history, tokens, generation, speed, nullptr, &why);
    if (!s) return fail(s.message());
    if (why == StopReason::kInterrupted) std::fprintf(stderr, "\n[interrupted]");
    if (why == StopReason::kContextFull) {
      std::fprintf(stderr, "\n[context of %lld tokens is full]", static_cast<long long>(transformer.context_size()));
    }
    if (speed.generated_tokens == 0 && why == StopReason::kEndOfText) {
      std::fprintf(stderr, "\n[nothing generated: the model ended the text right after the prompt]");
    }
    print_speed(speed);
    return why == StopReason::kInterrupted ? 130 : 0;
  }

  // Chat (chat_session.cpp): the model's template, slash commands, Ctrl-C, a context that never runs out.
  ChatOptions chat_options;
  chat_options.system = args->get("--system");
  chat_options.first_prompt = prompt_text;
  chat_options.generate = generation;
  return run_chat(*m, transformer, sampler, chat_options);
}

}  // namespace frugal::cli
