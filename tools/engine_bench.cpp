// engine_bench: aggregate decode throughput of the continuous-batching engine (serve/) at several
// numbers of concurrent sequences, next to the single-sequence Transformer's decode rate, and
// whether every batched sequence produced the same greedy tokens as when run alone.
//
//   build/tools/engine_bench -m MODEL [--clients 1,4,16] [--tokens 64] [--prompt-tokens 32]
//                            [--threads 2] [--text FILE] [--batched-only]
//
// Each client's prompt is a different window of the text (or of random tokens without --text),
// so the prefix cache does not help; every request decodes exactly --tokens tokens greedily.
#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "base/timer.h"
#include "model/model.h"
#include "model/transformer.h"
#include "runtime/sampler.h"
#include "serve/batch_engine.h"

namespace frugal {
namespace {

struct Args {
  std::string model;
  std::vector<int> clients = {1, 4, 16};
  int64_t tokens = 64;
  int64_t prompt_tokens = 32;
  int threads = 2;
  std::string text;
  bool batched_only = false;  // skip the single-stream runs (for profiling the batched step)
};

bool parse(int argc, char** argv, Args& a) {
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "-m" || k == "--model") {
      a.model = value();
    } else if (k == "--clients") {
      a.clients.clear();
      std::stringstream ss(value());
      for (std::string part; std::getline(ss, part, ',');) a.clients.push_back(std::atoi(part.c_str()));
    } else if (k == "--tokens") {
      a.tokens = std::atoll(value().c_str());
    } else if (k == "--prompt-tokens") {
      a.prompt_tokens = std::atoll(value().c_str());
    } else if (k == "-t" || k == "--threads") {
      a.threads = std::atoi(value().c_str());
    } else if (k == "--text") {
      a.text = value();
    } else if (k == "--batched-only") {
      a.batched_only = true;
    } else {
      std::fprintf(stderr, "engine_bench: unknown argument '%s'\n", k.c_str());
      return false;
    }
  }
  if (a.model.empty() || a.clients.empty() || a.tokens < 1 || a.prompt_tokens < 1 || a.threads < 1 ||
      std::any_of(a.clients.begin(), a.clients.end(), [](int c) { return c < 1; })) {
    std::fprintf(stderr, "usage: engine_bench -m MODEL [--clients 1,4,16] [--tokens 64] [--prompt-tokens 32] [--threads 2] [--text FILE] [--batched-only]\n");
    return false;
  }
  return true;
}

// Greedy decode of one prompt with the Transformer; returns the tokens and the decode rate.
std::vector<int32_t> single_stream(const std::shared_ptr<const Model>& model, const std::vector<int32_t>& prompt, int64_t n,
                                   int threads, double& tokens_per_second) {
  TransformerOptions o;
  o.n_ctx = static_cast<int64_t>(prompt.size()) + n + 1;
  o.n_threads = threads;
  Transformer t(model, o);
  SamplerOptions so;
  so.temperature = 0;
  Sampler sampler(so, static_cast<int32_t>(model->config().n_vocab));
  FRUGAL_CHECK(t.evaluate(prompt.data(), static_cast<int64_t>(prompt.size())).is_ok());
  std::vector<int32_t> out;
  Timer timer;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t token = sampler.sample(t.last_logits());
    out.push_back(token);
    if (i + 1 < n) FRUGAL_CHECK(t.evaluate(&token, 1).is_ok());
  }
  tokens_per_second = static_cast<double>(n - 1) / timer.seconds();
  return out;
}

struct Client {
  std::vector<int32_t> tokens;
  double first_token_seconds = -1;
  bool done = false;
};

int run(const Args& a) {
  auto loaded = Model::load(a.model);
  if (!loaded.is_ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", loaded.status().message().c_str());
    return 1;
  }
  std::shared_ptr<const Model> model = loaded.value();
  const int max_clients = *std::max_element(a.clients.begin(), a.clients.end());
  // One prompt window per client.
  std::vector<int32_t> source;
  if (!a.text.empty()) {
    std::ifstream in(a.text);
    std::stringstream ss;
    ss << in.rdbuf();
    source = model->tokenizer().encode(ss.str().substr(0, 200000), false, false);
  }
  const int64_t need = a.prompt_tokens * max_clients;
  if (static_cast<int64_t>(source.size()) < need) {
    std::mt19937 rng(1);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(model->config().n_vocab) - 1);
    source.clear();
    for (int64_t i = 0; i < need; ++i) source.push_back(pick(rng));
  }
  std::vector<std::vector<int32_t>> prompts;
  for (int c = 0; c < max_clients; ++c) {
    prompts.emplace_back(source.begin() + c * a.prompt_tokens, source.begin() + (c + 1) * a.prompt_tokens);
  }

  // Every prompt alone (the reference tokens); the single-stream rate is the median of those runs,
  // which steadies it on a shared machine.
  std::vector<double> rates;
  std::vector<std::vector<int32_t>> alone;
  for (int c = 0; c < (a.batched_only ? 1 : max_clients); ++c) {
    double rate = 0;
    alone.push_back(single_stream(model, prompts[c], a.tokens, a.threads, rate));
    rates.push_back(rate);
  }
  alone.resize(static_cast<size_t>(max_clients));  // --batched-only: the others stay empty (not compared)
  std::sort(rates.begin(), rates.end());
  const double single_rate = rates[rates.size() / 2];
  std::printf("model %s, %d threads, prompts of %lld tokens, %lld generated tokens per request\n", a.model.c_str(), a.threads,
              static_cast<long long>(a.prompt_tokens), static_cast<long long>(a.tokens));
  std::printf("single-stream Transformer decode: %.1f tokens/s (median of %d runs)\n", single_rate, max_clients);
  std::printf("(gen tokens/s: all generated tokens over the wall time from the first submit, prefill included;\n"
              " same as alone: greedy tokens equal to the sequence's single-stream run; first diff: median index of\n"
              " the first differing token among those that differ)\n");
  std::printf("%8s %10s %14s %10s %10s %14s %11s\n", "clients", "wall s", "gen tokens/s", "x single", "TTFT p50", "same as alone",
              "first diff");
  for (int clients : a.clients) {
    serve::BatchEngineOptions o;
    o.n_ctx = a.prompt_tokens + a.tokens + 16;
    o.n_slots = clients;
    o.n_threads = a.threads;
    o.step_tokens = std::max<int64_t>(512, clients);
    auto engine = serve::make_batch_engine(model, o);
    if (!engine.is_ok()) {
      std::fprintf(stderr, "engine_bench: %s\n", engine.status().message().c_str());
      return 1;
    }
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<Client> results(static_cast<size_t>(clients));
    Timer timer;
    for (int c = 0; c < clients; ++c) {
      serve::GenerationRequest r;
      r.prompt = prompts[c];
      r.max_tokens = a.tokens;
      r.sampling.temperature = 0;
      r.ignore_end_of_text = true;
      auto id = engine.value()->submit(std::move(r), [&, c](const serve::TokenEvent& e) {
        std::lock_guard<std::mutex> lock(mutex);
        Client& client = results[c];
        if (e.token >= 0) {
          if (client.tokens.empty()) client.first_token_seconds = timer.seconds();
          client.tokens.push_back(e.token);
        } else {
          client.done = true;
          changed.notify_all();
        }
        return true;
      });
      FRUGAL_CHECK(id.is_ok());
    }
    {
      std::unique_lock<std::mutex> lock(mutex);
      changed.wait(lock, [&] { return std::all_of(results.begin(), results.end(), [](const Client& x) { return x.done; }); });
    }
    const double wall = timer.seconds();
    int64_t generated = 0, same = 0;
    std::vector<double> ttft;
    std::vector<int64_t> first_diff;
    for (int c = 0; c < clients; ++c) {
      const std::vector<int32_t>& got = results[c].tokens;
      generated += static_cast<int64_t>(got.size());
      same += got == alone[c] ? 1 : 0;
      if (got != alone[c]) {
        const auto diff = std::mismatch(got.begin(), got.end(), alone[c].begin(), alone[c].end());
        first_diff.push_back(static_cast<int64_t>(diff.first - got.begin()));
      }
      ttft.push_back(results[c].first_token_seconds);
    }
    std::sort(ttft.begin(), ttft.end());
    std::sort(first_diff.begin(), first_diff.end());
    const double rate = static_cast<double>(generated) / wall;
    std::printf("%8d %10.2f %14.1f %10.2f %10.3f %11lld/%-2d %11s\n", clients, wall, rate, rate / single_rate, ttft[ttft.size() / 2],
                static_cast<long long>(same), clients,
                first_diff.empty() ? "-" : std::to_string(first_diff[first_diff.size() / 2]).c_str());
    std::fflush(stdout);
    engine.value()->shutdown(false);
  }
  return 0;
}

}  // namespace
}  // namespace frugal

int main(int argc, char** argv) {
  frugal::Args args;
  if (!frugal::parse(argc, argv, args)) return 2;
  return frugal::run(args);
}
