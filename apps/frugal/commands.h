// The frugal subcommands; each returns the process exit code.
#pragma once

#include <string>
#include <vector>

namespace frugal::cli {

int command_info(const std::vector<std::string>& argv);
int command_run(const std::vector<std::string>& argv);
int command_tokenize(const std::vector<std::string>& argv);
int command_perplexity(const std::vector<std::string>& argv);
int command_bench(const std::vector<std::string>& argv);
int command_eval(const std::vector<std::string>& argv);
int command_quantize(const std::vector<std::string>& argv);
int command_prune(const std::vector<std::string>& argv);
int command_serve(const std::vector<std::string>& argv);
int command_template(const std::vector<std::string>& argv);

// Prints "frugal: error: MESSAGE" on one line and returns the failure exit code.
int fail(const std::string& message);

}  // namespace frugal::cli
