// Args: strict parsing (unknown flags and malformed numbers are errors, never ignored).
#include "cli_args.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <thread>

namespace frugal::cli {

Result<Args> Args::parse(const std::vector<std::string>& argv, const std::set<std::string>& with_value,
                         const std::set<std::string>& switches, const std::map<std::string, std::string>& aliases) {
  Args args;
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string flag = argv[i];
    std::string inline_value;
    bool has_inline = false;
    if (flag.size() > 2 && flag.rfind("--", 0) == 0) {
      auto eq = flag.find('=');
      if (eq != std::string::npos) {
        inline_value = flag.substr(eq + 1);
        flag = flag.substr(0, eq);
        has_inline = true;
      }
    }
    if (auto a = aliases.find(flag); a != aliases.end()) flag = a->second;
    if (with_value.count(flag)) {
      if (has_inline) {
        args.values_[flag] = inline_value;
      } else {
        if (i + 1 >= argv.size()) return Status::error("flag " + flag + " needs a value");
        args.values_[flag] = argv[++i];
      }
    } else if (switches.count(flag)) {
      args.values_[flag] = "1";
    } else if (flag.size() > 1 && flag[0] == '-' && !(flag.size() > 1 && std::isdigit(static_cast<unsigned char>(flag[1])))) {
      return Status::error("unknown flag " + flag + " (see frugal --help)");
    } else {
      args.positional_.push_back(flag);
    }
  }
  return args;
}

std::string Args::get(const std::string& flag, const std::string& fallback) const {
  auto it = values_.find(flag);
  return it == values_.end() ? fallback : it->second;
}

Result<int64_t> Args::get_int(const std::string& flag, int64_t fallback, int64_t min, int64_t max) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return fallback;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end != '\0' || errno != 0) return Status::error(flag + " expects an integer, got '" + it->second + "'");
  if (v < min || v > max) {
    return Status::error(flag + " must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " + it->second);
  }
  return static_cast<int64_t>(v);
}

Result<double> Args::get_float(const std::string& flag, double fallback, double min, double max) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return fallback;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(it->second.c_str(), &end);
  if (it->second.empty() || *end != '\0' || errno != 0 || v != v) return Status::error(flag + " expects a number, got '" + it->second + "'");
  if (v < min || v > max) {
    return Status::error(flag + " must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " + it->second);
  }
  return v;
}

std::string model_path(const Args& args) {
  if (args.has("-m")) return args.get("-m");
  if (const char* env = std::getenv("FRUGAL_MODEL"); env != nullptr && *env) return env;
  std::string cache;
  if (const char* c = std::getenv("FRUGAL_CACHE"); c != nullptr && *c) {
    cache = c;
  } else {
    const char* home = std::getenv("HOME");
    cache = std::string(home ? home : ".") + "/.cache/frugal";
  }
  return cache + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

int default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

void add_cache_flags(std::set<std::string>& with_value, std::map<std::string, std::string>& aliases, bool rolling) {
  with_value.insert({"-ctk", "-ctv"});
  aliases["--cache-type-k"] = "-ctk";
  aliases["--cache-type-v"] = "-ctv";
  if (rolling) with_value.insert({"--window", "--sinks"});
}

Status read_cache_flags(const Args& args, TransformerOptions& options) {
  auto k = parse_kv_type(args.get("-ctk", "f16"));
  if (!k) return Status::error("-ctk: " + k.status().message());
  auto v = parse_kv_type(args.get("-ctv", "f16"));
  if (!v) return Status::error("-ctv: " + v.status().message());
  options.cache_type_k = *k;
  options.cache_type_v = *v;
  auto window = args.get_int("--window", 0, 0, 1 << 24);
  auto sinks = args.get_int("--sinks", 4, 0, 1 << 24);
  FRUGAL_RETURN_IF_ERROR(window.status());
  FRUGAL_RETURN_IF_ERROR(sinks.status());
  options.window = *window;
  options.sinks = *sinks;
  if (options.window > 0 && options.window <= options.sinks) {
    return Status::error("--window " + std::to_string(options.window) + " must be larger than --sinks " + std::to_string(options.sinks));
  }
  return Status::ok();
}

}  // namespace frugal::cli
