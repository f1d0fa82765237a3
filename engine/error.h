// One way to fail: throw an exception whose message names the op and what was wrong.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace equivae {

// Bad shapes, dtypes or devices passed to an op.
struct ShapeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Non-finite values where an op (a loss) requires finite input.
struct NumericError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace equivae

// EQUIVAE_CHECK(cond, "op: what {}", args...) throws ShapeError with the formatted message.
#define EQUIVAE_CHECK(cond, ...)                                   \
  do {                                                             \
    if (!(cond)) throw ::equivae::ShapeError(fmt::format(__VA_ARGS__)); \
  } while (0)
