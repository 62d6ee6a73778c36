// Command-line parsing for the frugal subcommands: each command declares its flags once (Command,
// on CLI11) and the same declaration parses argv, fills the defaults and prints -h/--help.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "frugal/frugal.h"

namespace CLI {
class App;
}

namespace frugal::cli {

class Command;

class Args {
 public:
  // The older declaration style (flag sets); kept so a command not yet converted to Command still
  // builds. `with_value`: flags that take a value ("-m", "--temp"); `switches`: flags without one.
  static Result<Args> parse(const std::vector<std::string>& argv, const std::set<std::string>& with_value,
                            const std::set<std::string>& switches,
                            const std::map<std::string, std::string>& aliases = {});
  // True when the user gave the flag (a declared default does not count).
  bool has(const std::string& flag) const { return values_.count(flag) != 0; }
  // The value given, else the declared default, else `fallback`.
  std::string get(const std::string& flag, const std::string& fallback = "") const;
  Result<int64_t> get_int(const std::string& flag, int64_t fallback, int64_t min, int64_t max) const;
  Result<double> get_float(const std::string& flag, double fallback, double min, double max) const;
  // The same, with the default declared in the Command (one place for help and behaviour).
  Result<int64_t> get_int(const std::string& flag, int64_t min, int64_t max) const;
  Result<double> get_float(const std::string& flag, double min, double max) const;
  // Every value of a repeatable flag, in order.
  std::vector<std::string> get_all(const std::string& flag) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // True when -h/--help was given and the help has been printed: the command returns 0.
  bool help_shown() const { return help_shown_; }

 private:
  friend class Command;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::string> defaults_;
  std::map<std::string, std::vector<std::string>> repeated_;
  std::vector<std::string> positional_;
  bool help_shown_ = false;
};

// One command's flags, declared once. Names are CLI11's comma lists ("-m,--model"); the first name
// is the key Args uses. llama.cpp's multi-letter single-dash names ("-ctk") are accepted too: they
// are rewritten to the command's long name before parsing (CLI11 allows one letter after '-').
// Parsing is strict: an unknown flag, a missing value or a stray argument is a one-line error.
class Command {
 public:
  // `name` as typed after `frugal`; the one-line summary comes from the global command table.
  explicit Command(std::string name);
  ~Command();
  Command(const Command&) = delete;
  Command& operator=(const Command&) = delete;

  // A flag with a value; `placeholder` names it in the help ("N", "FILE"); a non-empty
  // `default_value` is shown in the help and returned by Args::get when the flag is absent.
  Command& option(const std::string& names, const std::string& placeholder, const std::string& help,
                  const std::string& default_value = "");
  // A switch without a value.
  Command& flag(const std::string& names, const std::string& help);
  // A flag that may be given many times (Args::get_all).
  Command& repeated(const std::string& names, const std::string& placeholder, const std::string& help);
  // -m/--model MODEL, also accepted as the first positional argument (`frugal CMD MODEL`).
  Command& model();
  // A further positional argument that stands for the flag `key` (quantize's TYPE for --preset).
  // Positionals fill MODEL first (unless -m is given), then these in order.
  Command& positional(const std::string& key, const std::string& placeholder, const std::string& help);
  // -t/--threads N with the machine's core count as default.
  Command& threads();
  // -ctk/--cache-type-k, -ctv/--cache-type-v and, with `rolling`, --window/--sinks.
  Command& cache_flags(bool rolling);
  // Free text printed after the flag list (what the command does in more detail).
  Command& footer(const std::string& text);

  Result<Args> parse(const std::vector<std::string>& argv);
  std::string help() const;

 private:
  struct Declared {
    std::string key;
    std::string value;
    std::vector<std::string> values;
    bool is_flag = false;
    bool is_repeated = false;
  };
  Declared& declare(const std::string& names, std::string* cli_names);

  std::string name_;
  std::unique_ptr<CLI::App> app_;
  std::map<std::string, std::string> rewrites_;  // "-ctk" -> "--cache-type-k"
  std::map<std::string, std::string> defaults_;
  std::vector<std::unique_ptr<Declared>> declared_;
  struct Slot {
    std::string key;
    std::string value;
  };
  std::vector<std::unique_ptr<Slot>> positionals_;
};

// The one-line summary of a command (the global usage lists them); "" when unknown.
std::string command_summary(const std::string& name);

// The model path: -m (or the positional model), else $FRUGAL_MODEL, else the default model in the cache.
std::string model_path(const Args& args);
// Default number of threads: the machine's cores.
int default_threads();

// The KV cache flags -ctk/--cache-type-k, -ctv/--cache-type-v (f16, q8_0, q4_0) and, where the
// command supports a rolling cache, --window N --sinks S (StreamingLLM); they go into `options`.
void add_cache_flags(std::set<std::string>& with_value, std::map<std::string, std::string>& aliases, bool rolling);
Status read_cache_flags(const Args& args, TransformerOptions& options);

// Reads a whole text file (plain or .bz2), or stdin for "-".
Result<std::string> read_text_argument(const std::string& path);
// llama.cpp's escape processing for -p (common's string_process_escapes): \n \r \t \' \" \\ and
// \xHH; any other or incomplete sequence is kept as written.
std::string process_escapes(const std::string& text);
// Warns on stderr when -t exceeds the machine's cores (threads then share cores and every barrier waits).
void warn_threads(int64_t n_threads);
// Refuses a context whose KV cache and workspace do not fit in the memory available (instead of
// std::bad_alloc or the OOM killer), warns when only the weights do not fit or when n_ctx exceeds
// the model's trained context (positions it never saw: quality falls off).
Status check_context(const Model& model, int64_t n_ctx, int64_t n_batch);
// Refuses an output path whose directory does not exist or is not writable, before any work; also
// makes a SIGINT/SIGTERM remove the pending temporary output (NAME.tmp-PID).
Status prepare_output(const std::string& path);
// Prints "frugal: warning: MESSAGE" on stderr.
void warn(const std::string& message);

}  // namespace frugal::cli
