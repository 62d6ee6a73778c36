// frugal serve: an OpenAI-compatible HTTP server (src/serve/http_server.h) in front of the
// continuous-batching engine (src/serve/batch_engine.h); SIGINT/SIGTERM drain and stop it.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "cli_args.h"
#include "commands.h"
#include "runtime/memory_check.h"
#include "speculative_cli.h"
#include "serve/http_server.h"
#if __has_include("serve/batch_engine.h")
#include "serve/batch_engine.h"
#define FRUGAL_HAVE_BATCH_ENGINE 1
#endif

namespace frugal::cli {

int command_serve(const std::vector<std::string>& argv) {
  Command command("serve");
  command.model()
      .option("--host", "ADDR", "address to listen on (anything but loopback wants --api-key)", "127.0.0.1")
      .option("--port", "N", "TCP port (0: any free port, printed at start)", "8080")
      .option("-np,--parallel", "SLOTS", "sequences decoded together (continuous batching)", "4")
      .option("-c,--ctx-size", "N", "context of each sequence in tokens (llama-server's -c is the total)", "4096")
      .threads()
      .option("--api-key", "KEY", "require 'Authorization: Bearer KEY' on every API request")
      .option("--alias", "NAME", "model name in /v1/models and answers (default: the file's stem)")
      .option("--kv-blocks", "N", "KV pool size in blocks of 16 tokens (0: SLOTS x CTX / 16)", "0")
      .option("--max-queue", "N", "requests waiting beyond the slots before answering 429", "256")
      .option("--http-threads", "N", "HTTP worker threads (each open stream holds one)", "128")
      .option("--step-tokens", "N", "tokens per batched forward step (decode tokens + prompt chunks)", "512")
      .flag("--no-prefix-cache", "do not share KV blocks of identical prompt prefixes")
      .option("--lookup", "N", "prompt-lookup speculative decoding: up to N draft tokens per step (0-16; a request's \"lookup\" field overrides; exact greedy, or speculative sampling unless the request sets a seed)", "0")
      .option("--draft", "D", "speculative decoding with a draft model: DRAFT.gguf (same vocabulary) or self:N (the model's first N blocks); greedy and sampled requests, as --lookup")
      .option("--draft-max", "K", "draft-model tokens per step (1-16)", "8")
      .option("--draft-p-min", "P", "stop drafting where the draft's top probability falls below P", "0")
      .option("--draft-sequences", "N", "use the draft model only while at most N sequences are decoding (it drafts one sequence at a time)", "1")
      .flag("--no-preempt", "reserve prompt + max_tokens blocks at admission instead of preempting (recomputing) the newest sequence when the KV pool runs dry")
      .cache_flags(false)
      .footer("Endpoints: POST /v1/chat/completions, /v1/completions (\"stream\": true for Server-Sent Events), "
              "GET /v1/models, /health, /metrics; POST /tokenize, /detokenize; the chat page at /.");
  auto args = command.parse(argv);
  if (!args) return fail(args.status().message());
  if (args->help_shown()) return 0;
  auto port = args->get_int("--port", 0, 65535);
  auto slots = args->get_int("-np", 1, 4096);
  auto n_ctx = args->get_int("-c", 16, 1 << 20);
  auto n_threads = args->get_int("-t", 1, 512);
  auto kv_blocks = args->get_int("--kv-blocks", 0, int64_t{1} << 32);
  auto lookup = args->get_int("--lookup", 0, 16);
  auto max_queue = args->get_int("--max-queue", 0, 1 << 20);
  auto http_threads = args->get_int("--http-threads", 4, 4096);
  auto step_tokens = args->get_int("--step-tokens", 1, 1 << 20);
  auto draft_max = args->get_int("--draft-max", 1, 16);
  auto draft_sequences = args->get_int("--draft-sequences", 1, 4096);
  auto draft_p_min = args->get_float("--draft-p-min", 0, 1);
  for (const Status* s : {&port.status(), &slots.status(), &n_ctx.status(), &n_threads.status(), &kv_blocks.status(), &lookup.status(),
                          &max_queue.status(), &http_threads.status(), &step_tokens.status(), &draft_max.status(),
                          &draft_sequences.status(), &draft_p_min.status()}) {
    if (!s->is_ok()) return fail(s->message());
  }
  TransformerOptions cache;
  if (Status s = read_cache_flags(*args, cache); !s) return fail(s.message());

  const std::string path = model_path(*args);
  auto model = Model::load(path);
  if (!model) return fail(model.status().message());
  std::shared_ptr<const Model> m = *model;
  auto memory = check_memory(*m, *n_ctx * *slots, std::min<int64_t>(*step_tokens, *n_ctx));
  if (!memory) return fail(memory.status().message());
  if (!memory->empty()) std::fprintf(stderr, "frugal: warning: %s\n", memory->c_str());
  // --draft: a model file (loaded here, its vocabulary checked by the engine) or self:N.
  std::shared_ptr<const Model> draft_model;
  int64_t draft_exit_layer = 0;
  if (args->has("--draft")) {
    const std::string spec = args->get("--draft");
    auto layers = self_draft_layers(spec);
    if (!layers) return fail(layers.status().message());
    draft_exit_layer = *layers;
    if (draft_exit_layer > 0) {
      draft_model = m;
    } else {
      auto loaded = Model::load(spec);
      if (!loaded) return fail("draft model: " + loaded.status().message());
      draft_model = *loaded;
    }
  } else {
    for (const char* flag : {"--draft-max", "--draft-sequences", "--draft-p-min"}) {
      if (args->has(flag)) return fail(std::string(flag) + " applies only with --draft");
    }
  }

  // SIGINT/SIGTERM are blocked in every thread (the engine's and the HTTP workers inherit the
  // mask) and taken by one watcher thread, which stops the server gracefully.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A client that hangs up mid-write must not kill the server: writes then fail with EPIPE.
  signal(SIGPIPE, SIG_IGN);

#ifdef FRUGAL_HAVE_BATCH_ENGINE
  serve::BatchEngineOptions engine_options;
  engine_options.n_ctx = *n_ctx;
  engine_options.n_slots = static_cast<int>(*slots);
  engine_options.kv_blocks = *kv_blocks;
  engine_options.step_tokens = *step_tokens;
  engine_options.max_queue = *max_queue;
  engine_options.n_threads = static_cast<int>(*n_threads);
  engine_options.cache_type_k = cache.cache_type_k;
  engine_options.cache_type_v = cache.cache_type_v;
  engine_options.prefix_cache = !args->has("--no-prefix-cache");
  engine_options.preempt = !args->has("--no-preempt");
  engine_options.lookup_draft = static_cast<int>(*lookup);
  engine_options.draft_model = draft_model;
  engine_options.draft_exit_layer = draft_exit_layer;
  engine_options.draft_model_max = static_cast<int>(*draft_max);
  engine_options.draft_model_sequences = static_cast<int>(*draft_sequences);
  engine_options.draft_p_min = static_cast<float>(*draft_p_min);
  engine_options.kv_rotation = cache.kv_rotation;
  auto engine = serve::make_batch_engine(m, engine_options);
  if (!engine) return fail(engine.status().message());
  std::shared_ptr<serve::Engine> shared_engine = std::move(*engine);
#else
  return fail("this build has no serving engine yet (src/serve/batch_engine.h is missing)");
  std::shared_ptr<serve::Engine> shared_engine;
#endif

  serve::HttpServerOptions options;
  options.host = args->get("--host");
  options.port = static_cast<int>(*port);
  options.api_key = args->get("--api-key");
  options.http_threads = static_cast<int>(*http_threads);
  options.model_name = args->has("--alias") ? args->get("--alias") : std::filesystem::path(path).stem().string();
  if (options.api_key.empty() && options.host != "127.0.0.1" && options.host != "localhost" && options.host != "::1") {
    std::fprintf(stderr, "frugal: warning: listening on %s without --api-key: anyone who reaches this address can use the model\n",
                 options.host.c_str());
  }
  serve::HttpServer server(shared_engine, serve::make_text_model(m), options);
  if (Status s = server.bind(); !s) {
    shared_engine->shutdown(false);
    return fail(s.message());
  }
  std::atomic<bool> finished{false};
  std::thread watcher([&] {
    const timespec tick{0, 200 * 1000 * 1000};
    while (!finished.load()) {
      const int signal_number = sigtimedwait(&stop_signals, nullptr, &tick);
      if (signal_number == SIGINT || signal_number == SIGTERM) {
        std::fprintf(stderr, "frugal serve: %s received, finishing the running requests\n",
                     signal_number == SIGINT ? "SIGINT" : "SIGTERM");
        server.stop(true);
        return;
      }
    }
  });
  std::fprintf(stderr, "frugal serve: %s on http://%s:%d/ (%lld slots, context %lld, %lld threads%s)\n",
               options.model_name.c_str(), options.host.c_str(), server.port(), static_cast<long long>(*slots),
               static_cast<long long>(*n_ctx), static_cast<long long>(*n_threads),
               options.api_key.empty() ? "" : ", API key required");
  std::fflush(stderr);
  const bool ok = server.run();
  finished = true;
  watcher.join();
  server.stop(true);
  std::fprintf(stderr, "frugal serve: stopped\n");
  return ok ? 0 : fail("the HTTP server stopped with an error");
}

}  // namespace frugal::cli
