// Shared helpers for tests that write files or run programs: a scratch
// directory per test file and process (removed at exit), reading a whole
// file, and running a command with its output captured.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
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

// A status from std::system or pclose as one number: the exit code, 128 +
// the signal when a signal ended the process, -1 when it could not run.
inline int exit_code(int status) {
  if (status == -1) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

// Runs a shell command and returns what it wrote to stdout (append " 2>&1"
// to the command for both streams); its exit code goes to *status.
inline std::string capture(const std::string& command, int* status) {
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) {
    *status = -1;
    return "popen failed for: " + command;
  }
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  *status = exit_code(pclose(p));
  return out;
}

#ifdef TINYQAT_BINARY_DIR
struct Run {
  int status = -1;  // exit code; 128 + signal when killed by one
  std::string out, err;
};

// Runs `tinyqat ARGS` from the build directory with stdin closed, stdout
// and stderr captured through files in the scratch directory TAG.
inline Run run_tinyqat(const std::string& args, const std::string& tag) {
  static int counter = 0;
  const std::filesystem::path dir = scratch_dir(tag);
  const std::string n = std::to_string(counter++);
  const std::string out = (dir / ("stdout_" + n)).string(), err = (dir / ("stderr_" + n)).string();
  const std::string binary = std::string(TINYQAT_BINARY_DIR) + "/tinyqat";
  Run r;
  r.status = exit_code(std::system((binary + " " + args + " >" + out + " 2>" + err + " </dev/null").c_str()));
  r.out = read_bytes(out);
  r.err = read_bytes(err);
  return r;
}
#endif

}  // namespace tq_test
