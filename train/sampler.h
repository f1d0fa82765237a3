// Complementary-set sampling for the invariant latent r_y (SPEC.md sections 1 and 3): every point
// of a batch gets m distinct same-class images that exclude the point itself. Each distinct image
// is listed once per step (`images`, to be encoded once with h); the sets are CSR lists of indices
// into `images`, ready for the segmented mean.
//
// Randomness is Philox (engine/rng.h) keyed by the caller's seed, with no state: a draw is a pure
// function of (seed, stream, step, position), so any step can be replayed. Each function of the
// data layer has its own stream tag in the third word of the Philox counter, so using one seed for
// shuffling, sets and label subsets never reuses a number; engine/rng.h's philox_bits (tag 0, the
// model's noise) never collides with them either.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace equivae::data {

// Stream tags (third Philox counter word).
enum class Stream : uint32_t { ComplementarySets = 1, ClassSets = 2, Shuffle = 3, LabelSubset = 4 };

// Sequential draws from one stream, starting at counter `next`.
struct Draws {
  uint64_t seed = 0;
  Stream stream = Stream::Shuffle;
  uint64_t next = 0;
  uint32_t bits();
  // Uniform in [0, n) for n >= 1 (64 random bits mod n: bias below n / 2^64).
  int64_t below(int64_t n);
};

// Rows of each class in a data set (or in a labelled subset of it), ascending.
struct ClassIndex {
  // Throws std::invalid_argument on a label outside [0, num_classes).
  explicit ClassIndex(const std::vector<int32_t>& labels, int num_classes);
  // Only the given rows (duplicates are dropped); throws std::out_of_range on a row outside labels.
  ClassIndex(const std::vector<int32_t>& labels, int num_classes, const std::vector<int64_t>& rows);
  std::vector<std::vector<int64_t>> rows;  // rows[c] = data set rows of class c
};

struct ComplementarySets {
  int m = 0;
  std::vector<int64_t> images;   // distinct data set rows to encode with h this step
  std::vector<int32_t> offsets;  // size sets+1 (CSR): set b is members[offsets[b] .. offsets[b+1])
  std::vector<int32_t> members;  // indices into `images`
};

// Where a batch point's complementary set comes from (the paper: "the whole class-y manifold"; it
// does not say how its code drew them).
//  - batch: the pool of class c is the batch's own (distinct) rows of class c, topped up with
//    random other rows of class c until it has m+1 rows. The sets of one class in a batch then
//    nearly coincide, and a step encodes about one image per batch point.
//  - whole_class: the pool of class c is every row of class c (class index plus batch), so each
//    point gets its own m images and a step encodes about m images per batch point.
enum class SetSampling { batch, whole_class };
SetSampling set_sampling_from_name(const std::string& name);  // "batch" or "class"; else throws
std::string set_sampling_name(SetSampling sampling);

// Each batch point takes m distinct random rows of its class's pool other than its own row.
// `images` lists the pool rows that some set uses, once each, in order of first use. m is drawn
// uniformly from {1..min(m_max, cap)}, where cap + 1 is the number of rows (class index plus
// batch) of the smallest class in the batch. Randomness: Philox keyed by `seed`, counter from
// step * 2^32. Throws std::invalid_argument if m_max < 1, the batch is empty, a batch label is out
// of range, or a batch class has a single row (no complement exists).
ComplementarySets sample_complementary_sets(const std::vector<int64_t>& batch_rows,
                                            const std::vector<int32_t>& labels,
                                            const ClassIndex& classes, int m_max, uint64_t seed,
                                            uint64_t step, SetSampling sampling);

// Semi-supervised: for each i, a set of m distinct labelled rows of class set_classes[i] (nothing
// to exclude: the point is unlabelled). Sets of one class are drawn from a per-class pool of
// min(#labelled rows, max(m, #sets of that class)) random rows, so `images` stays about as long
// as the number of sets. Throws std::invalid_argument if m < 1, a class is out of range or has
// fewer than m labelled rows.
ComplementarySets sample_class_sets(const std::vector<int32_t>& set_classes,
                                    const ClassIndex& labelled, int m, uint64_t seed,
                                    uint64_t step);

// A random permutation of `rows` (Fisher-Yates, Philox keyed by seed, counter from epoch * 2^32).
std::vector<int64_t> shuffled(const std::vector<int64_t>& rows, uint64_t seed, uint64_t epoch);

}  // namespace equivae::data
