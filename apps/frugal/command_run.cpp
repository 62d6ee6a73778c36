// frugal run: stream a continuation of a prompt, or hold a chat (--chat) with the model's template.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>

#include "cli_args.h"
#include "commands.h"
#include "runtime/memory_check.h"

namespace frugal::cli {
namespace {

struct Speed {
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0;
  int64_t generated_tokens = 0;
  double generate_seconds = 0;
};

// Feeds the part of `tokens` the cache does not hold yet (the cache holds `history`), then
// samples up to `max_new` tokens, printing each piece as soon as it is known.
Status generate(Transformer& transformer, Sampler& sampler, std::vector<int32_t>& history,
                const std::vector<int32_t>& tokens, int64_t max_new, Speed& speed, std::string* reply) {
  size_t common = 0;
  while (common < history.size() && common < tokens.size() && history[common] == tokens[common]) ++common;
  if (common == tokens.size() && common > 0) --common;  // re-evaluate one token to get logits
  if (transformer.evicted() > 0 && common < history.size()) {
    // A rolling cache that has dropped tokens no longer maps positions to history indices: only
    // an append continues it; anything else starts over (the window then rolls again).
    common = 0;
    transformer.truncate(0);
  } else if (transformer.evicted() == 0) {
    transformer.truncate(static_cast<int64_t>(common));
  }
  history.resize(common);
  const int64_t fresh = static_cast<int64_t>(tokens.size() - common);
  if (!transformer.rolling() && static_cast<int64_t>(tokens.size()) >= transformer.context_size()) {
    return Status::error("prompt is " + std::to_string(tokens.size()) + " tokens, longer than the context of " +
                         std::to_string(transformer.context_size()) + " (raise -c)");
  }
  Timer timer;
  FRUGAL_RETURN_IF_ERROR(transformer.evaluate(tokens.data() + common, fresh));
  speed.prompt_tokens += fresh;
  speed.prompt_seconds += timer.seconds();
  history.insert(history.end(), tokens.begin() + static_cast<int64_t>(common), tokens.end());
  for (int32_t t : tokens) sampler.accept(t);

  const Tokenizer& tokenizer = transformer.model().tokenizer();
  timer.reset();
  for (int64_t i = 0; i < max_new; ++i) {
    const int32_t next = sampler.sample(transformer.last_logits());
    sampler.accept(next);
    if (tokenizer.is_end_of_generation(next)) break;
    const std::string piece = tokenizer.token_to_piece(next);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    if (reply) *reply += piece;
    ++speed.generated_tokens;
    if (!transformer.rolling() && transformer.position() + 1 >= transformer.context_size()) {
      std::fprintf(stderr, "\n[context of %lld tokens is full]\n", static_cast<long long>(transformer.context_size()));
      break;
    }
    FRUGAL_RETURN_IF_ERROR(transformer.evaluate(&next, 1));
    history.push_back(next);
  }
  speed.generate_seconds += timer.seconds();
  return Status::ok();
}

void print_speed(const Speed& s) {
  std::fprintf(stderr, "\nprompt: %lld tokens in %.3f s (%.2f tokens/s) | generation: %lld tokens in %.3f s (%.2f tokens/s)\n",
               static_cast<long long>(s.prompt_tokens), s.prompt_seconds,
               s.prompt_seconds > 0 ? s.prompt_tokens / s.prompt_seconds : 0.0,
               static_cast<long long>(s.generated_tokens), s.generate_seconds,
               s.generate_seconds > 0 ? s.generated_tokens / s.generate_seconds : 0.0);
}

// Generation with speculative decoding (runtime/speculative.h): --draft MODEL.gguf | ngram |
// self:N (the target's first N blocks); greedy with --temp 0, else speculative sampling with the
// same samplers as plain sampling. Prints the continuation, then acceptance statistics; with
// --draft-compare also plain decoding of the same prompt and its speed, and (greedy) whether the
// two outputs are identical.
int run_speculative(const Args& args, const std::shared_ptr<const Model>& m, const std::vector<int32_t>& prompt, int64_t max_new,
                    int64_t n_ctx, int n_threads, const SamplerOptions& sampling) {
  auto draft_max = args.get_int("--draft-max", 8, 1, kSpeculativeBatch - 1);
  auto p_min = args.get_float("--draft-p-min", 0.5, 0, 1);
  auto tie_margin = args.get_float("--draft-tie-margin", SpeculativeOptions{}.tie_margin, 0, 1e30);
  if (!tie_margin) return fail(tie_margin.status().message());
  if (!draft_max) return fail(draft_max.status().message());
  if (!p_min) return fail(p_min.status().message());
  const std::string spec = args.get("--draft");
  std::unique_ptr<Drafter> drafter;
  ModelDrafterOptions mo;
  mo.n_threads = n_threads;
  mo.n_ctx = n_ctx;
  mo.p_min = static_cast<float>(*p_min);
  if (spec == "ngram") {
    drafter = make_ngram_drafter({});
  } else if (spec.rfind("self:", 0) == 0) {
    try {
      mo.exit_layer = std::stoll(spec.substr(5));
    } catch (...) {
      return fail("--draft self:N needs a layer count, got '" + spec + "'");
    }
    if (mo.exit_layer <= 0) return fail("--draft self:N needs N >= 1, got '" + spec + "'");
    auto d = make_model_drafter(m, *m, mo);
    if (!d) return fail(d.status().message());
    drafter = std::move(*d);
  } else {
    auto draft_model = Model::load(spec);
    if (!draft_model) return fail("draft model: " + draft_model.status().message());
    auto d = make_model_drafter(*draft_model, *m, mo);
    if (!d) return fail(d.status().message());
    drafter = std::move(*d);
  }
  if (static_cast<int64_t>(prompt.size()) >= n_ctx) return fail("the prompt does not fit in the context (raise -c)");
  TransformerOptions options;
  options.n_ctx = n_ctx;
  options.n_threads = n_threads;
  options.n_batch = kSpeculativeBatch;
  options.all_logits = true;
  Transformer target(m, options);
  SpeculativeOptions so;
  so.draft_max = static_cast<int>(*draft_max);
  so.adaptive = !args.has("--draft-fixed");
  so.tie_margin = static_cast<float>(*tie_margin);
  so.sampling = sampling;
  const bool greedy = sampling.temperature <= 0;
  SpeculativeDecoder decoder(target, drafter.get(), so);
  const Tokenizer& tokenizer = m->tokenizer();
  Timer timer;
  Status s = decoder.start(prompt);
  if (!s) return fail(s.message());
  const double prompt_seconds = timer.seconds();
  timer.reset();
  std::vector<int32_t> generated, out;
  bool done = false;
  while (!done && static_cast<int64_t>(generated.size()) < max_new) {
    out.clear();
    if (target.position() + 2 >= n_ctx) break;
    s = decoder.step(out);
    if (!s) return fail(s.message());
    for (int32_t token : out) {
      if (tokenizer.is_end_of_generation(token) || static_cast<int64_t>(generated.size()) >= max_new) {
        done = tokenizer.is_end_of_generation(token);
        break;
      }
      generated.push_back(token);
      const std::string piece = tokenizer.token_to_piece(token);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
    }
    std::fflush(stdout);
  }
  const double seconds = timer.seconds();
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
  if (args.has("--draft-compare") && !generated.empty() && !greedy) {
    // Plain sampling of the same number of tokens with the same samplers: speed only (the two
    // outputs are draws from one distribution, not the same tokens).
    TransformerOptions plain_options = options;
    plain_options.all_logits = false;
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
  } else if (args.has("--draft-compare") && !generated.empty()) {
    // Plain greedy decoding of the same number of tokens: speed and token-for-token equality.
    TransformerOptions plain_options = options;
    plain_options.all_logits = false;
    Transformer plain(m, plain_options);
    double plain_seconds = 0;
    auto reference = greedy_reference(plain, prompt, static_cast<int64_t>(generated.size()), &plain_seconds);
    if (!reference) return fail(reference.status().message());
    const bool same = std::equal(generated.begin(), generated.end(), reference->begin() + static_cast<int64_t>(prompt.size()));
    const double plain_ts = plain_seconds > 0 ? generated.size() / plain_seconds : 0.0;
    std::fprintf(stderr, "plain greedy: %zu tokens in %.3f s (%.2f tokens/s) | speed-up %.2fx | outputs identical: %s\n",
                 generated.size(), plain_seconds, plain_ts, plain_ts > 0 ? speculative_ts / plain_ts : 0.0, same ? "yes" : "NO");
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
  std::set<std::string> with_value = {"-m", "-p", "-n", "-c", "-t", "--temp", "--top-k", "--top-p", "--min-p",
                                      "--repeat-penalty", "--repeat-last-n", "--seed", "--system", "--draft",
                                      "--draft-max", "--draft-p-min", "--draft-tie-margin"};
  std::map<std::string, std::string> aliases = {{"--prompt", "-p"}, {"--threads", "-t"}, {"--ctx-size", "-c"}, {"--model", "-m"}};
  add_cache_flags(with_value, aliases, true);
  auto args = Args::parse(argv, with_value, {"--chat", "--draft-compare", "--draft-fixed"}, aliases);
  if (!args) return fail(args.status().message());
  if (!args->positional().empty()) return fail("unexpected argument '" + args->positional()[0] + "'");
  const bool chat = args->has("--chat");
  if (!chat && !args->has("-p")) return fail("run needs a prompt: -p TEXT (or --chat)");
  auto n_predict = args->get_int("-n", 128, -1, 1 << 24);
  auto n_ctx = args->get_int("-c", 2048, 8, 1 << 20);
  auto n_threads = args->get_int("-t", default_threads(), 1, 512);
  auto temp = args->get_float("--temp", 0.8, 0, 100);
  auto top_k = args->get_int("--top-k", 40, 0, 1 << 24);
  auto top_p = args->get_float("--top-p", 0.95, 0, 1);
  auto min_p = args->get_float("--min-p", 0.05, 0, 1);
  auto repeat_penalty = args->get_float("--repeat-penalty", 1.0, 0.01, 100);
  auto repeat_last_n = args->get_int("--repeat-last-n", 64, 0, 1 << 20);
  auto seed = args->get_int("--seed", -1, -1, INT64_MAX);
  for (const Status* s : {&n_predict.status(), &n_ctx.status(), &n_threads.status(), &temp.status(), &top_k.status(),
                          &top_p.status(), &min_p.status(), &repeat_penalty.status(), &repeat_last_n.status(), &seed.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  auto model = Model::load(model_path(*args));
  if (!model) return fail(model.status().message());
  std::shared_ptr<const Model> m = *model;
  // A model or context too large for this machine gets a message, not an OOM kill (issue 14).
  auto memory = check_memory(*m, *n_ctx, std::min<int64_t>(512, *n_ctx));
  if (!memory) return fail(memory.status().message());
  if (!memory->empty()) std::fprintf(stderr, "frugal: warning: %s\n", memory->c_str());

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

  if (args->has("--draft")) {
    if (chat) return fail("--draft works with -p (not --chat) so far");
    if (sampling.temperature > 0 && sampling.repeat_penalty != 1.0f) {
      return fail("--draft with sampling (--temp > 0) does not support --repeat-penalty (use 1, or --temp 0)");
    }
    if (options.window > 0 || options.cache_type_k != KvType::kF16 || options.cache_type_v != KvType::kF16) {
      return fail("--draft runs with the default f16 KV cache and no --window so far");
    }
    const std::string prompt = args->get("-p");
    std::vector<int32_t> tokens = tokenizer.encode(prompt, true, true);
    if (tokens.empty()) return fail("the prompt is empty");
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    return run_speculative(*args, m, tokens, max_new, *n_ctx, static_cast<int>(*n_threads), sampling);
  }
  if (!chat) {
    const std::string prompt = args->get("-p");
    std::vector<int32_t> tokens = tokenizer.encode(prompt, true, true);
    if (tokens.empty()) return fail("the prompt is empty");
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    Status s = generate(transformer, sampler, history, tokens, max_new, speed, nullptr);
    if (!s) return fail(s.message());
    print_speed(speed);
    return 0;
  }

  // Chat: each turn re-renders the whole conversation; the shared prefix stays in the KV cache.
  std::vector<ChatMessage> messages;
  if (args->has("--system")) messages.push_back({"system", args->get("--system")});
  const bool interactive = isatty(STDIN_FILENO) != 0;
  std::string first = args->get("-p");
  for (;;) {
    std::string user;
    if (!first.empty()) {
      user = first;
      first.clear();
      if (interactive) std::printf("> %s\n", user.c_str());
    } else {
      if (interactive) {
        std::printf("> ");
        std::fflush(stdout);
      }
      if (!std::getline(std::cin, user)) break;
      if (user.empty()) continue;
      if (user == "/exit" || user == "/quit") break;
    }
    messages.push_back({"user", user});
    const std::string prompt = apply_chat_template(m->chat_format(), messages, true);
    std::vector<int32_t> tokens = tokenizer.encode(prompt, true, true);
    std::string reply;
    Status s = generate(transformer, sampler, history, tokens, max_new, speed, &reply);
    if (!s) return fail(s.message());
    std::printf("\n");
    messages.push_back({"assistant", reply});
  }
  print_speed(speed);
  return 0;
}

}  // namespace frugal::cli
