// Temporary output files (NAME.tmp-PID, renamed into place when complete) that a SIGINT or SIGTERM
// must not leave behind: writers register them, and the handler unlinks them before the process dies.
#pragma once

#include <string>

namespace frugal {

// Remembers `path` as a pending temporary file (at most a few at once; more are not tracked).
void register_temp_file(const std::string& path);
// Forgets `path` (after it was renamed into place or removed).
void unregister_temp_file(const std::string& path);
// Installs the SIGINT/SIGTERM/SIGHUP/SIGPIPE handler: it unlinks every registered file, then dies of the signal
// with the default action (so the exit status still says "interrupted").
void remove_temp_files_on_signal();

}  // namespace frugal
