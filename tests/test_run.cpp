// Run options (train/run_options.h), the run state of a checkpoint (train/run_state.h) and the
// .npz writer (train/npz.h): options restored from a file pass the command line's checks, a
// differing one is refused by name, a checkpoint carries its options and class names, and an
// .npz holds exactly the bytes and headers NumPy reads.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <tuple>

#include "tests/fixtures.h"
#include "train/checkpoint.h"
#include "train/npz.h"
#include "train/run_options.h"
#include "train/run_state.h"

using namespace equivae;
using equivae::fixtures::TempDir;
using Catch::Contains;

namespace {

// Parses `args` (without the program name) into fresh options.
struct Parsed {
  RunOptions o;
  CLI::App app;
  OptionTable table{app, o};
  explicit Parsed(std::vector<std::string> args) {
    std::reverse(args.begin(), args.end());  // CLI11 takes them last first
    app.parse(args);
  }
};

}  // namespace

TEST_CASE("run options: numbers are checked with the option's name and range", "[run]") {
  CHECK_THROWS_WITH(Parsed({"--batch-size", "0"}), Contains("--batch-size") && Contains("0 is not an integer in [1, 65536]"));
  CHECK_THROWS_WITH(Parsed({"--seed", "-1"}), Contains("-1 is not an integer in [0, 18446744073709551615]"));
  CHECK_THROWS_WITH(Parsed({"--lr", "0"}), Contains("0 is not a number in (0, 10]"));
  CHECK_THROWS_WITH(Parsed({"--lr", "inf"}), Contains("inf is not a number"));
  CHECK_THROWS_WITH(Parsed({"--epochs", "2.5"}), Contains("2.5 is not an integer"));
  CHECK_THROWS_WITH(Parsed({"--d-v", "16x"}), Contains("16x is not an integer"));
  const Parsed ok({"--seed", "18446744073709551615", "--lr", "0.5", "--filters", "1", "2", "3", "4", "5"});
  CHECK(ok.o.seed == UINT64_MAX);
  CHECK(ok.o.lr == 0.5);
  CHECK(ok.o.filters == std::vector<int64_t>{1, 2, 3, 4, 5});
  RunOptions bad;
  bad.batch_size = 64, bad.max_batch_size = 32;
  CHECK_THROWS_WITH(check_options(bad), Contains("--max-batch-size 32 is below --batch-size 64"));
  const Parsed cpu_plans({"--reproducible-plans"});
  CHECK(cpu_plans.o.reproducible_plans);
  CHECK_THROWS_WITH(check_options(cpu_plans.o), Contains("--reproducible-plans needs --device cuda"));
}

TEST_CASE("run options: --unlabelled-sets and --teacher-warmup reach the training configuration", "[run]") {
  const ModelConfig model;
  CHECK_FALSE(train_config(Parsed({}).o, model).unlabelled_sets_all);  // the default: random sets
  CHECK(train_config(Parsed({"--unlabelled-sets", "all"}).o, model).unlabelled_sets_all);
  CHECK_THROWS_WITH(Parsed({"--unlabelled-sets", "some"}), Contains("--unlabelled-sets") && Contains("some"));
  CHECK(train_config(Parsed({}).o, model).teacher_warmup_epochs == 0);  // the default: the paper's recipe
  CHECK(train_config(Parsed({"--teacher-warmup", "2.5"}).o, model).teacher_warmup_epochs == 2.5);
  CHECK_THROWS_WITH(Parsed({"--teacher-warmup", "-1"}), Contains("--teacher-warmup"));
}

TEST_CASE("run options: a run's options come back through the same checks; a differing flag is refused", "[run]") {
  Parsed first({"--train-limit", "2000", "--seed", "3", "--d-v", "4", "--epochs", "5", "--filters", "4", "4", "8", "8", "8"});
  resolve_defaults(first.o, first.table.given());
  const nlohmann::json stored = first.table.to_json();
  CHECK(stored.at("train-limit") == 2000);
  CHECK(stored.at("filters") == nlohmann::json({4, 4, 8, 8, 8}));

  // Not given: restored. Given and equal: fine. --epochs (extendable): the new value.
  Parsed resumed({"--seed", "3", "--epochs", "9", "--out", "elsewhere"});
  resumed.table.restore(stored, "checkpoint c", resumed.table.given());
  CHECK(resumed.o.train_limit == 2000);
  CHECK(resumed.o.d_v == 4);
  CHECK(resumed.o.filters == std::vector<int64_t>{4, 4, 8, 8, 8});
  CHECK(resumed.o.epochs == 9);
  CHECK(resumed.o.out == "elsewhere");  // of this command only

  Parsed differs({"--train-limit", "300"});
  CHECK_THROWS_WITH(differs.table.restore(stored, "checkpoint c", differs.table.given()),
                    Contains("--train-limit 300 differs from the run's 2000 (checkpoint c)"));

  // --average-from never changes training: it may change until the run reaches the old or new epoch.
  for (const auto& [run_value, given_value, epochs_done, allowed] : std::vector<std::tuple<int, int, int, bool>>{
           {0, 21, 20, true}, {0, 21, 21, false}, {11, 0, 10, true}, {11, 0, 11, false}, {11, 11, 30, true}}) {
    nlohmann::json run = stored;
    run["average-from"] = run_value;
    Parsed p({"--average-from", std::to_string(given_value)});
    INFO(run_value << " -> " << given_value << " after " << epochs_done << " epochs");
    if (allowed) {
      p.table.restore(run, "checkpoint c", p.table.given(), epochs_done);
      CHECK(p.o.average_from == given_value);
    } else {
      CHECK_THROWS_WITH(p.table.restore(run, "checkpoint c", p.table.given(), epochs_done),
                        Contains(fmt::format("--average-from {} differs from the run's {} (checkpoint c), which has "
                                             "done {} epochs", given_value, run_value, epochs_done)));
    }
  }

  // A stored value is hostile input: out of range, the wrong type, or an unknown name.
  for (const auto& [field, value, message] : std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
           {"batch-size", 0, "0 is not an integer in [1, 65536]"},
           {"seed", -1, "-1 is not an integer"},
           {"lr", "1e400", "is not a number in (0, 10]"},
           {"d-r", nlohmann::json::object(), "option \"d-r\" is {}"},
           {"init", "zeros", "zeros"},
           {"no-such-option", 1, "unknown option \"no-such-option\""}}) {
    nlohmann::json bad = stored;
    bad[field] = value;
    Parsed p({});
    INFO(field);
    CHECK_THROWS_WITH(p.table.restore(bad, "checkpoint c", {}), Contains("checkpoint c") && Contains(message));
  }
  Parsed p({});
  CHECK_THROWS_WITH(p.table.restore(nlohmann::json::array(), "checkpoint c", {}), Contains("expected an object"));
}

TEST_CASE("run state: a checkpoint carries the run's options and class names, checked on reading", "[run]") {
  TempDir dir;
  ModelConfig m;
  m.filters = {2, 2, 2, 2, 2}, m.hidden = 4, m.d_r = 2, m.d_v = 2, m.num_classes = 3;
  ParameterStore params;
  EquiVAE model(m, params);
  params.allocate(1, DType::f32, Device::cpu);
  RunState s{.model = m, .epoch = 4, .step = 40, .seed = 9, .data = "test/train", .best_epoch = 3, .best_error = 0.25,
             .options = {{"seed", 9}, {"train-limit", 100}}, .classes = {"cat", "dog", "émeu"}};
  const std::string path = dir / "c.safetensors";
  save_checkpoint(path, params, nullptr, run_state_metadata(s));
  const RunState back = read_run_state(path);
  CHECK(back.epoch == 4);
  CHECK(back.step == 40);
  CHECK(back.best_epoch == 3);
  CHECK(back.best_error == 0.25);
  CHECK(back.options == s.options);
  CHECK(back.classes == s.classes);
  CHECK(model_json(back.model) == model_json(m));

  auto with = [&](const std::string& field, const std::string& value) {
    auto meta = run_state_metadata(s);
    meta[field] = value;
    save_checkpoint(path, params, nullptr, meta);
    return path;
  };
  CHECK_THROWS_WITH(read_run_state(with("classes", "[\"a\", \"b\"]")), Contains("metadata classes") && Contains("3 class names"));
  CHECK_THROWS_WITH(read_run_state(with("classes", "[1, 2, 3]")), Contains("metadata classes"));
  CHECK_THROWS_WITH(read_run_state(with("options", "{not json")), Contains("metadata field options is not valid JSON"));
  CHECK_THROWS_WITH(read_run_state(with("best_validation_error", "nan")), Contains("best_validation_error"));
  // A checkpoint from before options were kept: its other fields give them.
  auto meta = run_state_metadata(s);
  meta.erase("options");
  meta.erase("classes");
  save_checkpoint(path, params, nullptr, meta);
  const RunState old = read_run_state(path);
  CHECK(old.options.at("seed") == 9);
  CHECK(old.options.at("filters") == nlohmann::json({2, 2, 2, 2, 2}));
  CHECK(old.options.at("likelihood") == "bernoulli");
  CHECK(old.classes.empty());
}

TEST_CASE("npz: a stored zip of .npy files, headers and bytes as NumPy reads them", "[run]") {
  TempDir dir;
  NpzWriter npz;
  npz.add("r", std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f}, {3, 2});
  npz.add("label", std::vector<int32_t>{4, -1, 2}, {3});
  npz.add("classes", std::vector<std::string>{"ab", "é", "\xff"});
  CHECK_THROWS_WITH(npz.add("bad", std::vector<float>{1.0f}, {2}), Contains("bad: 1 values for a shape of 2"));
  const std::string path = dir / "e.npz";
  npz.write(path);
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.substr(0, 4) == std::string("PK\x03\x04", 4));
  CHECK(bytes.substr(bytes.size() - 22, 4) == std::string("PK\x05\x06", 4));  // end of central directory
  CHECK(uint8_t(bytes[bytes.size() - 12]) == 3);                                 // 3 entries
  // Each member: "<name>.npy", the magic, a header naming dtype and shape padded to 64 bytes, data.
  auto member = [&](const std::string& name) {
    const size_t at = bytes.find(name + ".npy\x93NUMPY");
    REQUIRE(at != std::string::npos);
    const size_t npy = at + name.size() + 4;
    const size_t header_len = uint8_t(bytes[npy + 8]) | uint8_t(bytes[npy + 9]) << 8;
    CHECK((10 + header_len) % 64 == 0);
    return std::pair(bytes.substr(npy + 10, header_len), npy + 10 + header_len);
  };
  const auto [r_header, r_data] = member("r");
  CHECK_THAT(r_header, Contains("'descr': '<f4'") && Contains("'shape': (3, 2)") && Contains("'fortran_order': False"));
  float r[6];
  std::memcpy(r, bytes.data() + r_data, sizeof r);
  CHECK(r[2] == 3.25f);
  CHECK(r[5] == 8.0f);
  const auto [label_header, label_data] = member("label");
  CHECK_THAT(label_header, Contains("'<i4'") && Contains("'shape': (3,)"));
  int32_t label[3];
  std::memcpy(label, bytes.data() + label_data, sizeof label);
  CHECK(label[1] == -1);
  const auto [names_header, names_data] = member("classes");
  CHECK_THAT(names_header, Contains("'<U2'") && Contains("'shape': (3,)"));
  char32_t names[6];
  std::memcpy(names, bytes.data() + names_data, sizeof names);
  CHECK(names[0] == U'a');
  CHECK(names[1] == U'b');
  CHECK(names[2] == U'\u00e9');
  CHECK(names[3] == U'\0');       // padded to the widest
  CHECK(names[4] == U'\ufffd');   // invalid UTF-8
}
