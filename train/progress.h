// A one-line progress bar on stderr: redrawn in place on a terminal (at most 5 times a second);
// in a log (not a terminal) a line at each tenth of the work at most every 10 seconds, and the
// final line, so long work is never silent and short work (an epoch of the dense classifier) is
// one line. And Ctrl-C: the first asks long work to stop where it can say what was kept.
#pragma once
#include <chrono>
#include <cstdint>
#include <stdexcept>
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

// Installs a SIGINT handler: the first Ctrl-C prints a line and sets the flag that
// throw_if_interrupted reads; a second one ends the process at once.
void install_interrupt_handler();
// Throws Interrupted naming `where` once Ctrl-C was pressed.
struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};
void throw_if_interrupted(const std::string& where);

}  // namespace equivae
