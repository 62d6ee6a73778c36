// frugal perplexity: llama-perplexity's method and output ("[i]running", "Final estimate: …").
#include <cstdio>
#include <fstream>
#include <sstream>

#include "base/progress.h"
#include "cli_args.h"
#include "commands.h"

namespace frugal::cli {

int command_perplexity(const std::vector<std::string>& argv) {
  std::set<std::string> with_value = {"-m", "-f", "-c", "-t", "--chunks", "--stream-tokens", "--stream-batch"};
  std::map<std::string, std::string> aliases = {{"--file", "-f"}, {"--threads", "-t"}, {"--ctx-size", "-c"}, {"--model", "-m"}};
  add_cache_flags(with_value, aliases, true);
  auto args = Args::parse(argv, with_value, {}, aliases);
  if (!args) return fail(args.status().message());
  if (!args->positional().empty()) return fail("unexpected argument '" + args->positional()[0] + "'");
  if (!args->has("-f")) return fail("perplexity needs a text file: -f FILE");
  auto n_ctx = args->get_int("-c", 512, 8, 1 << 20);
  auto chunks = args->get_int("--chunks", -1, -1, INT32_MAX);
  auto n_threads = args->get_int("-t", default_threads(), 1, 512);
  for (const Status* s : {&n_ctx.status(), &chunks.status(), &n_threads.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  std::ifstream in(args->get("-f"), std::ios::binary);
  if (!in) return fail("cannot open '" + args->get("-f") + "'");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  if (text.empty()) return fail("'" + args->get("-f") + "' is empty");

  auto model = Model::load(model_path(*args));
  if (!model) return fail(model.status().message());
  std::shared_ptr<const Model> m = *model;
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
    auto stream_tokens = args->get_int("--stream-tokens", -1, -1, INT64_MAX);
    auto stream_batch = args->get_int("--stream-batch", 1, 1, 1 << 16);
    if (!stream_tokens) return fail(stream_tokens.status().message());
    if (!stream_batch) return fail(stream_batch.status().message());
    options.n_batch = std::min(*stream_batch, options.window - options.sinks);
    Transformer transformer(m, options);
    const int64_t n = *stream_tokens > 0 ? std::min<int64_t>(*stream_tokens, static_cast<int64_t>(tokens.size()))
                                         : static_cast<int64_t>(tokens.size());
    ProgressBar progress("streaming perplexity", (n - 1 + options.n_batch - 1) / options.n_batch, "batches");
    auto result = compute_streaming_perplexity(transformer, tokens, n, options.n_batch,
                                               [&](int64_t done, int64_t, double running) {
                                                 char note[48];
                                                 std::snprintf(note, sizeof note, "PPL %.4f", running);
                                                 progress.update(done, note);
                                               });
    progress.finish();
    if (!result) return fail(result.status().message());
    std::fprintf(stderr, "%lld tokens scored in one stream, window %lld, sinks %lld, %lld evicted, KV cache %.2f MiB, %.2f s (%.1f tokens/s)\n",
                 static_cast<long long>(result->scored_tokens), static_cast<long long>(options.window),
                 static_cast<long long>(options.sinks), static_cast<long long>(transformer.evicted()),
                 transformer.kv_cache_bytes() / 1048576.0, result->seconds, result->scored_tokens / result->seconds);
    std::printf("Final estimate: PPL = %.4f +/- %.5f\n", result->ppl, result->ppl_error);
    return 0;
  }
  Transformer transformer(m, options);
  PerplexityOptions ppl_options;
  ppl_options.n_ctx = *n_ctx;
  ppl_options.max_chunks = *chunks;
  const int64_t total = std::min<int64_t>(static_cast<int64_t>(tokens.size()) / *n_ctx, *chunks > 0 ? *chunks : INT64_MAX);
  ProgressBar progress("perplexity", total, "chunks");
  auto result = compute_perplexity(transformer, tokens, ppl_options, [&](int64_t done, int64_t, double running) {
    std::printf("[%lld]%.4f\n", static_cast<long long>(done), running);
    std::fflush(stdout);
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
  std::printf("Final estimate: PPL = %.4f +/- %.5f\n", result->ppl, result->ppl_error);
  return 0;
}

}  // namespace frugal::cli
