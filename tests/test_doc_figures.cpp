// The docs' pictures (docs/figures/*.svg): drawn by tinyqat-figures
// (tools/figures/tinyqat_figures.cpp, docs/index.md), committed, and kept
// honest here: each is well-formed XML with a title, shown by a page, free of
// non-finite coordinates, and what the program draws today byte for byte.
#include <catch2/catch.hpp>

#include "test_files.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = fs::path(TINYQAT_GOLDEN_DIR).parent_path().parent_path();

std::string read_text(const fs::path& p) { return tq_test::read_bytes(p.string()); }

std::set<std::string> committed_figures() {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(kRoot / "docs" / "figures"))
    if (e.path().extension() == ".svg") names.insert(e.path().filename().string());
  return names;
}

}  // namespace

TEST_CASE("doc figures: every picture is well-formed SVG with a title and is shown by a page", "[docs][figures]") {
  const std::set<std::string> names = committed_figures();
  REQUIRE(names.size() >= 7);
  std::string pages;
  for (const auto& e : fs::directory_iterator(kRoot / "docs"))
    if (e.path().extension() == ".md") pages += read_text(e.path());
  for (const std::string& name : names) {
    INFO(name);
    const std::string text = read_text(kRoot / "docs" / "figures" / name);
    xmlDocPtr doc = xmlReadMemory(text.data(), static_cast<int>(text.size()), name.c_str(), "UTF-8",
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    CHECK(doc != nullptr);
    if (doc) {
      const xmlNode* root = xmlDocGetRootElement(doc);
      REQUIRE(root != nullptr);
      CHECK(std::string(reinterpret_cast<const char*>(root->name)) == "svg");
      bool has_title = false;
      for (const xmlNode* c = root->children; c; c = c->next)
        has_title |= c->type == XML_ELEMENT_NODE && std::string(reinterpret_cast<const char*>(c->name)) == "title";
      CHECK(has_title);
      xmlFreeDoc(doc);
    }
    for (const char* bad : {"=\"nan", "=\"-nan", "=\"inf", "=\"-inf", "(nan", "(inf"})
      CHECK(text.find(bad) == std::string::npos);
    CHECK(pages.find("](figures/" + name + ")") != std::string::npos);  // an image link on some page
  }
}

TEST_CASE("doc figures: the committed pictures are what tinyqat-figures draws", "[docs][figures]") {
  const fs::path program = fs::path(TINYQAT_BINARY_DIR) / "tinyqat-figures";
  REQUIRE(fs::exists(program));
  const fs::path dir = fs::temp_directory_path() / ("tinyqat_figures_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string cmd = "'";  // appended piece by piece: GCC 12 misreads "x" + std::string&& (-Wrestrict)
  cmd += program.string() + "' --svg '" + dir.string() + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::set<std::string> drawn;
  for (const auto& e : fs::directory_iterator(dir)) drawn.insert(e.path().filename().string());
  CHECK(drawn == committed_figures());  // no picture missing, none stale
  for (const std::string& name : drawn) {
    INFO(name << ": regenerate with build/tinyqat-figures --svg docs/figures");
    CHECK(read_text(dir / name) == read_text(kRoot / "docs" / "figures" / name));
  }
  fs::remove_all(dir);
}
