// The drafter flags and `frugal bench --draft`: speculative decoding measured against plain greedy
// decoding on the same prompts, paired (see speculative_cli.h).
#include "speculative_cli.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <nlohmann/json.hpp>

#include "chat_session.h"
#include "commands.h"

namespace frugal::cli {

Result<std::string> draft_spec(const Args& args) {
  std::vector<std::string> given;
  if (args.has("--draft")) given.push_back(args.get("--draft"));
  if (args.has("--draft-self")) given.push_back("self:" + args.get("--draft-self"));
  if (args.has("--lookup")) given.push_back("ngram");
  if (given.size() > 1) return Status::error("give one drafter: --draft, --draft-self or --lookup");
  return given.empty() ? std::string() : given[0];
}

Result<int64_t> self_draft_layers(const std::string& spec) {
  if (spec.rfind("self:", 0) != 0) return int64_t{0};
  int64_t layers = 0;
  try {
    size_t used = 0;
    layers = std::stoll(spec.substr(5), &used);
    if (used != spec.size() - 5) throw std::invalid_argument(spec);
  } catch (...) {
    layers = 0;
  }
  if (layers <= 0) return Status::error("--draft self:N needs a block count N >= 1, got '" + spec + "'");
  return layers;
}

Result<std::unique_ptr<Drafter>> make_drafter(const std::string& spec, const std::shared_ptr<const Model>& target,
                                              const ModelDrafterOptions& options) {
  if (spec == "ngram") return make_ngram_drafter({});
  ModelDrafterOptions mo = options;
  auto layers = self_draft_layers(spec);
  if (!layers) return layers.status();
  if (*layers > 0) {
    mo.exit_layer = *layers;
    return make_model_drafter(target, *target, mo);
  }
  auto draft_model = Model::load(spec);
  if (!draft_model) return Status::error("draft model: " + draft_model.status().message());
  return make_model_drafter(*draft_model, *target, mo);
}

namespace {

// The benchmark's prompts: the same texts as bench/speculative_bench.py.
constexpr const char* kParagraph =
    "The city council met on Tuesday evening to discuss the proposed expansion of the public library. "
    "After two hours of debate, the members voted seven to two in favour of the plan, which adds a new "
    "reading room, a children's section and longer opening hours on weekends. The project will cost "
    "about four million dollars and is expected to be finished by the end of next year.";
constexpr const char* kCode =
    "def total_price(items, tax_rate):\n"
    "    total = 0\n"
    "    for item in items:\n"
    "        total = total + item.price * item.quantity\n"
    "    total = total + total * tax_rate\n"
    "    return total\n";

struct BenchPrompt {
  const char* set;
  const char* name;
  std::string user;
};

std::vector<BenchPrompt> bench_prompts() {
  return {
      {"copy-heavy", "summarize", std::string("Summarize this paragraph in two sentences, reusing its words:\n\n") + kParagraph},
      {"copy-heavy", "rewrite",
       std::string("Rewrite this paragraph in the past perfect tense, changing nothing else:\n\n") + kParagraph},
      {"copy-heavy", "edit-code",
       std::string("Rename the variable `total` to `amount` in this Python function and show the whole function:\n\n") + kCode},
      {"open-ended", "chat", "What are three good habits for staying healthy while working from home?"},
      {"open-ended", "story", "Write a short story about a lighthouse keeper who finds a message in a bottle."},
  };
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

struct PromptResult {
  std::string set, name;
  int64_t prompt_tokens = 0;
  double plain_tps = 0, speculative_tps = 0, speedup = 0;  // medians over repetitions (speed-up: of the pairs)
  double acceptance = 0, accepted_length = 0;
  int64_t drafted = 0, accepted = 0, verifications = 0, plain_steps = 0, switched_off = 0;
  bool identical = true;
  std::string costs;
};

}  // namespace

int bench_speculative(const std::shared_ptr<const Model>& m, const SpeculativeBenchOptions& o) {
  TransformerOptions target_options;
  target_options.n_ctx = 2048;
  target_options.n_threads = o.n_threads;
  target_options.n_batch = kSpeculativeBatch;
  target_options.all_logits = true;
  Transformer target(m, target_options);
  // Plain decoding, the target and the draft take turns on one pool (TransformerOptions::shared_pool).
  TransformerOptions plain_options = target_options;
  plain_options.all_logits = false;
  plain_options.shared_pool = &target.pool();
  Transformer plain(m, plain_options);
  ModelDrafterOptions mo;
  mo.n_threads = o.n_threads;
  mo.shared_pool = &target.pool();
  mo.p_min = o.p_min;
  auto drafter = make_drafter(o.draft, m, mo);
  if (!drafter) return fail(drafter.status().message());
  SpeculativeOptions so;
  so.draft_max = o.draft_max;
  so.adaptive = o.adaptive;

  std::vector<PromptResult> results;
  for (const BenchPrompt& bp : bench_prompts()) {
    const std::string set = bp.set;
    if ((o.prompts == "copy" && set != "copy-heavy") || (o.prompts == "open" && set != "open-ended")) continue;
    auto text = m->chat_template().apply({{"user", bp.user}}, true);
    if (!text) return fail(text.status().message());
    const std::vector<int32_t> prompt = encode_prompt(*m, *text);
    if (static_cast<int64_t>(prompt.size()) + o.n_gen + kSpeculativeBatch >= target_options.n_ctx) {
      return fail("-n " + std::to_string(o.n_gen) + " does not fit the context with the '" + bp.name + "' prompt");
    }
    PromptResult r;
    r.set = set;
    r.name = bp.name;
    r.prompt_tokens = static_cast<int64_t>(prompt.size());
    std::vector<double> plain_tps, spec_tps, speedups;
    for (int rep = 0; rep < o.repetitions; ++rep) {
      double plain_seconds = 0, spec_seconds = 0;
      Result<std::vector<int32_t>> reference = std::vector<int32_t>();
      std::vector<int32_t> generated;
      auto run_plain = [&]() -> Status {
        reference = greedy_reference(plain, prompt, o.n_gen, &plain_seconds);
        return reference.status();
      };
      SpeculativeDecoder decoder(target, drafter->get(), so);
      auto run_spec = [&]() -> Status {
        generated.clear();
        FRUGAL_RETURN_IF_ERROR(decoder.start(prompt));  // the prompt (and the draft's), untimed as plain's
        Timer timer;
        while (static_cast<int64_t>(generated.size()) < o.n_gen) FRUGAL_RETURN_IF_ERROR(decoder.step(generated));
        spec_seconds = timer.seconds();
        generated.resize(static_cast<size_t>(o.n_gen));
        return Status::ok();
      };
      // Alternate which goes first: a load that drifts favours neither.
      for (int part = 0; part < 2; ++part) {
        const Status s = (part == rep % 2) ? run_plain() : run_spec();
        if (!s) return fail(s.message());
      }
      const bool same = std::equal(generated.begin(), generated.end(), reference->begin() + static_cast<int64_t>(prompt.size()));
      r.identical = r.identical && same;
      plain_tps.push_back(o.n_gen / plain_seconds);
      spec_tps.push_back(o.n_gen / spec_seconds);
      speedups.push_back(plain_seconds / spec_seconds);
      const SpeculativeStats& st = decoder.stats();
      r.drafted += st.drafted;
      r.accepted += st.accepted;
      r.verifications += st.verifications;
      r.plain_steps += st.plain_steps;
      r.switched_off += st.switched_off;
      r.costs = decoder.describe_costs();
    }
    r.plain_tps = median(plain_tps);
    r.speculative_tps = median(spec_tps);
    r.speedup = median(speedups);
    r.acceptance = r.drafted > 0 ? static_cast<double>(r.accepted) / r.drafted : 0.0;
    // Tokens per verification: the accepted drafts plus the target's own token.
    r.accepted_length = r.verifications > 0 ? static_cast<double>(r.accepted + r.verifications) / r.verifications : 0.0;
    results.push_back(r);
    if (o.output == "md") {
      std::fprintf(stderr, "%s/%s: plain %.2f t/s, speculative %.2f t/s, x%.2f, acceptance %.2f, %s\n", r.set.c_str(),
                   r.name.c_str(), r.plain_tps, r.speculative_tps, r.speedup, r.acceptance, r.costs.c_str());
    }
  }

  const std::string label = o.draft == "ngram" ? "lookup" : o.draft;
  if (o.output == "md") {
    std::printf("speculative decoding, drafter %s, greedy, %lld tokens, %d threads, draft-max %d%s, %d repetitions (median)\n\n",
                label.c_str(), static_cast<long long>(o.n_gen), o.n_threads, o.draft_max, o.adaptive ? " adaptive" : " fixed",
                o.repetitions);
    std::printf("| set        | prompt    | plain t/s | speculative t/s | speed-up | acceptance | mean accepted length | = plain |\n");
    std::printf("| ---------- | --------- | --------: | --------------: | -------: | ---------: | -------------------: | ------- |\n");
    for (const auto& r : results) {
      std::printf("| %-10s | %-9s | %9.2f | %15.2f | %7.2fx | %10.2f | %20.2f | %-7s |\n", r.set.c_str(), r.name.c_str(), r.plain_tps,
                  r.speculative_tps, r.speedup, r.acceptance, r.accepted_length, r.identical ? "yes" : "NO");
    }
    for (const char* set : {"copy-heavy", "open-ended"}) {
      std::vector<double> s;
      for (const auto& r : results) if (r.set == set) s.push_back(r.speedup);
      if (!s.empty()) std::printf("\n%s: median speed-up %.2fx over %zu prompts", set, median(s), s.size());
    }
    std::printf("\n");
  } else {
    std::vector<nlohmann::ordered_json> records;
    for (const auto& r : results) {
      nlohmann::ordered_json j;
      j["test"] = "speculative";
      j["model_filename"] = m->file().path();
      j["drafter"] = label;
      j["set"] = r.set;
      j["prompt"] = r.name;
      j["n_prompt"] = r.prompt_tokens;
      j["n_gen"] = o.n_gen;
      j["n_threads"] = o.n_threads;
      j["draft_max"] = o.draft_max;
      j["adaptive"] = o.adaptive;
      j["repetitions"] = o.repetitions;
      j["plain_ts"] = r.plain_tps;
      j["speculative_ts"] = r.speculative_tps;
      j["speedup"] = r.speedup;
      j["acceptance"] = r.acceptance;
      j["mean_accepted_length"] = r.accepted_length;
      j["drafted"] = r.drafted;
      j["accepted"] = r.accepted;
      j["verifications"] = r.verifications;
      j["plain_steps"] = r.plain_steps;
      j["switched_off"] = r.switched_off;
      j["identical"] = r.identical;
      j["cost_model"] = r.costs;
      records.push_back(std::move(j));
    }
    if (o.output == "json") {
      std::printf("%s\n", nlohmann::ordered_json(records).dump(2).c_str());
    } else {
      for (const auto& j : records) std::printf("%s\n", j.dump().c_str());
    }
  }
  for (const auto& r : results) {
    if (!r.identical) return fail("speculative output differed from plain greedy decoding on '" + r.name + "'");
  }
  return 0;
}

}  // namespace frugal::cli
