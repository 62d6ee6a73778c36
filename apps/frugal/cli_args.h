// Command-line parsing for the frugal subcommands: flags with values, switches, typed getters
// whose errors name the flag.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "frugal/frugal.h"

namespace frugal::cli {

class Args {
 public:
  // `with_value`: flags that take a value ("-m", "--temp"); `switches`: flags without one.
  static Result<Args> parse(const std::vector<std::string>& argv, const std::set<std::string>& with_value,
                            const std::set<std::string>& switches,
                            const std::map<std::string, std::string>& aliases = {});
  bool has(const std::string& flag) const { return values_.count(flag) != 0; }
  std::string get(const std::string& flag, const std::string& fallback = "") const;
  Result<int64_t> get_int(const std::string& flag, int64_t fallback, int64_t min, int64_t max) const;
  Result<double> get_float(const std::string& flag, double fallback, double min, double max) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// The model path: -m, else $FRUGAL_MODEL, else the default model in the cache.
std::string model_path(const Args& args);
// Default number of threads: the machine's cores.
int default_threads();

// The KV cache flags -ctk/--cache-type-k, -ctv/--cache-type-v (f16, q8_0, q4_0) and, where the
// command supports a rolling cache, --window N --sinks S (StreamingLLM); they go into `options`.
void add_cache_flags(std::set<std::string>& with_value, std::map<std::string, std::string>& aliases, bool rolling);
Status read_cache_flags(const Args& args, TransformerOptions& options);

}  // namespace frugal::cli
