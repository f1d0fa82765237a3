// A one-line progress bar on stderr: redrawn in place on a terminal (at most 5 times a second),
// printed every 10% otherwise (logs, CI), so long work is never silent.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace equivae {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled = true);
  // `done` units so far; `status` is appended (loss terms, images/s).
  void update(int64_t done, const std::string& status = "");
  void finish(const std::string& status = "");

 private:
  void draw(int64_t done, const std::string& status, bool final);
  std::string label_;
  int64_t total_;
  bool enabled_, tty_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace equivae
