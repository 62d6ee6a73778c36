// The frugal command line (issue 15): -h/--help of every command, --version, -p escapes, flags that
// do not apply, warnings, presets against llama-quantize, -o json/csv, temp files after SIGINT.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/gguf.h"
#include "support/test_support.h"

namespace frugal {
namespace {

using testing::run_command;
using testing::shell_quote;

std::string frugal() { return shell_quote(testing::frugal_binary()); }

// A clean refusal: exit code 1, one line "frugal: error: ...", containing `expected`.
void expect_refused(const std::string& args, const std::string& expected) {
  const auto r = run_command("timeout 60 " + frugal() + " " + args);
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
  EXPECT_EQ(r.err.rfind("frugal: error: ", 0), 0u) << args << "\n" << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\none line expected: " << r.err;
  EXPECT_NE(r.err.find(expected), std::string::npos) << args << "\nexpected '" << expected << "' in: " << r.err;
  EXPECT_TRUE(r.out.empty()) << args << "\nnothing on stdout when refused: " << r.out;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir();
    model_ = dir_ + "/tiny.gguf";
    ASSERT_TRUE(testing::write_tiny_model(model_, {}).is_ok());
    text_ = dir_ + "/text.txt";
    std::ofstream(text_) << std::string(40, 'a') + " the cat sat on the mat. " + std::string(600, 'b');
  }
  std::string dir_, model_, text_;
};

const char* const kCommands[] = {"info", "run", "tokenize", "perplexity", "eval", "quantize", "prune", "methods", "bench"};

TEST(CliHelp, EveryCommandHasHelpFromItsDeclaration) {
  const auto global = run_command(frugal() + " --help");
  ASSERT_EQ(global.exit_code, 0);
  for (const char* command : kCommands) {
    // The global usage lists every command on its own line.
    EXPECT_NE(global.out.find(std::string("\n  ") + command + " "), std::string::npos) << command << "\n" << global.out;
    for (const char* flag : {" --help", " -h"}) {
      const auto r = run_command(frugal() + " " + command + flag);
      EXPECT_EQ(r.exit_code, 0) << command << flag << "\n" << r.err;
      EXPECT_NE(r.out.find(std::string("Usage: frugal ") + command), std::string::npos) << r.out;
      EXPECT_TRUE(r.err.empty()) << r.err;
    }
  }
  // Defaults are shown, and they are the ones the command uses.
  const auto run = run_command(frugal() + " run --help");
  for (const char* line : {"-n,--n-predict N", "(default: 128)", "--temp T", "(default: 0.8)", "-ctk", "--no-escape", "-f,--file FILE"}) {
    EXPECT_NE(run.out.find(line), std::string::npos) << line << "\n" << run.out;
  }
  const auto quantize = run_command(frugal() + " quantize --help");
  for (const char* line : {"--preset TYPE", "Q4_K_M", "--types-from", "--group-fallback", "--alpha", "--threshold", "smoothquant"}) {
    EXPECT_NE(quantize.out.find(line), std::string::npos) << line << "\n" << quantize.out;
  }
}

TEST(CliHelp, Version) {
  const auto r = run_command(frugal() + " --version");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("frugal 0.", 0), 0u) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
}

TEST_F(Cli, PromptEscapesAsLlamaCpp) {
  auto ids = [&](const std::string& args) {
    const auto r = run_command(frugal() + " tokenize " + shell_quote(model_) + " --ids --no-bos " + args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.err;
    return r.out;
  };
  // -p 'a\nb\x41\t\\"' is the text a, newline, b, A, tab, backslash, quote; an unknown escape stays.
  std::ofstream(dir_ + "/escaped.txt") << "a\nbA\t\\\" \\q";
  EXPECT_EQ(ids("-p " + shell_quote("a\\nb\\x41\\t\\\\\\\" \\q")), ids("-f " + shell_quote(dir_ + "/escaped.txt")));
  std::ofstream(dir_ + "/literal.txt") << "a\\nb";
  EXPECT_EQ(ids("--no-escape -p " + shell_quote("a\\nb")), ids("-f " + shell_quote(dir_ + "/literal.txt")));
  EXPECT_NE(ids("--no-escape -p " + shell_quote("a\\nb")), ids("-p " + shell_quote("a\\nb")));
  // -f - reads stdin.
  const auto stdin_ids = run_command("(printf 'a\\nbA' | " + frugal() + " tokenize " + shell_quote(model_) + " --ids --no-bos -f -)");
  EXPECT_EQ(stdin_ids.out, ids("-p " + shell_quote("a\\nb\\x41")));
}

TEST_F(Cli, RunPromptFromFileAndNoDisplayPrompt) {
  std::ofstream(dir_ + "/prompt.txt") << "the cat";
  const std::string base = frugal() + " run " + shell_quote(model_) + " -n 3 --temp 0 -t 1";
  const auto shown = run_command(base + " -f " + shell_quote(dir_ + "/prompt.txt"));
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_EQ(shown.out.rfind("the cat", 0), 0u) << shown.out;
  const auto hidden = run_command(base + " -p 'the cat' --no-display-prompt");
  ASSERT_EQ(hidden.exit_code, 0) << hidden.err;
  EXPECT_EQ(shown.out.substr(7), hidden.out);
}

TEST_F(Cli, FlagsThatDoNotApplyAreRefused) {
  const std::string m = shell_quote(model_), out = shell_quote(dir_ + "/out.gguf");
  expect_refused("quantize " + m + " -o " + out + " --format q8_0 --bits 3", "--bits 3 does not apply with --format q8_0");
  expect_refused("quantize " + m + " -o " + out + " --act-order", "--act-order applies only to --method gptq");
  expect_refused("quantize " + m + " -o " + out + " Q4_K_M --group 64", "--group 64 does not apply with --preset Q4_K_M");
  expect_refused("quantize " + m + " -o " + out + " --method llm-int8 --alpha 0.3", "--alpha applies only to --method smoothquant");
  expect_refused("quantize " + m + " -o " + out + " IQ2_XS", "unknown preset 'IQ2_XS'");
  expect_refused("quantize " + m + " -o " + shell_quote(dir_ + "/no/such/dir/out.gguf"), "output directory");
  expect_refused("run " + m + " -p hi --system 'be brief'", "--system applies only with --chat");
  expect_refused("run " + m + " -p hi --draft-max 4", "--draft-max applies only with --draft");
  expect_refused("run " + m + " -p hi -f " + shell_quote(text_), "not both");
  expect_refused("perplexity " + m + " -f " + shell_quote(text_) + " --chunks 0", "--chunks must be between 1");
  expect_refused("perplexity " + m + " -f " + shell_quote(text_) + " --chunks -2", "--chunks must be between 1");
  expect_refused("perplexity " + m + " -f " + shell_quote(text_) + " --stream-batch 4", "--stream-batch applies only with --window");
  expect_refused("eval " + m + " --chunks 0", "--chunks must be between 1");
  expect_refused("prune " + m + " -o " + out + " --method wanda --sparsity 0.5 --damp 0.2", "--damp applies only to --method sparsegpt");
  expect_refused("run " + m + " -p hi --bogus 1", "unknown flag --bogus (see frugal run --help)");
  expect_refused("run " + m + " -p", "-p");
  expect_refused("info " + m + " extra", "unexpected argument 'extra'");
  expect_refused("info -m " + m + " " + m, "unexpected argument");
  expect_refused("bench " + m + " -p 8,x", "-p expects integers separated by commas");
  expect_refused("bench " + m + " -o xml", "-o must be md, csv, json or jsonl");
  EXPECT_FALSE(testing::file_exists(dir_ + "/out.gguf"));
}

TEST_F(Cli, ModelIsPositionalEverywhere) {
  const std::string m = shell_quote(model_);
  EXPECT_EQ(run_command(frugal() + " info " + m).exit_code, 0);
  EXPECT_EQ(run_command(frugal() + " tokenize " + m + " -p hi").exit_code, 0);
  EXPECT_EQ(run_command(frugal() + " run " + m + " -p hi -n 1 -t 1").exit_code, 0);
  EXPECT_EQ(run_command(frugal() + " perplexity " + m + " -f " + shell_quote(text_) + " -c 64 --chunks 1 -t 1").exit_code, 0);
  const auto q = run_command(frugal() + " quantize " + m + " Q8_0 -o " + shell_quote(dir_ + "/q8.gguf"));
  EXPECT_EQ(q.exit_code, 0) << q.err;
  // A preset with a calibrated method needs no reference file.
  const auto awq = run_command(frugal() + " quantize " + m + " Q4_K_M --method awq --calib " + shell_quote(text_) +
                               " --calib-tokens 64 -t 1 -o " + shell_quote(dir_ + "/awq.gguf"));
  EXPECT_EQ(awq.exit_code, 0) << awq.err;
  EXPECT_NE(awq.err.find("llama-quantize preset Q4_K_M"), std::string::npos) << awq.err;
  // -m with a positional TYPE (llama-quantize's order without the output).
  const auto q2 = run_command(frugal() + " quantize -m " + m + " q4_0 -o " + shell_quote(dir_ + "/q4.gguf"));
  EXPECT_EQ(q2.exit_code, 0) << q2.err;
}

TEST_F(Cli, WarningsAndMemoryRefusal) {
  const std::string base = frugal() + " run " + shell_quote(model_) + " -p hi -n 1 --temp 0";
  const auto threads = run_command(base + " -t 500");
  EXPECT_EQ(threads.exit_code, 0) << threads.err;
  EXPECT_NE(threads.err.find("frugal: warning: -t 500 is more than the"), std::string::npos) << threads.err;
  // The tiny model was trained on 256 positions.
  const auto context = run_command(base + " -t 1 -c 1024");
  EXPECT_EQ(context.exit_code, 0) << context.err;
  EXPECT_NE(context.err.find("more than the 256 positions"), std::string::npos) << context.err;
  // A context the memory cannot hold is refused with a message, not std::bad_alloc.
  const auto memory = run_command("FRUGAL_AVAILABLE_MEMORY=1000000 " + base + " -t 1 -c 100000");
  EXPECT_EQ(memory.exit_code, 1);
  EXPECT_NE(memory.err.find("not enough memory"), std::string::npos) << memory.err;
  const auto ppl = run_command("FRUGAL_AVAILABLE_MEMORY=1000000 " + frugal() + " perplexity " + shell_quote(model_) + " -f " +
                               shell_quote(text_) + " -c 100000");
  EXPECT_EQ(ppl.exit_code, 1);
  EXPECT_NE(ppl.err.find("not enough memory"), std::string::npos) << ppl.err;
}

TEST_F(Cli, PromptExactlyAsLongAsTheContext) {
  // "abababab…" tokenizes to a known count; -c that count is accepted, one less is refused with
  // nothing echoed.
  std::string prompt;
  for (int i = 0; i < 20; ++i) prompt += "the cat ";
  const auto ids = run_command(frugal() + " tokenize " + shell_quote(model_) + " --ids -p " + shell_quote(prompt));
  ASSERT_EQ(ids.exit_code, 0);
  const int64_t n = std::count(ids.out.begin(), ids.out.end(), ',') + 1;
  ASSERT_GE(n, 9);
  const std::string base = frugal() + " run " + shell_quote(model_) + " -t 1 --temp 0 -n 4 -p " + shell_quote(prompt);
  const auto exact = run_command(base + " -c " + std::to_string(n));
  EXPECT_EQ(exact.exit_code, 0) << exact.err;
  EXPECT_EQ(exact.out.rfind(prompt, 0), 0u);
  const auto longer = run_command(base + " -c " + std::to_string(n - 1));
  EXPECT_EQ(longer.exit_code, 1);
  EXPECT_NE(longer.err.find("longer than the context"), std::string::npos) << longer.err;
  EXPECT_TRUE(longer.out.empty()) << longer.out;
}

TEST_F(Cli, JsonAndCsvOutputsParse) {
  const std::string m = shell_quote(model_);
  const auto ppl = run_command(frugal() + " perplexity " + m + " -f " + shell_quote(text_) + " -c 64 --chunks 2 -t 1 -o json");
  ASSERT_EQ(ppl.exit_code, 0) << ppl.err;
  const auto p = nlohmann::json::parse(ppl.out);
  EXPECT_EQ(p.at("chunks").get<int64_t>(), 2);
  EXPECT_GT(p.at("ppl").get<double>(), 1.0);
  EXPECT_EQ(p.at("running_ppl").size(), 2u);

  const auto info = run_command(frugal() + " info " + m + " -o json");
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const auto i = nlohmann::json::parse(info.out);
  EXPECT_EQ(i.at("architecture").get<std::string>(), "llama");
  EXPECT_EQ(i.at("layers").get<int64_t>(), 2);
  EXPECT_EQ(i.at("context_train").get<int64_t>(), 256);
  EXPECT_GT(i.at("parameters").get<int64_t>(), 0);

  const auto bench = run_command(frugal() + " bench " + m + " -p 8,16 -n 4 -r 1 -t 1 -o json");
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  const auto b = nlohmann::json::parse(bench.out);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].at("n_prompt").get<int64_t>(), 8);
  EXPECT_EQ(b[1].at("n_prompt").get<int64_t>(), 16);
  EXPECT_EQ(b[2].at("n_gen").get<int64_t>(), 4);
  EXPECT_GT(b[2].at("avg_ts").get<double>(), 0.0);

  const auto csv = run_command(frugal() + " bench " + m + " -p 8 -n 2,4 -r 1 -t 1 -o csv");
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  std::istringstream lines(csv.out);
  std::string header, line;
  std::getline(lines, header);
  EXPECT_EQ(header.rfind("build_commit,", 0), 0u) << header;
  const auto columns = std::count(header.begin(), header.end(), ',');
  int rows = 0;
  while (std::getline(lines, line)) {
    EXPECT_EQ(std::count(line.begin(), line.end(), ','), columns) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 3);
}

TEST_F(Cli, EvalRunsTasksOnlyWhenAsked) {
  const auto r = run_command(frugal() + " eval " + shell_quote(model_) + " -f " + shell_quote(text_) + " -c 64 --chunks 1 -t 1 -o json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_FALSE(j.contains("hellaswag_acc"));
  EXPECT_FALSE(j.contains("sst2_acc"));
  EXPECT_TRUE(j.contains("ppl"));
}

// --save-base once, then --base-logits: the same comparison without running the base again.
TEST_F(Cli, EvalReusesSavedBaseLogits) {
  testing::TinyModelOptions o;
  o.seed = 7;
  const std::string other = dir_ + "/other.gguf", saved = dir_ + "/base.bin";
  ASSERT_TRUE(testing::write_tiny_model(other, o).is_ok());
  const std::string common = " -f " + shell_quote(text_) + " -c 64 --chunks 3 -t 1 -o json";
  const auto live = run_command(frugal() + " eval " + shell_quote(model_) + " --base " + shell_quote(other) + " --save-base " +
                                shell_quote(saved) + common);
  ASSERT_EQ(live.exit_code, 0) << live.err;
  ASSERT_TRUE(testing::file_exists(saved));
  const auto reused = run_command(frugal() + " eval " + shell_quote(model_) + " --base-logits " + shell_quote(saved) + common);
  ASSERT_EQ(reused.exit_code, 0) << reused.err;
  const auto a = nlohmann::json::parse(live.out), b = nlohmann::json::parse(reused.out);
  EXPECT_EQ(a.at("ppl").get<double>(), b.at("ppl").get<double>());
  EXPECT_EQ(a.at("same_top_pct").get<double>(), b.at("same_top_pct").get<double>());
  EXPECT_EQ(a.at("tokens").get<int64_t>(), b.at("tokens").get<int64_t>());
  EXPECT_GT(a.at("kld_mean").get<double>(), 1e-3);  // two different random models
  // 16-bit log-probabilities: the KL divergence and base PPL agree to well under 0.1%.
  EXPECT_NEAR(b.at("kld_mean").get<double>(), a.at("kld_mean").get<double>(), 1e-3 * a.at("kld_mean").get<double>());
  EXPECT_NEAR(b.at("base_ppl").get<double>(), a.at("base_ppl").get<double>(), 1e-3 * a.at("base_ppl").get<double>());
  // A file for another context or more chunks than it holds is refused.
  expect_refused("eval " + shell_quote(model_) + " --base-logits " + shell_quote(saved) + " -f " + shell_quote(text_) + " -c 32 --chunks 3",
                 "saved with -c 64");
  expect_refused("eval " + shell_quote(model_) + " --base-logits " + shell_quote(saved) + " -f " + shell_quote(text_) + " -c 64 --chunks 9",
                 "holds 3 chunks");
  expect_refused("eval " + shell_quote(model_) + " --save-base " + shell_quote(saved) + common, "--save-base needs --base");
}

TEST_F(Cli, InterruptedQuantizeLeavesNoTemporaryFile) {
  // A model large enough that quantizing it takes a while; SIGINT arrives while NAME.tmp-PID exists.
  testing::TinyModelOptions o;
  o.n_embd = 512;
  o.n_ff = 2048;
  o.n_layer = 8;
  o.n_head = 8;
  o.n_head_kv = 8;
  const std::string big = dir_ + "/big.gguf", out = dir_ + "/big-q.gguf";
  ASSERT_TRUE(testing::write_tiny_model(big, o).is_ok());
  // Ctrl-C, a closed terminal, and a closed pipe on stdout (`frugal quantize ... | head`).
  for (const auto& [name, status] : {std::pair{"INT", 130}, std::pair{"HUP", 129}, std::pair{"PIPE", 141}}) {
    SCOPED_TRACE(name);
    const std::string script =
        "{ " + frugal() + " quantize " + shell_quote(big) + " -o " + shell_quote(out) + " --method gptq --calib " + shell_quote(text_) +
        " --calib-tokens 64 -t 1 2>/dev/null & pid=$!; i=0; "
        "while [ ! -e " + shell_quote(out) + ".tmp-$pid ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; "
        "[ -e " + shell_quote(out) + ".tmp-$pid ] && echo seen; kill -" + name + " $pid; wait $pid; echo status=$?; }";
    const auto r = run_command(script);
    ASSERT_NE(r.out.find("seen"), std::string::npos) << "the temporary file never appeared: " << r.out << r.err;
    EXPECT_NE(r.out.find("status=" + std::to_string(status)), std::string::npos) << r.out;  // died of the signal (128 + n)
    const auto left = run_command("ls " + shell_quote(dir_));
    EXPECT_EQ(left.out.find(".tmp-"), std::string::npos) << left.out;
    EXPECT_FALSE(testing::file_exists(out));
  }
}

// The per-tensor types of a preset, as frugal writes them and as llama-quantize writes them, on a
// tiny model with 256-wide rows (so K-quants apply) and 8 blocks (so the "more bits" layers differ).
TEST_F(Cli, PresetsChooseLlamaQuantizeTypes) {
  const std::string peer = testing::peer_tool("llama-quantize");
  if (!testing::file_exists(peer)) GTEST_SKIP() << "llama-quantize not built (FRUGAL_PEER_BIN)";
  testing::TinyModelOptions o;
  o.n_embd = 256;
  o.n_ff = 512;
  o.n_layer = 8;
  o.n_head = 8;
  o.n_head_kv = 2;  // 4 query heads per KV head: Q2_K's attn_v rule depends on it
  const std::string in = dir_ + "/k.gguf";
  ASSERT_TRUE(testing::write_tiny_model(in, o).is_ok());
  for (const char* preset : {"Q4_K_M", "Q3_K_M", "Q2_K", "Q5_K_M", "Q4_K_S", "Q3_K_L", "Q6_K", "Q4_0", "Q8_0"}) {
    const std::string theirs = dir_ + "/llama-" + preset + ".gguf", ours = dir_ + "/frugal-" + preset + ".gguf";
    const auto p = run_command(shell_quote(peer) + " " + shell_quote(in) + " " + shell_quote(theirs) + " " + preset + " 1");
    ASSERT_EQ(p.exit_code, 0) << preset << "\n" << p.err;
    const auto f = run_command(frugal() + " quantize " + shell_quote(in) + " " + preset + " -o " + shell_quote(ours) + " -t 1");
    ASSERT_EQ(f.exit_code, 0) << preset << "\n" << f.err;
    auto a = GgufFile::open(theirs);
    auto b = GgufFile::open(ours);
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    ASSERT_EQ((*a)->tensors().size(), (*b)->tensors().size()) << preset;
    for (const GgufTensorInfo& t : (*a)->tensors()) {
      const GgufTensorInfo* mine = (*b)->find_tensor(t.name);
      ASSERT_NE(mine, nullptr) << t.name;
      EXPECT_EQ(mine->type_id, t.type_id) << preset << " " << t.name << ": llama-quantize " << t.traits->name << ", frugal "
                                          << mine->traits->name;
    }
    EXPECT_EQ((*b)->get_int_or("general.file_type", -1), (*a)->get_int_or("general.file_type", -2)) << preset;
  }
}

}  // namespace
}  // namespace frugal
