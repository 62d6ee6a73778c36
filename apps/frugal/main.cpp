// frugal: the command-line front end (thin: parsing and printing; the work is in the libraries).
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "commands.h"
#include "compress/methods.h"

namespace {

const char* kUsage = R"(frugal — run, compress and measure LLMs on your own hardware

usage: frugal COMMAND [options]

commands:
  info        [-m MODEL]             architecture, hyper-parameters, tensor types, size, memory
  run         [-m MODEL] -p PROMPT [-n N] [-c CTX] [-t THREADS] [--temp T] [--top-k K]
              [--top-p P] [--min-p P] [--repeat-penalty R] [--seed S] [--chat]
                                     generate text (streamed); --chat holds a conversation
              [--draft DRAFT.gguf|ngram|self:N] [--draft-max K] [--draft-p-min P]
              [--draft-fixed] [--draft-compare]
                                     speculative decoding with a draft model, prompt lookup or
                                     the first N layers: exact greedy (--temp 0) or speculative
                                     sampling (same distribution as plain sampling); --draft-compare
                                     also runs plain decoding and reports the speed-up
  tokenize    [-m MODEL] -p TEXT [--ids] [--no-bos] [--no-parse-special]
  perplexity  [-m MODEL] -f FILE [-c CTX] [--chunks N] [-t THREADS]
  eval        [-m MODEL] [--base BASE.gguf] [-f TEXT] [-c 512] [--chunks 40] [-o md|json]
              [--hellaswag N] [--hellaswag-file F] [--sst2 N] [--sst2-file F]
                                     PPL, KL divergence and same-top-token % against BASE;
                                     zero-shot HellaSwag and SST-2 accuracy
  quantize    [-m MODEL] -o OUT.gguf [--method @QUANTIZE@] [--bits B] [--group G]
              [--symmetric] [--format TYPE] [--embedding-format TYPE] [--calib FILE] [--calib-tokens N]
              [--act-order] [-t THREADS]
                                     post-training quantization into a new GGUF file
  prune       [-m MODEL] -o OUT.gguf --method @PRUNE@ --sparsity S
              [--pattern unstructured|2:4|4:8] [--calib FILE] [--calib-tokens N] [--format TYPE]
              [--bits B --group G] [-t THREADS]
                                     pruning (zeros stored densely, or compactly with --format sparse-q8)
  methods                            every compression method, what it needs, how it treats each matrix
  bench       [-m MODEL] [-p 512] [-n 128] [-t THREADS] [-r 5] [-o md|json] [--bandwidth]
                                     prompt (pp) and generation (tg) tokens/s, llama-bench layout

KV cache (run, perplexity, eval, bench): -ctk/--cache-type-k and -ctv/--cache-type-v f16|q8_0|q4_0
(eval applies them to MODEL only, so -m M --base M measures the cache type); run and perplexity:
--window N [--sinks 4] keeps the first S tokens and the last N-S (StreamingLLM) so generation never
fills the context; perplexity --window scores one stream (--stream-tokens N, --stream-batch B).
bench -d DEPTH: tokens in the cache before each test.

MODEL defaults to $FRUGAL_MODEL, else ~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf
(scripts/setup.sh fetches it).
)";

// The usage text with the method lists of the registry (compress/methods.h) filled in.
std::string usage() {
  std::string text = kUsage;
  auto fill = [&](const std::string& slot, const std::string& value) {
    if (const size_t at = text.find(slot); at != std::string::npos) text.replace(at, slot.size(), value);
  };
  fill("@QUANTIZE@", frugal::compress::method_names(frugal::compress::MethodKind::kQuantize));
  fill("@PRUNE@", frugal::compress::method_names(frugal::compress::MethodKind::kPrune));
  return text;
}

int run_command(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::fputs(usage().c_str(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  if (command == "info") return frugal::cli::command_info(rest);
  if (command == "run") return frugal::cli::command_run(rest);
  if (command == "tokenize") return frugal::cli::command_tokenize(rest);
  if (command == "perplexity") return frugal::cli::command_perplexity(rest);
  if (command == "bench") return frugal::cli::command_bench(rest);
  if (command == "eval") return frugal::cli::command_eval(rest);
  if (command == "quantize") return frugal::cli::command_quantize(rest);
  if (command == "prune") return frugal::cli::command_prune(rest);
  if (command == "methods") {
    std::printf("quantization (frugal quantize --method):\n%s\npruning (frugal prune --method):\n%s",
                frugal::compress::method_table(frugal::compress::MethodKind::kQuantize).c_str(),
                frugal::compress::method_table(frugal::compress::MethodKind::kPrune).c_str());
    return 0;
  }
  return frugal::cli::fail("unknown command '" + command + "' (see frugal --help)");
}

}  // namespace

// Errors travel as Status; an exception reaching this point (out of memory, or a library throwing
// on input nobody checked) still ends with one error line and exit code 1, never an abort.
int main(int argc, char** argv) {
  try {
    return run_command(argc, argv);
  } catch (const std::bad_alloc&) {
    return frugal::cli::fail("out of memory");
  } catch (const std::exception& e) {
    return frugal::cli::fail(std::string("unexpected failure: ") + e.what());
  } catch (...) {
    return frugal::cli::fail("unexpected failure");
  }
}
