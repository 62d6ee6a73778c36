// frugal perplexity: llama-perplexity's method and output ("[i]running", "Final estimate: …").
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/progress.h"
#include "cli_args.h"
#include "commands.h"

namespace frugal::cli {

int command_perplexity(const std::vector<std::string>& argv) {
  Command command("perplexity");
  command.model()
      .option("-f,--file", "FILE", "the text to score (- for stdin)")
      .option("-c,--ctx-size", "N", "tokens per chunk", "512")
      .option("--chunks", "N", "score only the first N chunks (default: all)")
      .threads()
      .option("-o,--output", "FORMAT", "text (llama-perplexity's lines) or json", "text")
      .cache_flags(true)
      .option("--stream-tokens", "N", "with --window: score only the first N tokens (default: all)")
      .option("--stream-batch", "B", "with --window: tokens per forward pass", "1")
      .option("--recompute-stride", "S",
              "with --window: the windowed-recompute baseline instead (each token from the last --window tokens "
              "recomputed from scratch, S tokens scored per recomputation; 1 = exact)")
      .footer("Prints [i]running-PPL per chunk and `Final estimate: PPL = X +/- E` as llama-perplexity does.\n"
              "--window N [--sinks S] scores the whole text as one stream through a rolling KV cache (StreamingLLM).");
  auto args = command.parse(argv);
  if (!args) return fail(args.status().message());
  if (args->help_shown()) return 0;
  if (!args->has("-f")) return fail("perplexity needs a text file: -f FILE");
  auto n_ctx = args->get_int("-c", 8, 1 << 20);
  auto chunks = args->has("--chunks") ? args->get_int("--chunks", 1, INT32_MAX) : Result<int64_t>(int64_t{-1});
  auto n_threads = args->get_int("-t", 1, 512);
  for (const Status* s : {&n_ctx.status(), &chunks.status(), &n_threads.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  const std::string format = args->get("-o");
  if (format != "text" && format != "json") return fail("-o must be text or json, got '" + format + "'");
  const bool json = format == "json";
  if (!args->has("--window")) {
    for (const char* flag : {"--stream-tokens", "--stream-batch", "--sinks", "--recompute-stride"}) {
      if (args->has(flag)) return fail(std::string(flag) + " applies only with --window");
    }
  }
  warn_threads(*n_threads);
  auto read = read_text_argument(args->get("-f"));
  if (!read) return fail(read.status().message());
  const std::string text = std::move(*read);
  if (text.empty()) return fail("'" + args->get("-f") + "' is empty");

  auto model = Model::load(model_path(*args));
  if (!model) return fail(model.status().message());
  std::shared_ptr<const Model> m = *model;
  if (Status s = check_context(*m, *n_ctx, *n_ctx); !s) return fail(s.message());
  Timer timer;
  const std::vector<int32_t> tokens = m->tokenizer().encode(text, true, false);
  std::fprintf(stderr, "tokenized %zu bytes into %zu tokens in %.2f s\n", text.size(), tokens.size(), timer.seconds());

  TransformerOptions options;
  options.n_ctx = *n_ctx;
  options.n_batch = *n_ctx;
  options.n_threads = static_cast<int>(*n_threads);
  options.all_logits = true;
  if (Status s = read_cache_flags(*args, options); !s) return fail(s.message());
  if (Status s = check_transformer_options(m->config(), options); !s) return fail(s.message());
  if (options.window > 0) {
    // --window: one stream through the rolling cache, every token scored (StreamingLLM's setting).
    auto stream_tokens = args->get_int("--stream-tokens", -1, 1, INT64_MAX);
    auto stream_batch = args->get_int("--stream-batch", 1, 1 << 16);
    if (!stream_tokens) return fail(stream_tokens.status().message());
    if (!stream_batch) return fail(stream_batch.status().message());
    const int64_t n = *stream_tokens > 0 ? std::min<int64_t>(*stream_tokens, static_cast<int64_t>(tokens.size()))
                                         : static_cast<int64_t>(tokens.size());
    const bool recompute = args->has("--recompute-stride");
    int64_t stride = 0;
    if (recompute) {
      auto s = args->get_int("--recompute-stride", 1, options.window);
      if (!s) return fail(s.status().message());
      for (const char* flag : {"--stream-batch", "--sinks"}) {
        if (args->has(flag)) return fail(std::string(flag) + " does not apply with --recompute-stride");
      }
      stride = *s;
    }
    const int64_t window = options.window;
    if (recompute) {
      // A plain cache of one window, cleared before every recomputation.
      if (Status s = check_context(*m, window, window); !s) return fail(s.message());
      options.window = 0;
      options.n_ctx = window;
      options.n_batch = window;
    } else {
      options.n_batch = std::min(*stream_batch, options.window - options.sinks);
    }
    Transformer transformer(m, options);
    const int64_t step = recompute ? stride : options.n_batch;
    ProgressBar progress(recompute ? "windowed-recompute perplexity" : "streaming perplexity", (n - 1 + step - 1) / step,
                         "batches");
    auto on_batch = [&](int64_t done, int64_t, double running) {
      char note[48];
      std::snprintf(note, sizeof note, "PPL %.4f", running);
      progress.update(done, note);
    };
    auto result = recompute ? compute_recompute_perplexity(transformer, tokens, n, window, stride, on_batch)
                            : compute_streaming_perplexity(transformer, tokens, n, options.n_batch, on_batch);
    progress.finish();
    if (!result) return fail(result.status().message());
    if (recompute) {
      std::fprintf(stderr, "%lld tokens scored by windowed recompute, window %lld, stride %lld, KV cache %.2f MiB, %.2f s (%.1f tokens/s)\n",
                   static_cast<long long>(result->scored_tokens), static_cast<long long>(window),
                   static_cast<long long>(stride), transformer.kv_cache_bytes() / 1048576.0, result->seconds,
                   result->scored_tokens / result->seconds);
    } else {
      std::fprintf(stderr, "%lld tokens scored in one stream, window %lld, sinks %lld, %lld evicted, KV cache %.2f MiB, %.2f s (%.1f tokens/s)\n",
                   static_cast<long long>(result->scored_tokens), static_cast<long long>(options.window),
                   static_cast<long long>(options.sinks), static_cast<long long>(transformer.evicted()),
                   transformer.kv_cache_bytes() / 1048576.0, result->seconds, result->scored_tokens / result->seconds);
    }
    if (json) {
      // The trace (tokens scored, running PPL, seconds after every batch) is what
      // bench/plot_streaming.py turns into PPL and tokens/s against position.
      nlohmann::json out = {{"model", m->file().path()}, {"text", args->get("-f")}, {"window", window},
                            {"sinks", recompute ? 0 : options.sinks}, {"recompute_stride", stride},
                            {"tokens_scored", result->scored_tokens}, {"ppl", result->ppl},
                            {"ppl_error", result->ppl_error}, {"seconds", result->seconds},
                            {"kv_cache_mib", transformer.kv_cache_bytes() / 1048576.0},
                            {"trace", {{"scored", result->scored_at}, {"running_ppl", result->running_ppl},
                                       {"seconds", result->seconds_at}}}};
      std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      return 0;
    }
    std::printf("Final estimate: PPL = %.4f +/- %.5f\n", result->ppl, result->ppl_error);
    return 0;
  }
  Transformer transformer(m, options);
  PerplexityOptions ppl_options;
  ppl_options.n_ctx = *n_ctx;
  ppl_options.max_chunks = *chunks;
  const int64_t total = std::min<int64_t>(static_cast<int64_t>(tokens.size()) / *n_ctx, *chunks > 0 ? *chunks : INT64_MAX);
  ProgressBar progress("perplexity", total, "chunks");
  std::vector<double> running_ppl;
  auto result = compute_perplexity(transformer, tokens, ppl_options, [&](int64_t done, int64_t, double running) {
    running_ppl.push_back(running);
    if (!json) {
      std::printf("[%lld]%.4f\n", static_cast<long long>(done), running);
      std::fflush(stdout);
    }
    char note[48];
    std::snprintf(note, sizeof note, "PPL %.4f", running);
    progress.update(done, note);
  });
  progress.finish();
  if (!result) return fail(result.status().message());
  std::fprintf(stderr, "%lld chunks of %lld tokens, %lld tokens scored, %.2f s (%.1f tokens/s)\n",
               static_cast<long long>(result->chunks), static_cast<long long>(*n_ctx),
               static_cast<long long>(result->scored_tokens), result->seconds,
               result->chunks * *n_ctx / result->seconds);
  if (json) {
    nlohmann::json out = {{"model", m->file().path()}, {"text", args->get("-f")}, {"ctx", *n_ctx},
                          {"chunks", result->chunks}, {"tokens_scored", result->scored_tokens}, {"ppl", result->ppl},
                          {"ppl_error", result->ppl_error}, {"running_ppl", running_ppl}, {"seconds", result->seconds},
                          {"type_k", kv_type_name(options.cache_type_k)}, {"type_v", kv_type_name(options.cache_type_v)}};
    std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf("Final estimate: PPL = %.4f +/- %.5f\n", result->ppl, result->ppl_error);
  return 0;
}

}  // namespace frugal::cli
