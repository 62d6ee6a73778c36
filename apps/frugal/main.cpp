// frugal: the command-line front end (thin: parsing and printing; the work is in the libraries).
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "cli_args.h"
#include "frugal_git_describe.h"
#include "commands.h"
#include "compress/methods.h"

namespace {

struct CommandEntry {
  const char* name;
  const char* summary;  // one line; also the first line of `frugal NAME --help`
  int (*run)(const std::vector<std::string>&);
};

int command_methods(const std::vector<std::string>& argv);

// Every command, once: the global usage lists them and each command's --help shows its summary.
const CommandEntry kCommands[] = {
    {"info", "what a model file holds: architecture, hyper-parameters, tensor types, size, memory", frugal::cli::command_info},
    {"run", "generate text from a prompt (streamed), or hold a conversation (--chat)", frugal::cli::command_run},
    {"tokenize", "the model's tokens for a text", frugal::cli::command_tokenize},
    {"perplexity", "perplexity of a text, as llama-perplexity computes it", frugal::cli::command_perplexity},
    {"eval", "quality against a base model: PPL, KL divergence, same top token; HellaSwag, SST-2", frugal::cli::command_eval},
    {"quantize", "post-training quantization into a new GGUF file (llama-quantize presets or a method)", frugal::cli::command_quantize},
    {"prune", "pruning (unstructured, N:M, structured) into a new GGUF file", frugal::cli::command_prune},
    {"methods", "every compression method, what it needs, how it treats each matrix", command_methods},
    {"bench", "prompt (pp) and generation (tg) speed in llama-bench's layout", frugal::cli::command_bench},
    {"template", "the prompt a model's chat template renders for a conversation (JSON messages)", frugal::cli::command_template},
    {"serve", "OpenAI-compatible HTTP server with continuous batching and a chat page at /", frugal::cli::command_serve},
};

const char* kUsageTail = R"(
`frugal COMMAND --help` lists a command's flags with their defaults. MODEL is -m MODEL or the first
argument; without it, $FRUGAL_MODEL, else ~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf
(scripts/setup.sh fetches it). Errors print one line, `frugal: error: ...`, and exit with 1.
)";

std::string usage() {
  std::string text = "frugal — run, compress and measure LLMs on your own hardware\n\nusage: frugal COMMAND [MODEL] [flags]\n"
                     "       frugal COMMAND --help   (or frugal help COMMAND)\n       frugal --version\n\ncommands:\n";
  for (const CommandEntry& c : kCommands) {
    char line[256];
    std::snprintf(line, sizeof line, "  %-11s %s\n", c.name, c.summary);
    text += line;
  }
  return text + kUsageTail;
}

std::string version() {
  std::string v = std::string("frugal ") + FRUGAL_VERSION;
  if (std::strlen(FRUGAL_GIT_DESCRIBE) > 0) v += std::string(" (") + FRUGAL_GIT_DESCRIBE + ")";
  return v + "\n";
}

int command_methods(const std::vector<std::string>& argv) {
  frugal::cli::Command command("methods");
  auto args = command.parse(argv);
  if (!args) return frugal::cli::fail(args.status().message());
  if (args->help_shown()) return 0;
  std::printf("quantization (frugal quantize --method):\n%s\npruning (frugal prune --method):\n%s",
              frugal::compress::method_table(frugal::compress::MethodKind::kQuantize).c_str(),
              frugal::compress::method_table(frugal::compress::MethodKind::kPrune).c_str());
  return 0;
}

int run_command(int argc, char** argv) {
  // `frugal help CMD` is `frugal CMD --help`.
  if (argc == 3 && std::strcmp(argv[1], "help") == 0) {
    for (const CommandEntry& c : kCommands) {
      if (std::strcmp(argv[2], c.name) == 0) return c.run({"--help"});
    }
  }
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::fputs(usage().c_str(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "--version") == 0 || std::strcmp(argv[1], "version") == 0) {
    std::fputs(version().c_str(), stdout);
    return 0;
  }
  const std::string command = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  for (const CommandEntry& c : kCommands) {
    if (command == c.name) return c.run(rest);
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

namespace frugal::cli {

std::string command_summary(const std::string& name) {
  for (const CommandEntry& c : kCommands) {
    if (name == c.name) return c.summary;
  }
  return "";
}

}  // namespace frugal::cli
