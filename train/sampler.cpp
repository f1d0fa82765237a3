#include "train/sampler.h"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <numeric>
#include <stdexcept>

#include "engine/rng.h"

namespace equivae::data {

uint32_t Draws::bits() {
  const uint64_t i = next++;
  // Same block/lane layout as engine/rng.h's philox_bits, plus the stream tag in word 2.
  const uint64_t block = i >> 2;
  const Philox4x32 r =
      philox4x32_10(Philox4x32{{uint32_t(block), uint32_t(block >> 32), uint32_t(stream), 0u}},
                    uint32_t(seed), uint32_t(seed >> 32));
  return r.v[i & 3];
}

int64_t Draws::below(int64_t n) {
  const uint64_t hi = bits();
  const uint64_t x = (hi << 32) | bits();
  return int64_t(x % uint64_t(n));
}

namespace {

// k distinct values of [0, n), k <= n (Floyd's algorithm: k draws, every k-subset equally likely;
// the linear membership test is fine for the small k of a complementary set).
void choose_distinct(int64_t n, int k, Draws& d, std::vector<int64_t>& out) {
  out.clear();
  for (int64_t j = n - k; j < n; ++j) {
    const int64_t t = d.below(j + 1);
    out.push_back(std::find(out.begin(), out.end(), t) == out.end() ? t : j);
  }
}

// Hands out image indices on first use, so `images` holds only rows that some set uses.
struct ImageTable {
  std::vector<std::vector<int32_t>> slot;  // slot[c][pool position] -> image index or -1
  ComplementarySets* out;
  int32_t index(int c, int64_t pos, int64_t row) {
    int32_t& s = slot[c][pos];
    if (s < 0) {
      s = int32_t(out->images.size());
      out->images.push_back(row);
    }
    return s;
  }
};

}  // namespace

ClassIndex::ClassIndex(const std::vector<int32_t>& labels, int num_classes)
    : rows(size_t(std::max(num_classes, 0))) {
  for (size_t r = 0; r < labels.size(); ++r) {
    if (labels[r] < 0 || labels[r] >= num_classes)
      throw std::invalid_argument(fmt::format("ClassIndex: label {} of row {} is outside [0, {})",
                                              labels[r], r, num_classes));
    rows[labels[r]].push_back(int64_t(r));
  }
}

ClassIndex::ClassIndex(const std::vector<int32_t>& labels, int num_classes,
                       const std::vector<int64_t>& subset)
    : rows(size_t(std::max(num_classes, 0))) {
  for (int64_t r : subset) {
    if (r < 0 || r >= int64_t(labels.size()))
      throw std::out_of_range(
          fmt::format("ClassIndex: row {} is outside [0, {})", r, labels.size()));
    const int32_t c = labels[r];
    if (c < 0 || c >= num_classes)
      throw std::invalid_argument(
          fmt::format("ClassIndex: label {} of row {} is outside [0, {})", c, r, num_classes));
    rows[c].push_back(r);
  }
  for (auto& v : rows) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  }
}

SetSampling set_sampling_from_name(const std::string& name) {
  if (name == "batch") return SetSampling::batch;
  if (name == "class") return SetSampling::whole_class;
  throw std::invalid_argument(fmt::format("unknown set sampling '{}' (batch or class)", name));
}

std::string set_sampling_name(SetSampling sampling) {
  return sampling == SetSampling::batch ? "batch" : "class";
}

ComplementarySets sample_complementary_sets(const std::vector<int64_t>& batch_rows,
                                            const std::vector<int32_t>& labels,
                                            const ClassIndex& classes, int m_max, uint64_t seed,
                                            uint64_t step, SetSampling sampling) {
  if (m_max < 1)
    throw std::invalid_argument(fmt::format("complementary sets: m_max = {} < 1", m_max));
  if (batch_rows.empty()) throw std::invalid_argument("complementary sets: empty batch");
  const int num_classes = int(classes.rows.size());

  // pool[c] starts as the batch's distinct rows of class c, sorted.
  std::vector<std::vector<int64_t>> pool(num_classes);
  std::vector<int32_t> batch_class(batch_rows.size());
  for (size_t b = 0; b < batch_rows.size(); ++b) {
    const int64_t row = batch_rows[b];
    if (row < 0 || row >= int64_t(labels.size()))
      throw std::invalid_argument(fmt::format(
          "complementary sets: batch row {} is outside the {} labels", row, labels.size()));
    const int32_t c = labels[row];
    if (c < 0 || c >= num_classes)
      throw std::invalid_argument(fmt::format(
          "complementary sets: label {} of row {} is outside [0, {})", c, row, num_classes));
    batch_class[b] = c;
    pool[c].push_back(row);
  }
  // The largest m every batch class can serve: its distinct rows (index plus batch) minus one.
  int64_t cap = m_max;
  for (int c = 0; c < num_classes; ++c) {
    auto& p = pool[c];
    if (p.empty()) continue;
    std::sort(p.begin(), p.end());
    p.erase(std::unique(p.begin(), p.end()), p.end());
    const auto& all = classes.rows[c];
    int64_t available = int64_t(all.size());
    for (int64_t r : p) available += !std::binary_search(all.begin(), all.end(), r);
    if (available < 2)
      throw std::invalid_argument(fmt::format(
          "complementary sets: class {} has a single row ({}), so it has no complement", c, p[0]));
    cap = std::min(cap, available - 1);
  }

  Draws d{seed, Stream::ComplementarySets, step << 32};
  ComplementarySets out;
  out.m = int(1 + d.below(cap));
  const int m = out.m;

  // pool[c][0, batch_part[c]) is sorted and holds every batch row of class c.
  std::vector<size_t> batch_part(num_classes);
  for (int c = 0; c < num_classes; ++c) {
    auto& p = pool[c];
    const auto& all = classes.rows[c];
    if (sampling == SetSampling::whole_class && !p.empty()) {
      std::vector<int64_t> whole;
      whole.reserve(all.size() + p.size());
      std::set_union(all.begin(), all.end(), p.begin(), p.end(), std::back_inserter(whole));
      p = std::move(whole);
    }
    batch_part[c] = p.size();
    if (p.empty()) continue;
    // batch: top up small pools to m+1 rows with random other rows of the class (rejection: a
    // pool that needs topping up has at most m rows, and the cap guarantees enough candidates).
    while (int64_t(p.size()) < m + 1) {
      const int64_t r = all[size_t(d.below(int64_t(all.size())))];
      if (std::find(p.begin(), p.end(), r) == p.end()) p.push_back(r);
    }
  }

  ImageTable table{{}, &out};
  for (int c = 0; c < num_classes; ++c) table.slot.emplace_back(pool[c].size(), -1);
  out.offsets.reserve(batch_rows.size() + 1);
  out.offsets.push_back(0);
  out.members.reserve(batch_rows.size() * size_t(m));
  std::vector<int64_t> pick;
  for (size_t b = 0; b < batch_rows.size(); ++b) {
    const int c = batch_class[b];
    const auto& p = pool[c];
    const auto first = p.begin(), last = p.begin() + int64_t(batch_part[c]);
    const int64_t own = std::lower_bound(first, last, batch_rows[b]) - first;
    // m of the other pool.size() - 1 positions: skip over the point's own position.
    choose_distinct(int64_t(p.size()) - 1, m, d, pick);
    for (int64_t k : pick) {
      const int64_t pos = k < own ? k : k + 1;
      out.members.push_back(table.index(c, pos, p[size_t(pos)]));
    }
    out.offsets.push_back(int32_t(out.members.size()));
  }
  return out;
}

ComplementarySets sample_class_sets(const std::vector<int32_t>& set_classes,
                                    const ClassIndex& labelled, int m, uint64_t seed,
                                    uint64_t step) {
  if (m < 1) throw std::invalid_argument(fmt::format("class sets: m = {} < 1", m));
  const int num_classes = int(labelled.rows.size());
  std::vector<int64_t> sets_of(num_classes, 0);
  for (int32_t c : set_classes) {
    if (c < 0 || c >= num_classes)
      throw std::invalid_argument(
          fmt::format("class sets: class {} is outside [0, {})", c, num_classes));
    ++sets_of[c];
  }
  Draws d{seed, Stream::ClassSets, step << 32};
  std::vector<std::vector<int64_t>> pool(num_classes);
  for (int c = 0; c < num_classes; ++c) {
    if (sets_of[c] == 0) continue;
    const auto& all = labelled.rows[c];
    if (int64_t(all.size()) < m)
      throw std::invalid_argument(fmt::format(
          "class sets: class {} has {} labelled rows, fewer than m = {}", c, all.size(), m));
    // A random pool about as large as the number of sets of this class (partial Fisher-Yates).
    const int64_t size = std::min(int64_t(all.size()), std::max(int64_t(m), sets_of[c]));
    auto& p = pool[c];
    p = all;
    for (int64_t i = 0; i < size; ++i)
      std::swap(p[size_t(i)], p[size_t(i + d.below(int64_t(p.size()) - i))]);
    p.resize(size_t(size));
  }

  ComplementarySets out;
  out.m = m;
  ImageTable table{{}, &out};
  for (int c = 0; c < num_classes; ++c) table.slot.emplace_back(pool[c].size(), -1);
  out.offsets.reserve(set_classes.size() + 1);
  out.offsets.push_back(0);
  out.members.reserve(set_classes.size() * size_t(m));
  std::vector<int64_t> pick;
  for (int32_t c : set_classes) {
    const auto& p = pool[c];
    choose_distinct(int64_t(p.size()), m, d, pick);
    for (int64_t pos : pick) out.members.push_back(table.index(c, pos, p[size_t(pos)]));
    out.offsets.push_back(int32_t(out.members.size()));
  }
  return out;
}

std::vector<int64_t> shuffled(const std::vector<int64_t>& rows, uint64_t seed, uint64_t epoch) {
  std::vector<int64_t> out = rows;
  Draws d{seed, Stream::Shuffle, epoch << 32};
  for (int64_t i = int64_t(out.size()) - 1; i > 0; --i)
    std::swap(out[size_t(i)], out[size_t(d.below(i + 1))]);
  return out;
}

}  // namespace equivae::data
