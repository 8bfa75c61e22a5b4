// The docs cannot rot silently: every file a doc page names or links to
// exists, and every function it names as `name()` exists in the sources.
#include <catch2/catch.hpp>

#include "test_files.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = fs::path(TINYQAT_GOLDEN_DIR).parent_path().parent_path();

std::string read_text(const fs::path& p) { return tq_test::read_bytes(p.string()); }

// All text of the code a doc may name: sources, tools, examples, tests, benches, scripts.
const std::string& all_code() {
  static const std::string text = [] {
    std::string t;
    for (const char* dir : {"src", "tools", "examples", "tests", "bench", "scripts", "fuzz"}) {
      if (!fs::exists(kRoot / dir)) continue;
      for (auto& e : fs::recursive_directory_iterator(kRoot / dir)) {
        const auto ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".h" || ext == ".cpp" || ext == ".sh" || ext == ".py" || ext == ".txt"))
          t += read_text(e.path()) + "\n";
      }
    }
    return t;
  }();
  return text;
}

bool looks_like_repo_path(const std::string& s) {
  static const std::regex re(R"(^(src|tools|examples|tests|bench|docs|scripts|fuzz|\.ci)/[A-Za-z0-9_./-]+$)");
  return std::regex_match(s, re) && s.find("..") == std::string::npos;
}

}  // namespace

TEST_CASE("docs: every linked or named file exists, every named function exists", "[docs]") {
  REQUIRE(fs::exists(kRoot / "docs" / "index.md"));
  int files_checked = 0, symbols_checked = 0;
  for (auto& e : fs::directory_iterator(kRoot / "docs")) {
    if (e.path().extension() != ".md") continue;
    const std::string doc = read_text(e.path());
    const std::string name = e.path().filename().string();
    // Markdown links to local files: [text](target), relative to docs/.
    const std::regex link(R"(\]\(([^)#\s]+)(#[^)]*)?\))");
    for (std::sregex_iterator it(doc.begin(), doc.end(), link), end; it != end; ++it) {
      const std::string target = (*it)[1];
      if (target.find("://") != std::string::npos || target.rfind("mailto:", 0) == 0) continue;
      INFO(name << " links to " << target);
      CHECK(fs::exists(e.path().parent_path() / target));
      ++files_checked;
    }
    // `code spans`: repository paths must exist; `name()` must be a function in the code.
    const std::regex span("`([^`\\n]+)`");
    for (std::sregex_iterator it(doc.begin(), doc.end(), span), end; it != end; ++it) {
      std::string s = (*it)[1];
      const std::string path_part = s.substr(0, s.find_first_of(" :"));
      if (looks_like_repo_path(path_part)) {
        std::string p = path_part;
        // "src/nn/linear.{h,cpp}" names two files.
        const auto brace = p.find(".{");
        std::vector<std::string> paths;
        if (brace != std::string::npos && p.back() == '}') {
          std::stringstream exts(p.substr(brace + 2, p.size() - brace - 3));
          std::string x;
          while (std::getline(exts, x, ',')) paths.push_back(p.substr(0, brace + 1) + x);
        } else {
          paths.push_back(p);
        }
        for (auto& q : paths) {
          INFO(name << " names " << q);
          CHECK(fs::exists(kRoot / q));
          ++files_checked;
        }
        continue;
      }
      static const std::regex fn(R"(^(?:[A-Za-z_][A-Za-z0-9_]*::)*([A-Za-z_][A-Za-z0-9_]*)\(\)$)");
      std::smatch m;
      if (std::regex_match(s, m, fn)) {
        INFO(name << " names the function " << s);
        CHECK(all_code().find(std::string(m[1]) + "(") != std::string::npos);
        ++symbols_checked;
      }
    }
  }
  CHECK(files_checked > 30);
  CHECK(symbols_checked > 5);
}

namespace {

// The equation numbers a docs page defines: a line, or a table row's last
// cell, ending in "(N)".
std::set<int> equations_of(const std::string& page) {
  static std::map<std::string, std::set<int>> cache;
  if (auto it = cache.find(page); it != cache.end()) return it->second;
  std::set<int> eqs;
  const fs::path p = kRoot / "docs" / page;
  if (fs::exists(p)) {
    const std::string doc = read_text(p);
    const std::regex numbered(R"(\((\d+)\)[ \t]*(\|[ \t]*)?(\r?\n|$))");
    for (std::sregex_iterator it(doc.begin(), doc.end(), numbered), end; it != end; ++it)
      eqs.insert(std::stoi((*it)[1]));
  }
  return cache[page] = eqs;
}

// The docs page a file's leading comment names first ("" if none). A .cpp
// without one takes its header's (int8_gemm_avx2.cpp: int8_gemm.h).
std::string page_of_file(const fs::path& file) {
  static const std::regex page(R"(docs/([A-Za-z0-9_-]+\.md))");
  auto leading = [&](const fs::path& p) -> std::string {
    if (!fs::exists(p)) return "";
    std::istringstream in(read_text(p));
    std::smatch m;
    for (std::string line; std::getline(in, line) && line.rfind("//", 0) == 0;)
      if (std::regex_search(line, m, page)) return m[1];
    return "";
  };
  std::string found = leading(file);
  if (found.empty() && file.extension() == ".cpp") {
    const std::string stem = std::regex_replace(file.stem().string(), std::regex("_(avx2|avx512|vnni)\\w*$"), "");
    found = leading(file.parent_path() / (stem + ".h"));
  }
  return found;
}

std::set<int> numbers_in(const std::string& list) {  // "1-3, 6" -> {1, 2, 3, 6}
  std::set<int> out;
  const std::regex item(R"((\d+)(\s*-\s*(\d+))?)");
  for (std::sregex_iterator it(list.begin(), list.end(), item), end; it != end; ++it) {
    const int a = std::stoi((*it)[1]);
    const int b = (*it)[3].matched ? std::stoi((*it)[3]) : a;
    for (int n = a; n <= b; ++n) out.insert(n);
  }
  return out;
}

}  // namespace

// "eq. N" in a code comment names an equation of a docs page: the page named
// right after it ("eq. N of docs/X.md"), else the last one named before it in
// the same comment ("docs/X.md eq. N-M", possibly on an earlier line of the
// comment), else the page of a header named just before ("X.h eq. N"), else
// the page the file's leading comment names (a .cpp without one: its
// header's). That page must number the equation: a line of it ends in "(N)".
TEST_CASE("docs: every equation a code comment cites exists on its page", "[docs]") {
  const std::regex cite(R"(\beqs?\. (\d+(\s*[-,]\s*\d+)*))");
  const std::regex page_after(R"(^\s*of (docs/)?([A-Za-z0-9_-]+\.md))");
  const std::regex page_named(R"(docs/([A-Za-z0-9_-]+\.md))");
  const std::regex header_before(R"(([A-Za-z0-9_]+\.h) $)");
  std::map<std::string, fs::path> headers;
  std::vector<fs::path> files;
  for (const char* dir : {"src", "tools", "examples", "tests", "bench", "fuzz"}) {
    if (!fs::exists(kRoot / dir)) continue;
    for (auto& e : fs::recursive_directory_iterator(kRoot / dir)) {
      const auto ext = e.path().extension().string();
      if (!e.is_regular_file() || (ext != ".h" && ext != ".cpp")) continue;
      files.push_back(e.path());
      if (ext == ".h") headers[e.path().filename().string()] = e.path();
    }
  }
  int cited = 0;
  for (const fs::path& file : files) {
    const std::string file_page = page_of_file(file);
    std::istringstream in(read_text(file));
    std::string comment_page;  // the last page named in the current block of // lines
    int line_no = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_no;
      const auto slash = line.find("//");
      const bool comment_line = line.find_first_not_of(" \t") == slash && slash != std::string::npos;
      if (!comment_line) comment_page.clear();
      if (slash == std::string::npos) continue;
      const std::string comment = line.substr(slash);
      for (std::sregex_iterator it(comment.begin(), comment.end(), cite), end; it != end; ++it) {
        const std::string before = comment.substr(0, it->position());
        const std::string after = comment.substr(it->position() + it->length());
        std::smatch m;
        std::string page;
        if (std::regex_search(after, m, page_after)) {
          page = m[2];
        } else if (std::regex_search(before, m, page_named)) {
          for (std::sregex_iterator p(before.begin(), before.end(), page_named), pe; p != pe; ++p) page = (*p)[1];
        } else if (!comment_page.empty()) {
          page = comment_page;
        } else if (std::regex_search(before, m, header_before) && headers.count(m[1])) {
          page = page_of_file(headers[m[1]]);
        } else {
          page = file_page;
        }
        INFO(fs::relative(file, kRoot).string() << ":" << line_no << ": " << comment);
        CHECK_FALSE(page.empty());  // no page to look the equation up on: name one
        if (page.empty()) continue;
        const std::set<int> defined = equations_of(page);
        for (int n : numbers_in((*it)[1])) {
          INFO("equation (" << n << ") of docs/" << page);
          CHECK(defined.count(n) == 1);
        }
        ++cited;
      }
      if (comment_line)
        for (std::sregex_iterator p(comment.begin(), comment.end(), page_named), pe; p != pe; ++p) comment_page = (*p)[1];
    }
  }
  CHECK(cited > 100);
}
