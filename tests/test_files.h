// Shared helpers for tests that write files: a scratch directory per test
// file and process (removed at exit), and reading a whole file.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

namespace tq_test {

// tmp/tinyqat_test_<tag>_<pid>, created on first use and removed at exit.
inline const std::filesystem::path& scratch_dir(const std::string& tag) {
  struct Dir {
    std::filesystem::path path;
    explicit Dir(const std::string& t)
        : path(std::filesystem::temp_directory_path() / ("tinyqat_test_" + t + "_" + std::to_string(getpid()))) {
      std::filesystem::create_directories(path);
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static std::map<std::string, Dir> dirs;
  return dirs.try_emplace(tag, tag).first->second.path;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace tq_test
