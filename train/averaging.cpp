#include "train/averaging.h"

#include "engine/backend.h"
#include "engine/error.h"

namespace equivae {

void ParameterAverage::add(const Tensor& values, int epochs_done) {
  EQUIVAE_CHECK(active(epochs_done), "the parameter average starts at epoch {}, not {}", from_, epochs_done);
  const int n = epochs_done - from_ + 1;  // epoch-end parameter sets in the mean
  if (n == 1) {
    mean_ = values.clone();
    return;
  }
  Backend& b = backend(values.device());  // mean += (values - mean) / n
  b.scale(mean_, 1.0 - 1.0 / n, mean_);
  b.axpy(1.0 / n, values, mean_);
}

}  // namespace equivae
