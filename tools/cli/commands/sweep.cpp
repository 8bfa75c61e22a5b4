// tinyqat sweep: one recipe over several seeds (and bit widths), mean and
// standard deviation per row (docs/cli.md "sweep"). For each seed it runs
// `tinyqat train` with the --train options, then, with --qat, `tinyqat qat`
// from that seed's float model once per --configs entry; each run is this
// same program started anew with --json, so a sweep measures exactly what
// the single commands do.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "common.h"

namespace tq::cli {

namespace {

// "0-4" -> 0..4, "1,3,7" -> {1, 3, 7}; a mix ("0-2,9") works too.
std::vector<uint64_t> parse_seeds(const std::string& text) {
  std::vector<uint64_t> seeds;
  std::stringstream ss(text);
  std::string item;
  auto number = [&](const std::string& s) {
    size_t used = 0;
    unsigned long long v = 0;
    try {
      if (s.empty() || s[0] == '-' || s[0] == '+') throw std::invalid_argument(s);
      v = std::stoull(s, &used);
    } catch (...) {
      used = std::string::npos;
    }
    if (used != s.size()) throw UsageError(fmt::format("--seeds '{}': '{}' is not a seed (e.g. 0-4 or 0,2,5)", text, s));
    return static_cast<uint64_t>(v);
  };
  while (std::getline(ss, item, ',')) {
    const auto dash = item.find('-', 1);
    if (dash == std::string::npos) {
      seeds.push_back(number(item));
      continue;
    }
    const uint64_t a = number(item.substr(0, dash)), b = number(item.substr(dash + 1));
    if (b < a || b - a >= 1000) throw UsageError(fmt::format("--seeds '{}': the range {} is empty or longer than 1000", text, item));
    for (uint64_t s = a; s <= b; ++s) seeds.push_back(s);
  }
  if (seeds.empty()) throw UsageError(fmt::format("--seeds '{}' names no seed", text));
  // Several ranges add up: the total has the ranges' limit; a seed named
  // twice would run twice into the same files and count twice in the mean.
  if (seeds.size() > 1000)
    throw UsageError(fmt::format("--seeds '{}' names {} seeds, more than 1000", text, seeds.size()));
  std::vector<uint64_t> sorted = seeds;
  std::sort(sorted.begin(), sorted.end());
  if (const auto twice = std::adjacent_find(sorted.begin(), sorted.end()); twice != sorted.end())
    throw UsageError(fmt::format("--seeds '{}' names seed {} twice", text, *twice));
  return seeds;
}

// Splits options at white space (no quoting: tinyqat's options need none).
std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::stringstream ss(text);
  std::string w;
  while (ss >> w) words.push_back(w);
  return words;
}

// Options the sweep sets itself may not be in a recipe.
void check_recipe(const std::vector<std::string>& words, const char* option) {
  for (const std::string& w : words) {
    for (const char* own : {"--seed", "--out", "--from", "--json", "--resume", "--weight-bits", "--activation-bits", "--bits", "--data", "--threads"})
      if (w == own || w.rfind(std::string(own) + "=", 0) == 0)
        throw UsageError(fmt::format("{}: {} is set by the sweep itself", option, own));
    if (w.find('\'') != std::string::npos) throw UsageError(fmt::format("{}: '{}' holds a quote", option, w));
  }
}

std::string shell_quote(const std::string& s) { return "'" + s + "'"; }

std::string self_path() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("sweep: cannot find its own program (/proc/self/exe)");
  return p.string();
}

// Runs `tinyqat <args> --json`, returns its JSON; an error names the command line.
json run_json(const std::vector<std::string>& args, const std::string& workdir) {
  std::string line = shell_quote(self_path());
  for (const std::string& a : args) line.append(" ").append(shell_quote(a));
  const std::string out = workdir + "/sweep_stdout.json", err = workdir + "/sweep_stderr.txt";
  const int status = std::system((line + " --json > " + shell_quote(out) + " 2> " + shell_quote(err)).c_str());
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  if (status != 0) {
    std::string e = read(err);
    while (!e.empty() && e.back() == '\n') e.pop_back();
    throw std::runtime_error(fmt::format("sweep: `tinyqat {}` failed: {}", fmt::join(args, " "), e));
  }
  return json::parse(read(out));
}

struct Row {
  explicit Row(std::string n) : name(std::move(n)) {}
  std::string name;
  std::vector<double> values;   // one per seed, percent
  std::vector<double> gaps;     // int8 - float per seed (QAT rows)
  std::vector<double> agreement;
};

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

// The sample standard deviation (n - 1); 0 for one value.
double sd(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

}  // namespace

int run_sweep(int argc, char** argv) {
  cxxopts::Options o("tinyqat sweep",
                     "Run a recipe (train, then optionally qat at several bit widths) over several seeds; print the "
                     "mean and standard deviation per row.");
  o.add_options()("seeds", "seeds, e.g. 0-4 or 0,2,5", cxxopts::value<std::string>()->default_value("0-4"))(
      "train", "options of `tinyqat train` for the float model of each seed, e.g. \"--epochs 15 --lr-schedule cosine\"",
      cxxopts::value<std::string>()->default_value(""))(
      "qat", "options of `tinyqat qat` run from each seed's float model (omit: float only)", cxxopts::value<std::string>())(
      "configs", "with --qat: bit widths, one qat run each, e.g. w4a4,w3a3,w8a8 (omit: qat's own default)",
      cxxopts::value<std::string>()->default_value(""))(
      "workdir", "where the model files go", cxxopts::value<std::string>()->default_value("models/sweep"));
  add_common(o);
  auto r = parse(o, argc, argv);
  const std::vector<uint64_t> seeds = parse_seeds(r["seeds"].as<std::string>());
  const std::vector<std::string> train_words = split_words(r["train"].as<std::string>());
  check_recipe(train_words, "--train");
  const bool qat = r.count("qat") > 0;
  const std::vector<std::string> qat_words = qat ? split_words(r["qat"].as<std::string>()) : std::vector<std::string>{};
  check_recipe(qat_words, "--qat");
  std::vector<std::pair<int, int>> configs;
  if (!r["configs"].as<std::string>().empty()) {
    if (!qat) throw UsageError("--configs needs --qat");
    configs = parse_configs(r["configs"].as<std::string>());
  }
  std::vector<std::string> files = {"sweep_stdout.json", "sweep_stderr.txt"};
  for (const uint64_t seed : seeds) {
    files.push_back(fmt::format("float_seed{}.safetensors", seed));
    if (qat && configs.empty()) files.push_back(fmt::format("qat_seed{}.safetensors", seed));
    for (auto [w, a] : configs) files.push_back(fmt::format("w{}a{}_seed{}.safetensors", w, a, seed));
  }
  const std::string wd = prepare_workdir(r, files);
  const std::vector<std::string> common = {"--data", r["data"].as<std::string>(), "--threads",
                                           std::to_string(r["threads"].as<int>())};

  Row float_row("float");
  std::vector<Row> qat_rows;
  if (qat) {
    if (configs.empty()) qat_rows.emplace_back("qat");
    for (auto [w, a] : configs) qat_rows.emplace_back(fmt::format("W{}A{}", w, a));
  }
  json runs = json::array();
  for (const uint64_t seed : seeds) {
    const std::string float_path = fmt::format("{}/float_seed{}.safetensors", wd, seed);
    std::vector<std::string> args = {"train"};
    args.insert(args.end(), train_words.begin(), train_words.end());
    args.insert(args.end(), {"--seed", std::to_string(seed), "--out", float_path});
    args.insert(args.end(), common.begin(), common.end());
    const json f = run_json(args, wd);
    const double float_acc = f.at("accuracy").get<double>();
    float_row.values.push_back(float_acc);
    runs.push_back({{"seed", seed}, {"row", "float"}, {"accuracy", float_acc}});
    if (!r.count("json")) std::fprintf(stderr, "seed %llu: float %.2f%%\n", static_cast<unsigned long long>(seed), float_acc);
    for (size_t k = 0; k < qat_rows.size(); ++k) {
      Row& row = qat_rows[k];
      std::vector<std::string> q = {"qat", "--from", float_path};
      q.insert(q.end(), qat_words.begin(), qat_words.end());
      std::string tag = "qat";
      if (!configs.empty()) {
        q.insert(q.end(), {"--weight-bits", std::to_string(configs[k].first), "--activation-bits",
                           std::to_string(configs[k].second)});
        tag = fmt::format("w{}a{}", configs[k].first, configs[k].second);
      }
      q.insert(q.end(), {"--seed", std::to_string(seed), "--out", fmt::format("{}/{}_seed{}.safetensors", wd, tag, seed)});
      q.insert(q.end(), common.begin(), common.end());
      const json j = run_json(q, wd);
      const double acc = j.at("accuracy").get<double>(), agree = j.at("agreement").get<double>();
      row.values.push_back(acc);
      row.gaps.push_back(acc - float_acc);
      row.agreement.push_back(agree);
      runs.push_back({{"seed", seed}, {"row", row.name}, {"accuracy", acc}, {"float_accuracy", float_acc},
                      {"fake_quant_accuracy", j.at("fake_quant_accuracy")}, {"agreement", agree}});
      if (!r.count("json"))
        std::fprintf(stderr, "seed %llu: %s %.2f%% (%+.2f against float, agreement %.2f%%)\n",
                     static_cast<unsigned long long>(seed), row.name.c_str(), acc, acc - float_acc, agree);
    }
  }

  std::string seeds_text;
  for (size_t i = 0; i < seeds.size(); ++i) seeds_text.append(i ? "," : "").append(std::to_string(seeds[i]));
  std::string s = fmt::format("\n{} seed(s): {}\n\n| row | ", seeds.size(), seeds_text);
  for (uint64_t seed : seeds) s += fmt::format("seed {} | ", seed);
  s += "mean ± sd | worst | worst against float | lowest agreement |\n|---|";
  for (size_t i = 0; i < seeds.size(); ++i) s += "---|";
  s += "---|---|---|---|\n";
  json rows = json::array();
  std::vector<Row> all = {float_row};
  all.insert(all.end(), qat_rows.begin(), qat_rows.end());
  for (const Row& row : all) {
    s += fmt::format("| {} | ", row.name);
    for (double v : row.values) s += fmt::format("{:.2f}% | ", v);
    const double worst = *std::min_element(row.values.begin(), row.values.end());
    s += fmt::format("{:.2f} ± {:.2f}% | {:.2f}% | ", mean(row.values), sd(row.values), worst);
    json rj = {{"row", row.name}, {"accuracies", row.values}, {"mean", mean(row.values)}, {"sd", sd(row.values)},
               {"worst", worst}};
    if (row.gaps.empty()) {
      s += "| |\n";
    } else {
      const double worst_gap = *std::min_element(row.gaps.begin(), row.gaps.end());
      const double lowest = *std::min_element(row.agreement.begin(), row.agreement.end());
      s += fmt::format("{:+.2f} | {:.2f}% |\n", worst_gap, lowest);
      rj["mean_against_float"] = mean(row.gaps);
      rj["worst_against_float"] = worst_gap;
      rj["lowest_agreement"] = lowest;
    }
    rows.push_back(rj);
  }
  finish(r, {{"seeds", seeds}, {"rows", rows}, {"runs", runs}}, s);
  return 0;
}

}  // namespace tq::cli
