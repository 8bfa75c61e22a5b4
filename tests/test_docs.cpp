// The docs cannot rot silently: every file a doc page names or links to
// exists, and every function it names as `name()` exists in the sources.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = fs::path(TINYQAT_GOLDEN_DIR).parent_path().parent_path();

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// All text of the code a doc may name: sources, tools, examples, tests, benches, scripts.
const std::string& all_code() {
  static const std::string text = [] {
    std::string t;
    for (const char* dir : {"src", "tools", "examples", "tests", "bench", "scripts", "fuzz"}) {
      if (!fs::exists(kRoot / dir)) continue;
      for (auto& e : fs::recursive_directory_iterator(kRoot / dir)) {
        const auto ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".h" || ext == ".cpp" || ext == ".sh" || ext == ".py" || ext == ".txt"))
          t += read_file(e.path()) + "\n";
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
    const std::string doc = read_file(e.path());
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
