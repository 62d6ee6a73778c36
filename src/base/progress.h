// A terminal progress bar with rate and ETA, drawn on stderr (redrawn in place on a terminal, cut
// to its width; plain "label: 40% 4/10 …" lines at most every few seconds otherwise, so logs stay short).
#pragma once

#include <cstdint>
#include <string>

#include "base/timer.h"

namespace frugal {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit);
  // Sets the number of finished items; `note` is shown after the bar (e.g. a running value).
  void update(int64_t done, const std::string& note = "");
  void finish();

 private:
  std::string label_, unit_;
  int64_t total_;
  bool is_tty_;
  bool finished_ = false;
  bool drawn_ = false;
  double last_draw_ = -1;
  Timer timer_;
};

}  // namespace frugal
