// Hostile option values and stored settings for the commands the CNN and
// low-bit work added (docs/reliability.md §2): each is refused before any
// work, with exit 2 naming the option, or exit 1 naming the file and field.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "test_files.h"

namespace {

std::string binary() { return std::string(TINYQAT_BINARY_DIR) + "/tinyqat"; }

// Exit code of `tinyqat args`; stderr in dir/err.txt.
int run(const std::string& args, const std::string& dir) {
  const std::string cmd = binary() + " " + args + " --threads 1 > " + dir + "/out.txt 2> " + dir + "/err.txt";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string fresh_dir(const char* name) {
  const std::string dir = (std::filesystem::temp_directory_path() / name).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace

TEST_CASE("hostile options: lowbit and sweep refuse bad values by option, before reading data", "[hostile][cli][errors]") {
  const std::string dir = fresh_dir("tinyqat_hostile_options");
  const std::string nodata = " --data " + dir + "/no-such-data";  // reading it would be exit 1
  // --lr -1 was refused by the optimizer after the data was read: exit 1, "SGD: invalid learning rate".
  CHECK(run("lowbit --from x.st --configs w4a8 --lr -1 --workdir " + dir + "/lb" + nodata, dir) == 2);
  CHECK(tq_test::read_bytes(dir + "/err.txt").find("--lr -1 must be a finite number >= 0") != std::string::npos);
  // A trailing comma was ignored, a repeated width run twice.
  CHECK(run("lowbit --from x.st --configs w4a8, --workdir " + dir + "/lb" + nodata, dir) == 2);
  CHECK(tq_test::read_bytes(dir + "/err.txt").find("--configs 'w4a8,' ends with a comma") != std::string::npos);
  CHECK(run("lowbit --from x.st --configs w4a8,w2a8,w4a8 --workdir " + dir + "/lb" + nodata, dir) == 2);
  CHECK(tq_test::read_bytes(dir + "/err.txt").find("names w4a8 twice") != std::string::npos);
  // A --workdir that cannot be a directory: the library's "filesystem error:
  // cannot create directories" did not name the option.
  for (const char* command : {"lowbit --from x.st --configs w4a8", "sweep --seeds 0"}) {
    INFO(command);
    CHECK(run(std::string(command) + " --workdir /dev/null" + nodata, dir) == 1);
    CHECK(tq_test::read_bytes(dir + "/err.txt").find("--workdir /dev/null: cannot create the directory") != std::string::npos);
  }
}

TEST_CASE("hostile options: a checkpoint's stored recipe is checked like the options, naming the field", "[hostile][cli][resume][errors]") {
  const std::string dir = fresh_dir("tinyqat_hostile_recipe");
  REQUIRE(run("train --epochs 2 --hidden 8 --batch-size 256 --lr-schedule step --checkpoint-every 50 --stop-after 50 --out " +
                  dir + "/m.st",
              dir) == 0);
  const tq::io::SafetensorsFile good = tq::io::load_safetensors(dir + "/m.st.ckpt");
  // step_size is counted in batches when the run starts: 2^62 epochs overflowed there.
  const std::vector<std::pair<std::pair<const char*, nlohmann::json>, const char*>> cases = {
      {{"step_size", int64_t{1} << 62}, "field 'command.step_size'"},
      {{"milestones", {1, -4}}, "field 'command.milestones'"},
      {{"gamma", 0}, "field 'command.gamma'"},
      {{"warmup", 1e300}, "field 'command.warmup'"},
      {{"optimizer", "lion"}, "field 'command.optimizer'"},
      {{"lr_schedule", "zigzag"}, "field 'command.lr_schedule'"},
      {{"augment", "yes"}, "field 'command.augment'"},
  };
  for (const auto& [edit, expect] : cases) {
    INFO(edit.first);
    tq::io::SafetensorsFile f = good;
    nlohmann::json j = nlohmann::json::parse(f.metadata.at("tinyqat_checkpoint"));
    j["command"][edit.first] = edit.second;
    f.metadata["tinyqat_checkpoint"] = j.dump();
    tq::io::save_safetensors(dir + "/bad.ckpt", f);
    CHECK(run("train --out " + dir + "/x.st --resume " + dir + "/bad.ckpt", dir) == 1);
    const std::string err = tq_test::read_bytes(dir + "/err.txt");
    INFO(err);
    CHECK(err.find(dir + "/bad.ckpt") != std::string::npos);
    CHECK(err.find(expect) != std::string::npos);
  }
}
