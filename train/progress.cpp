#include "train/progress.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>

#include <fmt/format.h>

namespace equivae {

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

void ProgressBar::update(int64_t done, const std::string& status) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const int decile = total_ > 0 ? int(10 * done / total_) : 10;
  if (tty_ ? now - last_draw_ < std::chrono::milliseconds(200)
           : decile == last_decile_ || now - last_draw_ < std::chrono::seconds(10))
    return;
  last_draw_ = now;
  last_decile_ = decile;
  draw(done, status, false);
}

void ProgressBar::finish(const std::string& status) {
  if (enabled_) draw(total_, status, true);
}

void ProgressBar::draw(int64_t done, const std::string& status, bool final) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? double(done) / double(total_) : 1.0;
  const double eta = frac > 0 ? elapsed * (1 - frac) / frac : 0;
  constexpr int kWidth = 24;
  std::string bar(size_t(frac * kWidth), '#');
  bar.resize(kWidth, '.');
  const std::string line = fmt::format("{} [{}] {}/{} {:.0f}s{} {}", label_, bar, done, total_, elapsed,
                                       final ? "" : fmt::format(" eta {:.0f}s", eta), status);
  if (tty_) std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
  else std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

namespace {

std::atomic<bool> interrupt_flag{false};

void on_interrupt(int) {
  if (interrupt_flag.exchange(true)) {  // the second Ctrl-C: stop now
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
    return;
  }
  static const char message[] = "\nequivae: Ctrl-C: stopping at the next step (Ctrl-C again to quit at once)\n";
  [[maybe_unused]] const ssize_t written = write(STDERR_FILENO, message, sizeof(message) - 1);
}

}  // namespace

void install_interrupt_handler() { std::signal(SIGINT, on_interrupt); }

void throw_if_interrupted(const std::string& where) {
  if (interrupt_flag.load()) throw Interrupted("interrupted (Ctrl-C) " + where);
}

}  // namespace equivae
