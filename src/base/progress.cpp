// ProgressBar drawing.
#include "base/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>

namespace frugal {
namespace {

std::string format_duration(double seconds) {
  if (seconds < 0 || seconds > 1e7) return "--:--";
  const int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%02d:%02d", s / 60, s % 60);
  }
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), is_tty_(isatty(STDERR_FILENO) != 0) {}

void ProgressBar::update(int64_t done, const std::string& note) {
  const double elapsed = timer_.seconds();
  const bool last = done >= total_;
  if (!last && last_draw_ >= 0 && elapsed - last_draw_ < (is_tty_ ? 0.1 : 5.0)) return;
  last_draw_ = elapsed;
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : -1;
  char counts[160];
  std::snprintf(counts, sizeof counts, "%lld/%lld %s, %.2f %s/s, elapsed %s, ETA %s", static_cast<long long>(done),
                static_cast<long long>(total_), unit_.c_str(), rate, unit_.c_str(), format_duration(elapsed).c_str(),
                format_duration(eta).c_str());
  if (!is_tty_) {
    // Logs get plain lines (no bar, no carriage returns), at most every few seconds and at the end.
    const double pct = total_ > 0 ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100.0;
    std::fprintf(stderr, "%s: %.0f%% %s%s%s\n", label_.c_str(), pct, counts, note.empty() ? "" : ", ", note.c_str());
    std::fflush(stderr);
    drawn_ = true;
    return;
  }
  constexpr int kWidth = 28;
  const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : kWidth;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::string line = label_ + " [" + bar + "] " + counts + (note.empty() ? "" : " " + note);
  // A line wider than the terminal wraps, and "\r" then redraws only its last row: cut it to fit.
  struct winsize ws = {};
  const size_t columns = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 ? ws.ws_col - 1 : 79;
  if (line.size() > columns) line.resize(columns);
  std::fprintf(stderr, "\r%s\033[K", line.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (is_tty_ && drawn_) std::fprintf(stderr, "\n");
}

}  // namespace frugal
