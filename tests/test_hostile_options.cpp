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
#include "tensor/memory_limit.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include "test_files.h"

namespace {

std::string binary() { return std::string(TINYQAT_BINARY_DIR) + "/tinyqat"; }

// Exit code of `tinyqat args` (with `env`, e.g. "TINYQAT_MEMORY_LIMIT=64M",
// in its environment; --threads 1 unless `args` sets it); stderr in dir/err.txt.
int run(const std::string& args, const std::string& dir, const std::string& env = "") {
  const std::string threads = args.find("--threads") == std::string::npos ? " --threads 1" : "";
  const std::string cmd = (env.empty() ? "" : "env " + env + " ") + binary() + " " + args + threads + " > " + dir +
                          "/out.txt 2> " + dir + "/err.txt";
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

// The class of late failures: a value that implies more memory than there is
// (a batch of 60000 images through the cnn asked for 5.6 GiB after the data was
// read, and the message named no option). Each is refused as soon as it can be
// known, naming the option and the limit; what cannot be foreseen fails at the
// allocation, under the tensor memory limit, naming what the memory grows with.
TEST_CASE("hostile options: sizes beyond the data or the memory are refused, naming the option and the limit",
          "[hostile][cli][errors][memory]") {
  const std::string dir = fresh_dir("tinyqat_hostile_sizes");
  const std::string nodata = " --data " + dir + "/no-such-data";  // reading it would be exit 1
  auto err = [&] { return tq_test::read_bytes(dir + "/err.txt"); };
  auto refused = [&](const std::string& args, int code, const std::string& expect, const std::string& env = "") {
    INFO(args);
    CHECK(run(args, dir, env) == code);
    INFO(err());
    CHECK(err().find(expect) != std::string::npos);
  };
  const std::string out = " --out " + dir + "/m.st";
  // A batch larger than the training set (after --limit-train, beside --val).
  refused("train --arch cnn --batch-size 60000 --limit-train 600 --limit-test 100" + out, 2,
          "--batch-size 60000 is more than the 600 training samples; use at most 600");
  refused("train --hidden 8 --batch-size 500 --limit-train 600 --val 200" + out, 2,
          "--batch-size 500 is more than the 400 training samples left beside the 200 of --val");
  refused("qat --from " + dir + "/none.st --batch-size 700 --limit-train 600" + out, 2,
          "--batch-size 700 is more than the 600 training samples");
  refused("ptq --from " + dir + "/none.st --batch-size 1048576" + out, 2, "--batch-size 1048576 is more than the 60000 training samples");
  // More calibration batches than the training set has were cut short silently.
  refused("ptq --from " + dir + "/none.st --batch-size 64 --calibration-batches 100000" + out, 2,
          "--calibration-batches 100000 is more than the 938 batches of 64 that the 60000 training samples make");
  // An MLP too large to train: before the data is read.
  refused("train --hidden 8192,8192,8192,8192,8192" + out + nodata, 2,
          "--hidden 8192,8192,8192,8192,8192 makes an MLP of 274980874 weights, more than the limit of 268435456");
  std::string many = "1";
  for (int i = 0; i < 64; ++i) many += ",1";
  refused("train --hidden " + many + out + nodata, 2, "asks for 65 hidden layers, more than the limit of 64");
  // Thread counts and repeat counts that never end.
  refused("eval --model x.st --threads 100000" + nodata, 2, "--threads 100000 is more than the limit of 256");
  refused("bench --threads 100000 --quick", 2, "--threads 100000 is more than the limit of 256");
  refused("eval --model x.st --latency-repeats 2000000000" + nodata, 2,
          "--latency-repeats 2000000000 is more than the limit of 100000");
  refused("eval --model x.st" + nodata, 2, "TINYQAT_MEMORY_LIMIT 'lots': expected bytes", "TINYQAT_MEMORY_LIMIT=lots");
  refused("eval --model x.st" + nodata, 2, "TINYQAT_MEMORY_LIMIT '1.5': expected bytes", "TINYQAT_MEMORY_LIMIT=1.5");  // not a whole number of bytes
  refused("pipeline --workdir /dev/null/x" + nodata, 1, "--workdir /dev/null/x: cannot create the directory");

  // A training step that does not fit the memory: measured on one sample
  // before the first step (the data alone holds 55 MB of the 100 MiB).
  refused("train --arch cnn --batch-size 600 --limit-train 600 --limit-test 100 --epochs 1" + out, 2,
          "--batch-size 600: a training step keeps at least", "TINYQAT_MEMORY_LIMIT=100M");
  CHECK(err().find("(TINYQAT_MEMORY_LIMIT); use at most") != std::string::npos);
  CHECK(!std::filesystem::exists(dir + "/m.st"));

  // What is not foreseen fails at the allocation, naming what it grows with:
  // the cnn's first layer over a batch of 5000 test images is 500 MB.
  REQUIRE(run("train --arch cnn --batch-size 32 --limit-train 64 --limit-test 64 --epochs 1 --out " + dir + "/cnn.st", dir) == 0);
  refused("eval --model " + dir + "/cnn.st --batch-size 5000", 2,
          "the memory needed grows with --batch-size 5000 (the model of --model " + dir + "/cnn.st): make it smaller",
          "TINYQAT_MEMORY_LIMIT=200M");
  CHECK(err().find("cannot allocate") != std::string::npos);
  CHECK(err().find("tensor memory limit 200.0 MiB: TINYQAT_MEMORY_LIMIT") != std::string::npos);
  refused("ptq --from " + dir + "/cnn.st --batch-size 5000 --calibration-batches 1" + out, 2,
          "the memory needed grows with --batch-size 5000", "TINYQAT_MEMORY_LIMIT=200M");
  CHECK(!std::filesystem::exists(dir + "/m.st"));
  // compare runs --samples as one batch: was reported as "do not match", exit 1.
  REQUIRE(run("ptq --from " + dir + "/cnn.st --calibration-batches 1 --limit-test 64 --out " + dir + "/q.st", dir) == 0);
  refused("compare --float " + dir + "/cnn.st --quantized " + dir + "/q.st --samples 10000", 2,
          "the memory needed grows with --samples 10000 (run as one batch)", "TINYQAT_MEMORY_LIMIT=150M");
  CHECK(err().find("do not match") == std::string::npos);
}

TEST_CASE("memory limit: an allocation beyond the tensor memory limit is an AllocationError, and nothing is lost",
          "[hostile][limits][memory]") {
  const size_t before = tq::tensor_memory_in_use(), old_limit = tq::tensor_memory_limit();
  {
    const tq::Tensor a = tq::zeros({1024}, tq::DType::f32);
    CHECK(tq::tensor_memory_in_use() == before + 4096);
    CHECK(tq::tensor_memory_allocated() >= 4096);
    tq::set_tensor_memory_limit(before + 4096 + 1000);
    // 4096 bytes more would pass the limit: refused, counted as nothing.
    try {
      (void)tq::zeros({1024}, tq::DType::f32);
      FAIL("allocated beyond the limit");
    } catch (const tq::AllocationError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find("cannot allocate 4096 bytes") != std::string::npos);
      CHECK(std::string(e.what()).find("more than the limit") != std::string::npos);
    }
    CHECK(tq::tensor_memory_in_use() == before + 4096);
    CHECK_NOTHROW(tq::zeros({200}, tq::DType::f32));  // 800 bytes fit
    tq::set_tensor_memory_limit(old_limit);
  }
  CHECK(tq::tensor_memory_in_use() == before);
  CHECK(tq::tensor_memory_peak() >= before + 4096);
}
