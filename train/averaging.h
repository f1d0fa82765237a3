// Stochastic weight averaging of the epoch-end parameters (Izmailov et al., 2018): from a given
// epoch on, the running mean of the parameters at the end of each epoch is a second model,
// validated beside the trained one and offered as the best epoch's parameters. Training itself
// never sees the mean, so a run's trajectory is the same with or without it. Used by both
// EquiVAE's Trainer and the classifiers' loop (--average-from).
#pragma once
#include "engine/tensor.h"

namespace equivae {

class ParameterAverage {
 public:
  // from: the first epoch (1-based) in the mean; 0 averages nothing.
  explicit ParameterAverage(int from) : from_(from) {}
  int from() const { return from_; }
  // Whether, after `epochs_done` epochs, the mean holds epochs from..epochs_done.
  bool active(int epochs_done) const { return from_ > 0 && epochs_done >= from_; }
  // Adds `values`, the parameters after `epochs_done` epochs (active(epochs_done)), to the mean.
  void add(const Tensor& values, int epochs_done);
  // The mean (a buffer of the parameters' layout): written by add, or by a checkpoint's "average".
  Tensor& mean() { return mean_; }

 private:
  int from_;
  Tensor mean_;
};

// Puts `values` in place of a parameter buffer's own for its lifetime (to evaluate or save another
// set of parameters, such as their running mean, through the same model).
class ValuesInPlace {
 public:
  ValuesInPlace(Tensor& params, const Tensor& values) : params_(params), own_(params.clone()) { params_.copy_from(values); }
  ~ValuesInPlace() { params_.copy_from(own_); }
  ValuesInPlace(const ValuesInPlace&) = delete;
  ValuesInPlace& operator=(const ValuesInPlace&) = delete;

 private:
  Tensor& params_;
  Tensor own_;
};

}  // namespace equivae
