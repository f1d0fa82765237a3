// Complementary-set sampling, from the batch or from the whole class: every property the trainer
// relies on (exclusion, class purity, distinct members, each image listed once, m uniform on
// {1..m_max}, replayable steps), and what tells the two schemes apart.
#include <algorithm>
#include <catch2/catch.hpp>
#include <numeric>
#include <set>
#include <stdexcept>

#include "train/sampler.h"

using namespace equivae::data;

namespace {

// labels 0..K-1 repeating, n rows.
std::vector<int32_t> cyclic_labels(int64_t n, int k) {
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[size_t(i)] = int32_t(i % k);
  return y;
}

// Checks the structural invariants of one step's sets; returns the members as data set rows.
void check_sets(const ComplementarySets& s, const std::vector<int64_t>& batch,
                const std::vector<int32_t>& labels) {
  REQUIRE(s.offsets.size() == batch.size() + 1);
  REQUIRE(s.offsets.front() == 0);
  REQUIRE(size_t(s.offsets.back()) == s.members.size());
  // `images` has no duplicates, and every image is used by some set.
  std::set<int64_t> unique(s.images.begin(), s.images.end());
  REQUIRE(unique.size() == s.images.size());
  std::vector<bool> used(s.images.size(), false);
  for (size_t b = 0; b < batch.size(); ++b) {
    REQUIRE(s.offsets[b + 1] - s.offsets[b] == s.m);
    std::set<int64_t> rows;
    for (int32_t k = s.offsets[b]; k < s.offsets[b + 1]; ++k) {
      const int32_t idx = s.members[size_t(k)];
      REQUIRE(idx >= 0);
      REQUIRE(size_t(idx) < s.images.size());
      used[size_t(idx)] = true;
      const int64_t row = s.images[size_t(idx)];
      REQUIRE(row != batch[b]);                                  // exclusion
      REQUIRE(labels[size_t(row)] == labels[size_t(batch[b])]);  // class purity
      rows.insert(row);
    }
    REQUIRE(rows.size() == size_t(s.m));  // distinct within the set
  }
  REQUIRE(std::all_of(used.begin(), used.end(), [](bool u) { return u; }));
}

}  // namespace

TEST_CASE("sampler: sets exclude their point, are class-pure, distinct, images unique") {
  const SetSampling sampling = GENERATE(SetSampling::batch, SetSampling::whole_class);
  INFO("set sampling " << set_sampling_name(sampling));
  const auto labels = cyclic_labels(1000, 10);
  const ClassIndex classes(labels, 10);
  std::vector<int64_t> all(1000);
  std::iota(all.begin(), all.end(), 0);
  for (uint64_t step = 0; step < 200; ++step) {
    // 64 random rows (uneven class counts) plus a repeat of the first one.
    std::vector<int64_t> batch = shuffled(all, 7, step);
    batch.resize(64);
    batch.push_back(batch[0]);
    const auto s = sample_complementary_sets(batch, labels, classes, 7, 42, step, sampling);
    REQUIRE(s.m >= 1);
    REQUIRE(s.m <= 7);
    check_sets(s, batch, labels);
    // Batch sampling encodes few images: about one per batch point, not one per member.
    if (sampling == SetSampling::batch) REQUIRE(s.images.size() <= batch.size() + 10 * size_t(s.m + 1));
  }
}

TEST_CASE("sampler: m is uniform on {1..m_max}") {
  const SetSampling sampling = GENERATE(SetSampling::batch, SetSampling::whole_class);
  INFO("set sampling " << set_sampling_name(sampling));
  const auto labels = cyclic_labels(500, 5);
  const ClassIndex classes(labels, 5);
  const std::vector<int64_t> batch = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  const int m_max = 7, steps = 7000;
  std::vector<int> count(m_max + 1, 0);
  for (int step = 0; step < steps; ++step)
    ++count[size_t(sample_complementary_sets(batch, labels, classes, m_max, 9, uint64_t(step), sampling).m)];
  REQUIRE(count[0] == 0);
  // Chi-square with 6 degrees of freedom: 99.99th percentile is about 27.9. Never drawing m_max
  // alone would give >= 1000.
  const double expected = double(steps) / m_max;
  double chi2 = 0;
  for (int m = 1; m <= m_max; ++m)
    chi2 += (count[size_t(m)] - expected) * (count[size_t(m)] - expected) / expected;
  INFO("chi2 = " << chi2);
  REQUIRE(chi2 < 27.9);
}

TEST_CASE("sampler: same (seed, step) replays, other steps and seeds differ") {
  const SetSampling sampling = GENERATE(SetSampling::batch, SetSampling::whole_class);
  INFO("set sampling " << set_sampling_name(sampling));
  const auto labels = cyclic_labels(300, 3);
  const ClassIndex classes(labels, 3);
  std::vector<int64_t> batch;
  for (int64_t i = 0; i < 30; ++i) batch.push_back(i * 7 % 300);
  const auto a = sample_complementary_sets(batch, labels, classes, 5, 11, 3, sampling);
  const auto b = sample_complementary_sets(batch, labels, classes, 5, 11, 3, sampling);
  CHECK(a.m == b.m);
  CHECK(a.images == b.images);
  CHECK(a.offsets == b.offsets);
  CHECK(a.members == b.members);
  int differ_step = 0, differ_seed = 0;
  for (uint64_t k = 4; k < 14; ++k) {
    const auto c = sample_complementary_sets(batch, labels, classes, 5, 11, k, sampling);
    differ_step += c.m != a.m || c.images != a.images || c.members != a.members;
    const auto d = sample_complementary_sets(batch, labels, classes, 5, k + 100, 3, sampling);
    differ_seed += d.m != a.m || d.images != a.images || d.members != a.members;
  }
  CHECK(differ_step == 10);
  CHECK(differ_seed == 10);
  CHECK(shuffled(batch, 1, 0) == shuffled(batch, 1, 0));
  CHECK(shuffled(batch, 1, 0) != shuffled(batch, 1, 1));
}

TEST_CASE("sampler: m is capped by the smallest class in the batch") {
  const SetSampling sampling = GENERATE(SetSampling::batch, SetSampling::whole_class);
  INFO("set sampling " << set_sampling_name(sampling));
  // Class 1 has 3 rows in total, so its points can have at most 2 complementary images.
  std::vector<int32_t> labels(100, 0);
  labels[10] = labels[50] = labels[90] = 1;
  const ClassIndex classes(labels, 2);
  std::set<int> seen;
  for (uint64_t step = 0; step < 200; ++step) {
    const std::vector<int64_t> batch = {0, 1, 50, 2};
    const auto s = sample_complementary_sets(batch, labels, classes, 7, 5, step, sampling);
    REQUIRE(s.m <= 2);
    seen.insert(s.m);
    check_sets(s, batch, labels);
  }
  CHECK(seen == std::set<int>{1, 2});  // still uniform over what is possible
  // Without class 1 in the batch, the cap does not apply.
  int big = 0;
  for (uint64_t step = 0; step < 50; ++step)
    big = std::max(big, sample_complementary_sets({0, 1}, labels, classes, 7, 5, step, sampling).m);
  CHECK(big == 7);
}

TEST_CASE("sampler: batch of size 1, duplicates in the batch, rows outside the index") {
  const SetSampling sampling = GENERATE(SetSampling::batch, SetSampling::whole_class);
  INFO("set sampling " << set_sampling_name(sampling));
  const auto labels = cyclic_labels(40, 2);
  const ClassIndex classes(labels, 2);
  for (uint64_t step = 0; step < 20; ++step) {
    const std::vector<int64_t> one = {5};
    const auto s = sample_complementary_sets(one, labels, classes, 4, 3, step, sampling);
    check_sets(s, one, labels);
    CHECK(s.images.size() == size_t(s.m));  // only top-ups, never the point itself
    const std::vector<int64_t> twice = {5, 5, 6};
    check_sets(sample_complementary_sets(twice, labels, classes, 4, 3, step, sampling), twice, labels);
  }
  // A labelled-subset index: the batch's own rows count as members of their class.
  const ClassIndex subset(labels, 2, {0, 2, 1, 3, 3});
  CHECK(subset.rows[0] == std::vector<int64_t>{0, 2});
  CHECK(subset.rows[1] == std::vector<int64_t>{1, 3});
  const std::vector<int64_t> batch = {4, 6};  // class 0, not in the subset
  for (uint64_t step = 0; step < 20; ++step) {
    const auto s = sample_complementary_sets(batch, labels, subset, 7, 3, step, sampling);
    CHECK(s.m <= 3);  // class 0 has rows {0, 2, 4, 6}
    check_sets(s, batch, labels);
  }
}

TEST_CASE("sampler: whole-class sets draw each point's own members from its whole class") {
  const auto labels = cyclic_labels(2000, 10);  // 200 rows per class
  const ClassIndex classes(labels, 10);
  std::vector<int64_t> all(2000);
  std::iota(all.begin(), all.end(), 0);
  std::set<int64_t> members_seen;
  size_t members = 0, outside_batch = 0, shared = 0;
  for (uint64_t step = 0; step < 100; ++step) {
    std::vector<int64_t> batch = shuffled(all, 5, step);
    batch.resize(128);
    const auto s = sample_complementary_sets(batch, labels, classes, 7, 8, step, SetSampling::whole_class);
    check_sets(s, batch, labels);
    const std::set<int64_t> in_batch(batch.begin(), batch.end());
    std::vector<int> uses(s.images.size(), 0);
    for (int32_t idx : s.members) {
      ++members, ++uses[size_t(idx)];
      outside_batch += in_batch.count(s.images[size_t(idx)]) == 0;
      members_seen.insert(s.images[size_t(idx)]);
    }
    // A distinct image is encoded once however many sets hold it.
    for (int u : uses) shared += u > 1;
  }
  // About 13 batch rows per class out of 200: most members come from outside the batch (batch
  // sampling takes them from the batch's own rows, below).
  CHECK(double(outside_batch) / double(members) > 0.85);
  CHECK(members_seen.size() > 1900);  // the whole class is drawn from, not a pool of m + 1
  CHECK(shared > 0);                 // some images serve several sets (and are listed once)
}

TEST_CASE("sampler: batch sampling keeps to the batch's own rows where it can") {
  const auto labels = cyclic_labels(2000, 10);
  const ClassIndex classes(labels, 10);
  std::vector<int64_t> all(2000);
  std::iota(all.begin(), all.end(), 0);
  size_t members = 0, outside_batch = 0;
  for (uint64_t step = 0; step < 100; ++step) {
    std::vector<int64_t> batch = shuffled(all, 5, step);
    batch.resize(128);
    const auto s = sample_complementary_sets(batch, labels, classes, 7, 8, step, SetSampling::batch);
    const std::set<int64_t> in_batch(batch.begin(), batch.end());
    for (int32_t idx : s.members) ++members, outside_batch += in_batch.count(s.images[size_t(idx)]) == 0;
  }
  CHECK(double(outside_batch) / double(members) < 0.2);
}

TEST_CASE("sampler: set sampling names round-trip") {
  CHECK(set_sampling_from_name("batch") == SetSampling::batch);
  CHECK(set_sampling_from_name("class") == SetSampling::whole_class);
  CHECK(set_sampling_name(SetSampling::whole_class) == "class");
  CHECK_THROWS_WITH(set_sampling_from_name("manifold"), Catch::Contains("unknown set sampling 'manifold'"));
}

TEST_CASE("sampler: error cases") {
  const SetSampling sampling = GENERATE(SetSampling::batch, SetSampling::whole_class);
  INFO("set sampling " << set_sampling_name(sampling));
  std::vector<int32_t> labels = {0, 0, 1, 2, 2};
  const ClassIndex classes(labels, 3);
  REQUIRE_THROWS_AS(sample_complementary_sets({0}, labels, classes, 0, 1, 0, sampling),
                    std::invalid_argument);
  REQUIRE_THROWS_AS(sample_complementary_sets({}, labels, classes, 3, 1, 0, sampling), std::invalid_argument);
  // Class 1 has only row 2: no complement exists.
  REQUIRE_THROWS_WITH(sample_complementary_sets({0, 2}, labels, classes, 3, 1, 0, sampling),
                      Catch::Contains("class 1 has a single row"));
  REQUIRE_THROWS_AS(sample_complementary_sets({9}, labels, classes, 3, 1, 0, sampling),
                    std::invalid_argument);
  REQUIRE_THROWS_WITH(ClassIndex(std::vector<int32_t>{0, 3}, 3),
                      Catch::Contains("label 3 of row 1"));
  REQUIRE_THROWS_AS(ClassIndex(labels, 3, {7}), std::out_of_range);
  REQUIRE_THROWS_AS(sample_class_sets({1}, classes, 2, 1, 0), std::invalid_argument);  // 1 row
  REQUIRE_THROWS_AS(sample_class_sets({3}, classes, 1, 1, 0), std::invalid_argument);
  REQUIRE_THROWS_AS(sample_class_sets({0}, classes, 0, 1, 0), std::invalid_argument);
}

TEST_CASE("sampler: class sets for unlabelled points") {
  // 10 labelled rows per class, sets for every candidate class of 32 unlabelled points.
  const auto labels = cyclic_labels(1000, 10);
  std::vector<int64_t> labelled_rows;
  for (int64_t i = 0; i < 100; ++i) labelled_rows.push_back(i * 10 + i % 10);
  const ClassIndex labelled(labels, 10, labelled_rows);
  std::vector<int32_t> set_classes;
  for (int p = 0; p < 32; ++p)
    for (int c = 0; c < 10; ++c) set_classes.push_back(c);
  const std::set<int64_t> allowed(labelled_rows.begin(), labelled_rows.end());
  for (int m : {1, 5, 10}) {
    const auto s = sample_class_sets(set_classes, labelled, m, 8, 2);
    REQUIRE(s.m == m);
    REQUIRE(s.offsets.size() == set_classes.size() + 1);
    REQUIRE(std::set<int64_t>(s.images.begin(), s.images.end()).size() == s.images.size());
    REQUIRE(s.images.size() <= 100);  // only labelled rows, each once
    for (size_t i = 0; i < set_classes.size(); ++i) {
      REQUIRE(s.offsets[i + 1] - s.offsets[i] == m);
      std::set<int64_t> rows;
      for (int32_t k = s.offsets[i]; k < s.offsets[i + 1]; ++k) {
        const int64_t row = s.images[size_t(s.members[size_t(k)])];
        REQUIRE(allowed.count(row) == 1);
        REQUIRE(labels[size_t(row)] == set_classes[i]);
        rows.insert(row);
      }
      REQUIRE(rows.size() == size_t(m));
    }
    const auto again = sample_class_sets(set_classes, labelled, m, 8, 2);
    CHECK(again.members == s.members);
    CHECK(again.images == s.images);
  }
  REQUIRE_THROWS_WITH(sample_class_sets({0}, labelled, 11, 8, 2),
                      Catch::Contains("class 0 has 10 labelled rows, fewer than m = 11"));
}

TEST_CASE("sampler: shuffled is a permutation") {
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < 1000; ++i) rows.push_back(i * 3);
  auto p = shuffled(rows, 77, 5);
  CHECK(p != rows);
  std::sort(p.begin(), p.end());
  CHECK(p == rows);
  CHECK(shuffled({}, 1, 1).empty());
  // Each row lands in the first half about half the time over many epochs.
  int first_half = 0;
  for (uint64_t e = 0; e < 2000; ++e) {
    const auto q = shuffled(rows, 77, e);
    first_half += std::find(q.begin(), q.end(), 0) - q.begin() < 500;
  }
  CHECK(first_half > 850);
  CHECK(first_half < 1150);
}
