// Tests of the `tinyqat` command line (tools/cli, docs/cli.md), run as a
// separate process the way a user or a script runs it: the JSON each
// subcommand prints, the accuracy it reaches on Fashion-MNIST (one epoch of a
// small MLP, to stay fast), --help, exit codes (0 ok, 2 usage, 1 other) with
// one-line errors, and that a failing command never touches its --out file.
#include <catch2/catch.hpp>

#include "test_files.h"
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/dataset.h"
#include "io/model_file.h"
#include "nn/sequential.h"
#include "quant/passes.h"
#include "quant/qconfig.h"
#include "quant/quantized_linear.h"
#include "tensor/random.h"
#include "io/npy.h"
#include "tinyqat.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using json = nlohmann::json;

const fs::path& scratch_dir() { return tq_test::scratch_dir("cli"); }

std::string temp_path(const std::string& name) { return (scratch_dir() / name).string(); }

std::string read_bytes(const std::string& p) { return tq_test::read_bytes(p); }

void write_bytes(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

using tq_test::Run;

// Runs `tinyqat ARGS` with stdout and stderr captured (stdin closed).
Run tinyqat(const std::string& args) {
  REQUIRE(fs::exists(std::string(TINYQAT_BINARY_DIR) + "/tinyqat"));
  return tq_test::run_tinyqat(args, "cli");
}

// The one JSON object a --json run prints (and nothing else on stdout).
json json_of(const Run& r) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.status == 0);
  REQUIRE(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  json j;
  REQUIRE_NOTHROW(j = json::parse(r.out));
  REQUIRE(j.is_object());
  return j;
}

// An error is one line on stderr, and nothing on stdout.
void expect_one_line_error(const Run& r, int status, const std::string& text) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.status == status);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK_THAT(r.err, Contains(text));
  CHECK(r.out.empty());
}

// The packaged dataset, or a failed test that says how to install it.
void require_dataset() {
  if (!fs::exists(std::string(tq::io::kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz") &&
      !fs::exists(std::string(tq::io::kFashionMnistDir) + "/t10k-labels-idx1-ubyte"))
    FAIL("Fashion-MNIST not found at " << tq::io::kFashionMnistDir
                                       << ": install the Debian package dataset-fashion-mnist "
                                          "(apt-get install dataset-fashion-mnist) or run scripts/setup.sh");
}

// Models made once per process (ctest runs each test case in its own process).
const json& float_model() {
  static json j = [] {
    require_dataset();
    return json_of(tinyqat("train --epochs 1 --hidden 32 --out " + temp_path("float.safetensors") + " --json"));
  }();
  return j;
}
std::string float_path() {
  float_model();
  return temp_path("float.safetensors");
}
const json& qat_model() {
  static json j = json_of(tinyqat("qat --from " + float_path() + " --out " + temp_path("qat.safetensors") + " --json"));
  return j;
}
std::string qat_path() {
  qat_model();
  return temp_path("qat.safetensors");
}

// IDX files in a temporary directory, the test images cut short.
std::string broken_data_dir() {
  const std::string dir = temp_path("broken_data");
  fs::create_directories(dir);
  auto idx = [](std::vector<uint32_t> dims, size_t data_bytes) {
    std::string b = {0, 0, 8, static_cast<char>(dims.size())};
    for (uint32_t d : dims)
      for (int s = 24; s >= 0; s -= 8) b += static_cast<char>((d >> s) & 0xff);
    return b + std::string(data_bytes, '\x01');
  };
  write_bytes(dir + "/train-images-idx3-ubyte", idx({60000, 28, 28}, 1000));  // truncated
  write_bytes(dir + "/train-labels-idx1-ubyte", idx({60000}, 60000));
  write_bytes(dir + "/t10k-images-idx3-ubyte", idx({10000, 28, 28}, 1000));   // truncated
  write_bytes(dir + "/t10k-labels-idx1-ubyte", idx({10000}, 10000));
  return dir;
}

}  // namespace

TEST_CASE("cli train: one JSON object with accuracy and seconds and model_bytes", "[cli]") {
  const json& j = float_model();
  CHECK(j["accuracy"].get<double>() > 75.0);
  CHECK(j["seconds"].get<double>() > 0.0);
  CHECK(j["model_bytes"].get<int64_t>() == static_cast<int64_t>(fs::file_size(float_path())));
  CHECK(j["epochs"].size() == 1);
  // The file is a float MLP 784-32-10.
  auto m = tq::io::load_model(float_path());
  CHECK_THAT(m->repr(), Contains("(fc1): Linear(in_features=784, out_features=32"));
  CHECK_THAT(m->repr(), Contains("(fc2): Linear(in_features=32, out_features=10"));
}

TEST_CASE("cli qat: fake-quant and int8 accuracy agree", "[cli]") {
  const json& j = qat_model();
  CHECK(j["accuracy"].get<double>() > 75.0);
  CHECK(j["fake_quant_accuracy"].get<double>() > 75.0);
  CHECK(j["agreement"].get<double>() >= 99.5);
  CHECK(j["max_step_diff"].get<double>() <= 1.0);
  CHECK(j["model_bytes"].get<int64_t>() == static_cast<int64_t>(fs::file_size(qat_path())));
  CHECK(j["model_bytes"].get<double>() <= 0.3 * float_model()["model_bytes"].get<double>());
  // An int8 model, loaded without prepare / convert.
  auto m = tq::io::load_model(qat_path());
  CHECK(dynamic_cast<tq::quant::QuantizedLinear*>(&m->get_submodule("fc1")));
}

TEST_CASE("cli ptq and dynamic: accuracy and model_bytes", "[cli]") {
  for (const char* cmd : {"ptq", "dynamic"}) {
    INFO(cmd);
    const std::string out = temp_path(std::string(cmd) + ".safetensors");
    const json j = json_of(tinyqat(std::string(cmd) + " --from " + float_path() + " --out " + out + " --json"));
    CHECK(j["accuracy"].get<double>() > 75.0);
    CHECK(j["accuracy"].get<double>() > float_model()["accuracy"].get<double>() - 2.0);
    CHECK(j["model_bytes"].get<int64_t>() == static_cast<int64_t>(fs::file_size(out)));
    CHECK(j["agreement"].get<double>() > 95.0);
  }
}

TEST_CASE("cli eval: accuracy on the 10000 test images and latency at batch 1 and 256", "[cli]") {
  const json j = json_of(tinyqat("eval --model " + qat_path() + " --json"));
  CHECK(j["samples"] == 10000);
  CHECK(j["accuracy"].get<double>() == qat_model()["accuracy"].get<double>());  // the saved model is the evaluated one
  CHECK(j["latency_us"]["batch_1"].get<double>() > 0.0);
  CHECK(j["latency_us"]["batch_256"].get<double>() > j["latency_us"]["batch_1"].get<double>());
  CHECK(j["model_bytes"].get<int64_t>() == static_cast<int64_t>(fs::file_size(qat_path())));

  const Run text = tinyqat("eval --model " + float_path());
  CHECK(text.status == 0);
  CHECK_THAT(text.out, Contains("test accuracy") && Contains("10000 samples") && Contains("us at batch 256"));
}

TEST_CASE("cli inspect: the module tree and bytes per dtype", "[cli]") {
  const Run r = tinyqat("inspect --model " + qat_path());
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Contains("Sequential(") && Contains("(fc1): QuantizedLinearReLU(in_features=784, out_features=32") &&
                        Contains("(fc2): QuantizedLinear(in_features=32, out_features=10") && Contains("i8: 25408 bytes"));
  const json j = json_of(tinyqat("inspect --model " + qat_path() + " --json"));
  CHECK(j["bytes_per_dtype"]["i8"] == 784 * 32 + 32 * 10);
  CHECK(j["bytes_per_dtype"]["f32"] == 4 * (32 + 10));
  CHECK(j["tensors"] == 4);
}

TEST_CASE("cli compare: per-layer SQNR of a quantized model against its float model", "[cli]") {
  const std::string ptq = temp_path("ptq_for_compare.safetensors");
  REQUIRE(tinyqat("ptq --from " + float_path() + " --out " + ptq).status == 0);
  const Run r = tinyqat("compare --float " + float_path() + " --quantized " + ptq);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Contains("SQNR (dB)") && Contains("weights") && Contains("layer outputs on 1000 test samples") &&
                        Contains("fc1") && Contains("fc2"));
  const json j = json_of(tinyqat("compare --float " + float_path() + " --quantized " + ptq + " --json"));
  REQUIRE(j["weights"].size() == 2);
  REQUIRE(j["outputs"].size() == 2);
  // 8-bit weights: about 40 dB. Outputs: each layer compared with the same
  // quantity in float (after the ReLU where the int8 layer fused it).
  for (auto& row : j["weights"]) CHECK(row["sqnr_db"].get<double>() > 30.0);
  for (auto& row : j["outputs"]) {
    INFO(row.dump());
    CHECK(row["sqnr_db"].get<double>() > 20.0);
  }
}

TEST_CASE("cli: --help of every subcommand exits 0", "[cli]") {
  const Run top = tinyqat("--help");
  REQUIRE(top.status == 0);
  // The commands the top-level help lists ("  train     train the float MLP ..."),
  // so a command added later is checked too.
  std::vector<std::string> commands;
  std::istringstream lines(top.out.substr(top.out.find("commands:")));
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("  ", 0) == 0 && line.size() > 2 && line[2] != ' ') commands.push_back(line.substr(2, line.find(' ', 2) - 2));
  for (const char* expected : {"train", "qat", "ptq", "dynamic", "eval", "inspect", "compare", "pipeline"})
    CHECK(std::find(commands.begin(), commands.end(), expected) != commands.end());
  for (const std::string& cmd : commands) {
    INFO(cmd);
    const Run r = tinyqat(cmd + " --help");
    CHECK(r.status == 0);
    CHECK_THAT(r.out, Contains("tinyqat " + cmd) && Contains("--json"));
    CHECK(r.err.empty());
  }
  CHECK(tinyqat("").status == 2);
}

TEST_CASE("cli: exit codes and one-line errors", "[cli]") {
  SECTION("usage errors exit 2") {
    const Run unknown = tinyqat("frobnicate");
    CHECK(unknown.status == 2);
    CHECK_THAT(unknown.err, Contains("unknown command 'frobnicate'"));
    expect_one_line_error(tinyqat("train --bogus --out x"), 2, "bogus");
    expect_one_line_error(tinyqat("train --hidden abc --out " + temp_path("x")), 2, "--hidden");
    expect_one_line_error(tinyqat("train --hidden 32,-4 --out " + temp_path("x")), 2, "--hidden");
    expect_one_line_error(tinyqat("train --epochs abc --out " + temp_path("x")), 2, "abc");
    expect_one_line_error(tinyqat("train --epochs 0 --out " + temp_path("x")), 2, "--epochs");
    expect_one_line_error(tinyqat("train"), 2, "--out is required");
    expect_one_line_error(tinyqat("eval"), 2, "--model is required");
    expect_one_line_error(tinyqat("eval --model m extra"), 2, "extra");
    expect_one_line_error(tinyqat("ptq --from f --out o --qconfig bogus"), 2, "bogus");
  }
  SECTION("other errors exit 1") {
    expect_one_line_error(tinyqat("train --epochs 1 --hidden 8 --out /nonexistent/dir/x"), 1, "/nonexistent/dir");
    const std::string bad = temp_path("bad_header.safetensors");
    write_bytes(bad, std::string("\xff\xff\xff\xff\x00\x00\x00\x00{}", 10));
    expect_one_line_error(tinyqat("eval --model " + bad), 1, bad + ": header length");
    expect_one_line_error(tinyqat("inspect --model " + bad), 1, bad);
    // qat / ptq / dynamic given an int8 model instead of a float one.
    for (const char* cmd : {"qat", "ptq", "dynamic"}) {
      INFO(cmd);
      expect_one_line_error(tinyqat(std::string(cmd) + " --from " + qat_path() + " --out " + temp_path("z")), 1,
                            qat_path() + ": holds a model that is already prepared or quantized ('fc1' is a QuantizedLinear");
    }
    expect_one_line_error(tinyqat("eval --model " + temp_path("missing.safetensors")), 1, "missing.safetensors: cannot open");
    expect_one_line_error(tinyqat("eval --model " + scratch_dir().string()), 1, "is a directory");
    const std::string data = broken_data_dir();
    expect_one_line_error(tinyqat("eval --model " + float_path() + " --data " + data), 1, "t10k-images-idx3-ubyte");
    expect_one_line_error(tinyqat("train --epochs 1 --out " + temp_path("y") + " --data " + data), 1, "train-images-idx3-ubyte");
    expect_one_line_error(tinyqat("train --epochs 1 --out " + temp_path("y") + " --data " + temp_path("no_such_dir")), 1,
                          "dataset-fashion-mnist");
  }
}

TEST_CASE("cli bench: --quick --json measures every section of the speed report", "[cli][bench]") {
  // Figures, not timing assertions: every shape and batch is there, each time
  // and each ratio is positive.
  const Run r = tinyqat("bench --quick --json");
  REQUIRE(r.status == 0);
  const json j = json::parse(r.out);
  CHECK(j["threads"] == 1);
  CHECK(j["peak_rss_mib"].get<double>() > 0);
  const json& gemm = j["int8_gemm"]["rows"];
  REQUIRE(gemm.size() == 12);
  std::vector<std::tuple<int, int, int>> shapes;
  for (const json& row : gemm) {
    shapes.emplace_back(row["M"], row["K"], row["N"]);
    CHECK(row["int8_us"].get<double>() > 0);
    CHECK(row["sgemm_us"].get<double>() > 0);
    // The ratio is a median of per-pair ratios, so on a loaded machine it can
    // stray far from the ratio of the two medians: only its sign is checked.
    CHECK(row["speedup_vs_sgemm"].get<double>() > 0);
    CHECK(row.contains("sgemv_us") == (row["M"] == 1));
  }
  CHECK(std::count(shapes.begin(), shapes.end(), std::make_tuple(256, 1024, 1024)) == 1);
  CHECK(std::count(shapes.begin(), shapes.end(), std::make_tuple(1, 784, 256)) == 1);
  const json& inference = j["mlp_inference"]["rows"];
  REQUIRE(inference.size() == 3);
  CHECK(inference[0]["batch"] == 1);
  CHECK(inference[2]["batch"] == 1000);
  for (const json& row : inference) CHECK(row["int8_us"].get<double>() > 0);
  const json& step = j["mlp_train_step"];
  CHECK(step["batch"] == 64);
  CHECK(step["float_step"]["median_us"].get<double>() > 0);
  CHECK(step["qat_step"]["median_us"].get<double>() > 0);
  CHECK(step["float_over_gemms"].get<double>() > 0);
  CHECK(j["simple_nn"]["float_step"]["median_us"].get<double>() > 0);
  CHECK(j["simple_nn"]["qat_step"]["median_us"].get<double>() > 0);

  const Run text = tinyqat("bench --quick --only d");
  REQUIRE(text.status == 0);
  CHECK_THAT(text.out, Contains("(d) SimpleNN") && Contains("QAT step") && !Contains("(a) int8 GEMM"));
  expect_one_line_error(tinyqat("bench --only e"), 2, "--only 'e'");
  expect_one_line_error(tinyqat("bench --threads 0"), 2, "--threads");
}

namespace {
// A float MLP of the given sizes, untrained, saved under `name`.
std::string mlp_file(const std::string& name, const std::vector<int64_t>& sizes) {
  const std::string path = temp_path(name);
  tq::io::save_model(*tq::nn::make_mlp(sizes), path);
  return path;
}
// The same MLP made int8 (prepared, one batch observed, converted).
std::string int8_file(const std::string& name, const std::vector<int64_t>& sizes) {
  auto m = tq::nn::make_mlp(sizes);
  m->qconfig = tq::quant::get_default_qat_qconfig("x86");
  tq::quant::prepare_qat(*m);
  (*m)(tq::randn({4, sizes.front()}));
  tq::quant::convert(*m);
  const std::string path = temp_path(name);
  tq::io::save_model(*m, path);
  return path;
}
}  // namespace

TEST_CASE("cli: the exit-code contract: 2 for the command line naming the option, 1 for a file naming it", "[cli][errors]") {
  require_dataset();
  // Each mistake is found before any data is read (--data names nothing).
  const std::string nodata = " --data " + temp_path("no_such_dir");
  const std::string f = mlp_file("contract_float.st", {784, 16, 10});
  const std::string q = int8_file("contract_int8.st", {784, 16, 10});
  SECTION("mistakes in the command line exit 2 and name the option") {
    const std::vector<std::pair<std::string, std::string>> usage = {
        {"train --lr -1 --out " + temp_path("x"), "--lr"},
        {"train --momentum 2 --out " + temp_path("x"), "--momentum"},
        {"train --hidden 65536,65536 --out " + temp_path("x"), "--hidden"},  // was a bare std::bad_alloc
        {"train --stop-after -1 --out " + temp_path("x"), "--stop-after"},  // was accepted
        {"qat --from " + f + " --qconfig bogus --bits 4 --out " + temp_path("x"), "--qconfig bogus"},  // was ignored
        {"compare --float " + f + " --quantized " + q + " --samples 0", "--samples"},  // was clamped to 1
        {"lowbit --from " + f + " --configs ''", "--configs is empty"},
        {"pipeline --epochs 0 --workdir " + temp_path("wd"), "--epochs"},  // printed an untrained float row
        {"pipeline --qat-epochs 0 --workdir " + temp_path("wd"), "--qat-epochs"},
    };
    for (const auto& [args, text] : usage) {
      INFO(args);
      expect_one_line_error(tinyqat(args + nodata), 2, text);
    }
  }
  SECTION("a file that does not suit the command exits 1 and names the file") {
    // A model for another input width, or another number of classes (eval reported 10% or 0%).
    const std::string narrow = mlp_file("contract_narrow.st", {10, 4, 10});
    const std::string five = mlp_file("contract_five.st", {784, 8, 5});
    expect_one_line_error(tinyqat("eval --model " + narrow + " --limit-test 10"), 1, narrow + ": the model cannot take");
    expect_one_line_error(tinyqat("eval --model " + five + " --limit-test 10"), 1,
                          five + ": the model gives 5 outputs per sample, but the data has 10 classes");
    for (const char* cmd : {"ptq", "dynamic", "qat"}) {
      INFO(cmd);
      expect_one_line_error(tinyqat(std::string(cmd) + " --from " + narrow + " --out " + temp_path("x")), 1,
                            narrow + ": the model cannot take");
    }
    // compare with its arguments swapped, float vs float, int8 vs int8 (empty tables, exit 0).
    expect_one_line_error(tinyqat("compare --float " + q + " --quantized " + f), 1, q + ": holds a model that is already");
    expect_one_line_error(tinyqat("compare --float " + f + " --quantized " + f), 1, f + ": holds no quantized layer");
    expect_one_line_error(tinyqat("compare --float " + q + " --quantized " + q), 1, q + ": holds a model that is already");
    // Two architectures that do not match (was exit 2, as a usage error).
    const std::string other = int8_file("contract_other.st", {784, 12, 10});
    const Run r = tinyqat("compare --float " + f + " --quantized " + other);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Contains(f) && Contains(other));
  }
  SECTION("an output directory the run cannot write is found before any work") {
    // A directory nobody may write in (was found only after the training).
    const std::string ro = "/tmp/tinyqat_read_only_" + std::to_string(::getpid());
    fs::create_directories(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::others_read | fs::perms::others_exec);
    // root may write anywhere: run the binary as an unprivileged user then.
    const std::string as_user = ::geteuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
    const std::string binary = std::string(TINYQAT_BINARY_DIR) + "/tinyqat";
    const std::string err = temp_path("read_only_stderr");
    const int s = std::system((as_user + binary + " train --epochs 1 --out " + ro + "/x.st" + nodata + " 2>" + err).c_str());
    CHECK(WEXITSTATUS(s) == 1);
    CHECK_THAT(read_bytes(err), Contains("--out " + ro + "/x.st: cannot write in directory"));
    fs::permissions(ro, fs::perms::owner_all);
    fs::remove_all(ro);
  }
}

TEST_CASE("cli: a failing command leaves an existing --out file untouched", "[cli]") {
  const std::string sentinel = temp_path("sentinel.safetensors");
  const std::string bytes = "precious bytes that must survive\n";
  const std::string bad = temp_path("bad_model.safetensors");
  write_bytes(bad, std::string("\x08\0\0\0\0\0\0\0[1,2,3] ", 16));
  const std::string data = broken_data_dir();
  const std::vector<std::pair<std::string, int>> failing = {
      {"train --epochs 1 --hidden 8 --data " + data + " --out " + sentinel, 1},  // broken data
      {"qat --from " + bad + " --out " + sentinel, 1},                           // broken model
      {"ptq --from " + bad + " --out " + sentinel, 1},
      {"dynamic --from " + temp_path("missing.safetensors") + " --out " + sentinel, 1},
      {"ptq --from " + bad + " --calibration-batches 0 --out " + sentinel, 2},  // bad option value
      {"train --epochs 1 --hidden 0 --out " + sentinel, 2},
  };
  for (auto& [args, status] : failing) {
    INFO(args);
    write_bytes(sentinel, bytes);
    const Run r = tinyqat(args);
    CHECK(r.status == status);
    CHECK(read_bytes(sentinel) == bytes);
    // And no temporary file was left beside it.
    int beside = 0;
    for (auto& e : fs::directory_iterator(scratch_dir()))
      beside += e.path().filename().string().rfind("sentinel.safetensors.tmp", 0) == 0;
    CHECK(beside == 0);
  }
}

TEST_CASE("cli: --out and --checkpoint are refused before any work when they would destroy a file", "[cli][errors]") {
  const std::string precious = temp_path("precious.safetensors");
  const std::string bytes = "a file that must survive\n";
  const std::string fifo = temp_path("out.fifo");
  fs::remove(fifo);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string link = temp_path("link.safetensors");
  fs::remove(link);
  fs::create_symlink(precious, link);
  // --data names a directory without the data: each refusal must come before it is read.
  const std::string nodata = " --data " + temp_path("no_such_dir");
  const std::vector<std::tuple<std::string, std::string>> refused = {
      {"train --epochs 1 --out /dev/null", "--out /dev/null: is not a regular file"},
      {"train --epochs 1 --out " + fifo, "is not a regular file"},
      {"train --epochs 1 --out " + scratch_dir().string(), "is a directory"},
      {"train --epochs 1 --out " + link, "is a symbolic link"},
      {"train --epochs 1 --out x.st --checkpoint-every 5 --checkpoint " + link, "--checkpoint " + link + ": is a symbolic link"},
      {"train --epochs 1 --out x.st --checkpoint-every 5 --checkpoint /dev/null", "--checkpoint /dev/null"},
      {"qat --from " + precious + " --out " + temp_path("q.st") + " --checkpoint-every 5 --checkpoint " + precious,
       "is also --from"},
      {"qat --from " + precious + " --out " + precious, "--out " + precious + " is also --from"},
      {"ptq --from " + precious + " --out " + link, "is a symbolic link"},
      {"dynamic --from " + link + " --out " + precious, "is also --from"},  // the same file through a link
      {"train --out " + precious + " --resume " + precious, "is also --resume"},
  };
  for (const auto& [args, text] : refused) {
    INFO(args);
    write_bytes(precious, bytes);
    expect_one_line_error(tinyqat(args + nodata), 2, text);
    CHECK(read_bytes(precious) == bytes);
    CHECK(fs::is_symlink(link));
    CHECK(fs::is_fifo(fifo));
    CHECK(fs::is_character_file("/dev/null"));
  }
  // The other inputs: run's --input array, and the data set's files.
  write_bytes(precious, bytes);
  expect_one_line_error(tinyqat("run --model " + temp_path("m.st") + " --input " + precious + " --out " + precious), 2,
                        "--out " + precious + " is also --input");
  CHECK(read_bytes(precious) == bytes);
  const fs::path data = scratch_dir() / "data_as_output";
  fs::create_directories(data);
  for (const char* file : {"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz"}) {
    const std::string idx = (data / file).string();
    write_bytes(idx, bytes);
    expect_one_line_error(tinyqat("train --epochs 1 --data " + data.string() + " --out " + idx), 2,
                          std::string("is the data set's ") + file);
    CHECK(read_bytes(idx) == bytes);
  }
  // The files a command writes into --workdir (pipeline, sweep, lowbit) and
  // report's --out directory follow the same rules, checked before any work.
  {
    const fs::path wd = scratch_dir() / "workdir_rules";
    fs::remove_all(wd);
    fs::create_directories(wd);
    write_bytes(precious, bytes);
    fs::create_symlink(precious, wd / "float.safetensors");
    expect_one_line_error(tinyqat("pipeline --epochs 1 --workdir " + wd.string() + nodata), 2,
                          "--workdir's file " + (wd / "float.safetensors").string() + ": is a symbolic link");
    fs::remove(wd / "float.safetensors");
    REQUIRE(::mkfifo((wd / "sweep_stdout.json").c_str(), 0600) == 0);
    expect_one_line_error(tinyqat("sweep --seeds 0 --workdir " + wd.string() + nodata), 2, "is not a regular file");
    CHECK(fs::is_fifo(wd / "sweep_stdout.json"));
    const std::string own = (wd / "w8a8_ptq.safetensors").string();
    write_bytes(own, bytes);
    expect_one_line_error(tinyqat("lowbit --configs w8a8 --from " + own + " --workdir " + wd.string() + nodata), 2,
                          "is also --from");
    CHECK(read_bytes(own) == bytes);
    expect_one_line_error(tinyqat("report --workdir " + wd.string() + " --out " + own + nodata), 2,
                          "--out " + own + ": is not a directory");
    fs::create_symlink(precious, wd / "report.html");
    expect_one_line_error(tinyqat("report --workdir " + wd.string() + " --out " + wd.string() + nodata), 2,
                          "report.html: is a symbolic link");
    CHECK(read_bytes(precious) == bytes);
    fs::remove_all(wd);
  }
  // A checkpoint directory that does not exist is reported as --checkpoint.
  expect_one_line_error(tinyqat("train --epochs 1 --hidden 8 --checkpoint-every 5 --checkpoint /nonexistent/dir/c --out " +
                                temp_path("c.st")),
                        1, "--checkpoint /nonexistent/dir/c: directory");
  fs::remove(fifo);
  fs::remove(link);
}

TEST_CASE("cli train --arch cnn and mobilenet_v2: image models train, save, eval and inspect", "[cli][cnn]") {
  // A small slice keeps this to seconds; the data loader hands (B, 1, 28, 28) images.
  const std::string cnn = temp_path("cnn.safetensors");
  const json j = json_of(tinyqat("train --arch cnn --epochs 1 --limit-train 600 --limit-test 200 --out " + cnn + " --json"));
  CHECK(j["accuracy"].get<double>() > 40.0);  // chance is 10%
  auto m = tq::io::load_model(cnn);
  CHECK_THAT(m->repr(), Contains("Conv2d(1, 32") && Contains("BatchNorm2d(64") && Contains("MaxPool2d"));

  // eval reads the same file and the same 200 test images: the same accuracy.
  const json e = json_of(tinyqat("eval --model " + cnn + " --limit-test 200 --latency-repeats 1 --json"));
  CHECK(e["samples"] == 200);
  CHECK(e["accuracy"].get<double>() == j["accuracy"].get<double>());
  const json i = json_of(tinyqat("inspect --model " + cnn + " --json"));
  CHECK(i["elements"].get<int64_t>() == 421834 + 2 * (32 + 64) + 2);  // parameters + BatchNorm buffers

  const std::string mbv2 = temp_path("mbv2.safetensors");
  const json k = json_of(tinyqat("train --arch mobilenet_v2 --width 0.25 --epochs 1 --limit-train 128 --limit-test 32 --out " +
                                 mbv2 + " --json"));
  CHECK(k["epochs"].size() == 1);
  CHECK_THAT(tq::io::load_model(mbv2)->repr(), Contains("MobileNetV2(") && Contains("InvertedResidual("));

  expect_one_line_error(tinyqat("train --arch resnet --out " + temp_path("x")), 2, "--arch");
  expect_one_line_error(tinyqat("train --arch cnn --hidden 32 --out " + temp_path("x")), 2, "--hidden");
  expect_one_line_error(tinyqat("train --arch cnn --width 0.5 --out " + temp_path("x")), 2, "--width");
  expect_one_line_error(tinyqat("train --arch mobilenet_v2 --width 0 --out " + temp_path("x")), 2, "--width");
}

TEST_CASE("cli pipeline --arch mobilenet_v2: every row of the table, int8 on the fake-quant grid, the report", "[cli][cnn]") {
  require_dataset();
  // A tiny width on a few hundred images: seconds. The QAT schedule freezes
  // BatchNorm and then the observers within the one QAT epoch.
  const std::string wd = temp_path("mbv2_pipeline"), report = temp_path("mbv2_report");
  const Run r = tinyqat("pipeline --arch mobilenet_v2 --width 0.25 --epochs 1 --limit-train 256 --limit-test 100 "
                        "--qat-lr 0.001 --freeze-bn-after 0.5 --freeze-observers-after 0.8 --latency-repeats 1 --threads 1 --workdir " + wd +
                        " --report " + report);
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Contains("MobileNetV2 for 28x28 images, width 0.25, 100 test images"));
  // One table row per method, each with its accuracy, agreement and file size.
  std::map<std::string, std::vector<std::string>> rows;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() < 2 || line[0] != '|' || line.find("---") != std::string::npos) continue;
    std::vector<std::string> cells;
    std::istringstream cs(line.substr(1));
    for (std::string cell; std::getline(cs, cell, '|');) {
      const size_t a = cell.find_first_not_of(' '), b = cell.find_last_not_of(' ');
      cells.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
    }
    if (cells.size() >= 6) rows[cells[0]] = cells;
  }
  for (const char* method : {"float", "QAT int8", "PTQ int8", "dynamic int8"}) {
    INFO(method);
    REQUIRE(rows.count(method));
    const double accuracy = std::stod(rows[method][1]);
    CHECK(accuracy >= 0.0);
    CHECK(accuracy <= 100.0);
    CHECK(std::stoll(rows[method][3]) > 0);  // model bytes
  }
  CHECK_THAT(rows["QAT int8"][2], Contains("vs fake quant"));
  CHECK(std::stod(rows["QAT int8"][2]) >= 97.0);  // int8 vs fake quant on 100 images
  CHECK(std::stoll(rows["QAT int8"][3]) < std::stoll(rows["float"][3]) / 3);
  // The largest int8 vs fake-quant difference, in output steps: 52 requantized
  // layers and 12 integer adds in a row let one-step differences grow a
  // little (3 steps over all 10,000 test images in the measured run of
  // docs/quantized_cnn.md §11; the cnn's 2 convolutions stay within 1).
  const size_t at = r.out.find("int8 vs fake quant max difference ");
  REQUIRE(at != std::string::npos);
  CHECK(std::stod(r.out.substr(at + 34)) <= 4.0);
  // The files of every model, and a report with a weight panel per convolution.
  for (const char* f : {"float.safetensors", "qat_int8.safetensors", "ptq_int8.safetensors", "dynamic_int8.safetensors"})
    CHECK(fs::exists(wd + "/" + f));
  const std::string page = read_bytes(report + "/report.html");
  for (const char* layer : {"features.0.0 weights", "features.1.conv.0.0 weights", "features.17.conv.2 weights",
                            "features.18.0 weights", "classifier.1 weights", "features.3.skip_add output"})
    CHECK_THAT(page, Contains(layer));
  // tinyqat report draws it again from the workdir, into a directory that exists (--out names a directory).
  const std::string again = temp_path("mbv2_report_again");
  fs::create_directories(again);
  const Run rr = tinyqat("report --samples 20 --threads 1 --workdir " + wd + " --out " + again);
  INFO("stderr: " << rr.err);
  REQUIRE(rr.status == 0);
  CHECK_THAT(read_bytes(again + "/report.html"), Contains("features.18.0 weights"));
}

TEST_CASE("cli qat, ptq, compare and run on the cnn: --arch, the QAT schedule, image batches", "[cli][cnn]") {
  require_dataset();
  const std::string cnn = temp_path("cnn_q.safetensors");
  json_of(tinyqat("train --arch cnn --epochs 1 --limit-train 600 --limit-test 200 --out " + cnn + " --json"));

  // QAT with the BatchNorm statistics frozen and the observers disabled part-way.
  const std::string qat = temp_path("cnn_qat.safetensors");
  const json q = json_of(tinyqat("qat --arch cnn --from " + cnn + " --limit-train 320 --limit-test 200 " +
                                 "--freeze-bn-after 0.5 --freeze-observers-after 0.8 --out " + qat + " --json"));
  CHECK(q["accuracy"].get<double>() > 30.0);
  CHECK(q["agreement"].get<double>() >= 98.0);  // int8 vs fake quant on 200 images
  CHECK(q["max_step_diff"].get<double>() <= 1.01);
  auto qm = tq::io::load_model(qat);
  CHECK_THAT(qm->repr(), Contains("QuantizedConv2dReLU(") && Contains("MaxPool2d") && Contains("QuantizedLinearReLU("));

  const std::string ptq = temp_path("cnn_ptq.safetensors");
  const json p = json_of(tinyqat("ptq --arch cnn --from " + cnn + " --calibration-batches 2 --limit-test 200 --out " + ptq + " --json"));
  CHECK(std::fabs(p["accuracy"].get<double>() - p["float_accuracy"].get<double>()) <= 10.0);

  // compare: per-convolution SQNR against the float model (its BN folded).
  const json c = json_of(tinyqat("compare --float " + cnn + " --quantized " + ptq + " --samples 50 --json"));
  bool conv1 = false;
  for (const auto& row : c["weights"])
    if (row["layer"] == "conv1") conv1 = row["sqnr_db"].is_number() && row["sqnr_db"].get<double>() > 20.0;
  CHECK(conv1);
  bool conv_out = false;
  for (const auto& row : c["outputs"])
    if (row["layer"] == "conv2") conv_out = row["sqnr_db"].is_number() && row["sqnr_db"].get<double>() > 10.0;
  CHECK(conv_out);

  // run: the int8 cnn on an .npy batch of images gives what the library gives.
  tq::manual_seed(3);
  const tq::Tensor x = tq::randn({3, 1, 28, 28});
  const std::string in = temp_path("cnn_in.npy"), out = temp_path("cnn_out.npy");
  tq::io::save_npy(in, x);
  const json r = json_of(tinyqat("run --model " + qat + " --input " + in + " --out " + out + " --json"));
  CHECK(r["output_shape"] == "(3, 10)");
  tq::Tensor want;
  {
    tq::NoGradGuard no_grad;
    qm->eval();
    want = tq::kernels::to_float((*qm)(x));
  }
  const tq::Tensor got = tq::io::load_npy(out);
  CHECK(tq::to_vector(got) == tq::to_vector(want));

  expect_one_line_error(tinyqat("qat --arch mlp --from " + cnn + " --limit-train 64 --out " + temp_path("x")), 1,
                        "holds a cnn model, but --arch says mlp");
  expect_one_line_error(tinyqat("ptq --arch resnet --from " + cnn + " --out " + temp_path("x")), 2, "--arch");
  expect_one_line_error(tinyqat("qat --from " + cnn + " --freeze-bn-after -1 --out " + temp_path("x")), 2, "--freeze-bn-after");
}
