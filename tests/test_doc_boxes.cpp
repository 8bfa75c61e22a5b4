// "Run it and check" boxes: every box in docs/*.md is run, and its output must
// be what the page shows. A box is a fenced block right after a marker line:
//
//   <!-- check -->                      integers and every other character exactly
//   <!-- check: tolerance 0.001 -->     numbers with a '.' or an exponent within
//                                       that relative tolerance; integers exactly
//   ```
//   $ COMMAND
//   expected output line
//   ...                                 (any number of lines, also none)
//   expected output line
//   ```
//
// COMMAND runs with bash from the repository root; a leading `build/` or
// `./build/` names the build directory, and `python3` is a python3 with numpy.
// The expected lines must appear in the command's output in this order; `...`
// skips lines. (The marker is an HTML comment, so the page shows only the box.)
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_files.h"

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = fs::path(TINYQAT_GOLDEN_DIR).parent_path().parent_path();

struct Box {
  std::string page;
  int line = 0;  // of the marker
  double tolerance = 0;
  std::string command;
  std::vector<std::string> expected;
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every box of one page. A marker without a well-formed box after it is an error.
std::vector<Box> boxes_of(const fs::path& page) {
  static const std::regex marker(R"(^<!-- check(: tolerance ([0-9.eE+-]+))? -->\s*$)");
  std::vector<Box> boxes;
  const std::vector<std::string> lines = lines_of(read_file(page));
  for (size_t i = 0; i < lines.size(); ++i) {
    std::smatch m;
    if (!std::regex_match(lines[i], m, marker)) continue;
    Box b;
    b.page = page.filename().string();
    b.line = static_cast<int>(i + 1);
    if (m[2].matched) b.tolerance = std::stod(m[2].str());
    INFO(b.page << ":" << b.line << ": a check marker must be followed by ``` and a `$ command` line");
    REQUIRE(i + 2 < lines.size());
    REQUIRE(lines[i + 1].rfind("```", 0) == 0);
    REQUIRE(lines[i + 2].rfind("$ ", 0) == 0);
    b.command = lines[i + 2].substr(2);
    size_t j = i + 3;
    for (; j < lines.size() && lines[j].rfind("```", 0) != 0; ++j) b.expected.push_back(lines[j]);
    REQUIRE(j < lines.size());
    boxes.push_back(b);
    i = j;
  }
  return boxes;
}

std::string python_with_numpy() {
  for (const char* candidate : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(candidate) + " -c 'import numpy' >/dev/null 2>&1").c_str()) == 0) return candidate;
  return "";
}

// The command as the test runs it: build/ -> the build directory, python3 -> one with numpy.
std::string resolve(std::string cmd, const std::string& python) {
  const std::string build = std::string(TINYQAT_BINARY_DIR) + "/";
  cmd = std::regex_replace(cmd, std::regex(R"((^|[\s|;(])(\./)?build/)"), "$1" + build);
  cmd = std::regex_replace(cmd, std::regex(R"((^|[\s|;(])(/usr/bin/)?python3(?=\s))"), "$1" + python);
  return cmd;
}

std::string run(const std::string& cmd, int* status) {
  const std::string full = "cd '" + kRoot.string() + "' && bash -c '" + std::regex_replace(cmd, std::regex("'"), "'\\''") + "' 2>&1";
  return tq_test::capture(full, status);
}

// Splits a line into alternating text and numbers.
std::vector<std::string> tokens(const std::string& line) {
  static const std::regex number(R"([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)");
  std::vector<std::string> out;
  size_t at = 0;
  for (auto it = std::sregex_iterator(line.begin(), line.end(), number); it != std::sregex_iterator(); ++it) {
    out.push_back(line.substr(at, static_cast<size_t>(it->position()) - at));
    out.push_back(it->str());
    at = static_cast<size_t>(it->position() + it->length());
  }
  out.push_back(line.substr(at));
  return out;
}

bool is_float_literal(const std::string& t) { return t.find_first_of(".eE") != std::string::npos; }

// Does `got` match `want`? Text and integers exactly; floats within the tolerance.
bool line_matches(const std::string& want, const std::string& got, double tolerance) {
  if (want == got) return true;
  if (tolerance == 0) return false;
  const std::vector<std::string> a = tokens(want), b = tokens(got);
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (i % 2 == 0 || !is_float_literal(a[i])) {
      if (a[i] != b[i]) return false;
      continue;
    }
    const double x = std::stod(a[i]), y = std::stod(b[i]);
    if (std::fabs(x - y) > tolerance * std::max(std::fabs(x), 1e-12)) return false;
  }
  return true;
}

// The expected lines, with `...` skipping any number of lines, in order.
bool output_matches(const std::vector<std::string>& want, const std::vector<std::string>& got, double tolerance,
                    std::string* first_missing) {
  size_t g = 0;
  bool skipping = false;
  for (const std::string& w : want) {
    if (w == "...") {
      skipping = true;
      continue;
    }
    if (skipping) {
      while (g < got.size() && !line_matches(w, got[g], tolerance)) ++g;
    }
    if (g >= got.size() || !line_matches(w, got[g], tolerance)) {
      *first_missing = w;
      return false;
    }
    ++g;
    skipping = false;
  }
  return true;
}

}  // namespace

TEST_CASE("doc boxes: the box format is parsed and compared as documented", "[docs][boxes]") {
  CHECK(line_matches("loss 1.784 at step 3", "loss 1.7841 at step 3", 1e-3));
  CHECK_FALSE(line_matches("loss 1.784 at step 3", "loss 1.794 at step 3", 1e-3));
  CHECK_FALSE(line_matches("loss 1.784 at step 3", "loss 1.784 at step 4", 1e-3));  // integers exactly
  CHECK_FALSE(line_matches("loss 1.784", "loss 1.7841", 0));
  CHECK_FALSE(line_matches("loss 1.784 at", "loss 1.784 on", 1e-3));
  std::string missing;
  CHECK(output_matches({"a 1", "...", "c 3"}, {"a 1", "b 2", "x", "c 3", "d"}, 0, &missing));
  CHECK_FALSE(output_matches({"a 1", "c 3"}, {"a 1", "b 2", "c 3"}, 0, &missing));  // no skip without ...
  CHECK(missing == "c 3");
  CHECK_FALSE(output_matches({"c 3", "...", "a 1"}, {"a 1", "c 3"}, 0, &missing));  // order matters
  CHECK(resolve("./build/examples/x | grep y", "/usr/bin/python3") ==
        std::string(TINYQAT_BINARY_DIR) + "/examples/x | grep y");
  CHECK(resolve("python3 tools/a.py", "PY") == "PY tools/a.py");
}

TEST_CASE("doc boxes: every box's command prints what its page shows", "[docs][boxes]") {
  const std::string python = python_with_numpy();
  std::vector<Box> boxes;
  // Every page has a box.
  for (const auto& entry : fs::directory_iterator(kRoot / "docs")) {
    if (entry.path().extension() != ".md") continue;
    const std::vector<Box> page_boxes = boxes_of(entry.path());
    const std::string name = entry.path().filename().string();
    INFO(name << " has no \"run it and check\" box");
    CHECK(!page_boxes.empty());
    for (const Box& b : page_boxes) boxes.push_back(b);
  }
  REQUIRE(boxes.size() >= 25);
  for (const Box& b : boxes) {
    INFO(b.page << ":" << b.line << ": $ " << b.command);
    if (python.empty() && b.command.find("python3") != std::string::npos) {
      WARN("skipped (no python3 with numpy): " << b.page << ":" << b.line);
      continue;
    }
    int status = -1;
    const std::string out = run(resolve(b.command, python), &status);
    INFO("output:\n" << out);
    CHECK(status == 0);
    std::string missing;
    const bool ok = output_matches(b.expected, lines_of(out), b.tolerance, &missing);
    INFO("first expected line not found: " << missing);
    CHECK(ok);
  }
}
