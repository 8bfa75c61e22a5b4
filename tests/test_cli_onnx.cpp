// Tests of `tinyqat export` and `tinyqat import` (tools/cli/commands/export.cpp,
// import.cpp; docs/cli.md, docs/onnx.md), run as a separate process: PyTorch's
// exported MLP imported into a model file with PyTorch's names and outputs,
// exported back (float and PTQ int8) as files ONNX's checker accepts, and
// bad arguments refused with one line and exit status 2 or 1.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <onnx/onnx_pb.h>

#include "golden_reader.h"
#include "io/model_file.h"
#include "onnx_io/onnx_import.h"
#include "test_files.h"
#include "tinyqat.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using json = nlohmann::json;

std::string temp_path(const std::string& name) { return (tq_test::scratch_dir("cli_onnx") / name).string(); }

const std::string kFixture = std::string(TINYQAT_GOLDEN_DIR) + "/onnx_mlp.onnx";

using tq_test::Run;

Run tinyqat(const std::string& args) {
  REQUIRE(fs::exists(std::string(TINYQAT_BINARY_DIR) + "/tinyqat"));
  return tq_test::run_tinyqat(args, "cli_onnx");
}

json json_of(const Run& r) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.status == 0);
  REQUIRE(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  return json::parse(r.out);
}

void expect_one_line_error(const Run& r, int status, const std::string& text) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.status == status);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK_THAT(r.err, Contains(text));
  CHECK(r.out.empty());
}

::onnx::ModelProto read_onnx(const std::string& path) {
  ::onnx::ModelProto m;
  REQUIRE(m.ParseFromString(tq_test::read_bytes(path)));
  return m;
}

}  // namespace

TEST_CASE("cli import: PyTorch's ONNX MLP becomes a model file with PyTorch's names and outputs", "[cli][onnx]") {
  const std::string model = temp_path("imported.safetensors");
  const json j = json_of(tinyqat("import --onnx " + kFixture + " --out " + model + " --json"));
  REQUIRE(j["modules"].size() == 3);
  CHECK(j["modules"][0]["name"] == "fc1");
  CHECK(j["modules"][0]["type"] == "Linear");
  CHECK(j["modules"][1]["name"] == "relu1");
  CHECK(j["modules"][2]["name"] == "fc2");
  CHECK(j["parameters"].get<int64_t>() == 784 * 32 + 32 + 32 * 10 + 10);
  CHECK(j["model_bytes"].get<int64_t>() == static_cast<int64_t>(fs::file_size(model)));
  auto m = tq::io::load_model(model);
  m->eval();
  tq::golden::File g("onnx_mlp.txt");
  tq::NoGradGuard no_grad;
  const auto y = tq::to_vector((*m)(g.tensor("inputs"))), want = tq::to_vector(g.tensor("outputs"));
  REQUIRE(y.size() == want.size());
  double diff = 0, top = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    diff = std::max(diff, std::fabs(double{y[i]} - double{want[i]}));
    top = std::max(top, std::fabs(double{want[i]}));
  }
  CHECK(diff <= 1e-4 * top);
}

TEST_CASE("cli export: float and PTQ int8 model files become checked ONNX files", "[cli][onnx]") {
  const std::string model = temp_path("float.safetensors");
  json_of(tinyqat("import --onnx " + kFixture + " --out " + model + " --json"));
  SECTION("float: Gemm, Relu, Gemm") {
    const std::string out = temp_path("float.onnx");
    const json j = json_of(tinyqat("export --model " + model + " --out " + out + " --json"));
    CHECK(j["opset"] == 13);
    CHECK(j["ops"]["Gemm"] == 2);
    CHECK(j["ops"]["Relu"] == 1);
    CHECK(j["onnx_bytes"].get<int64_t>() == static_cast<int64_t>(fs::file_size(out)));
    const auto proto = read_onnx(out);
    CHECK(proto.graph().input(0).type().tensor_type().shape().dim(1).dim_value() == 784);
    // Imported back: the same layers.
    auto back = tq::onnx_io::import_onnx(out);
    CHECK(back->children()[0]->name == "fc1");
  }
  SECTION("PTQ int8: QDQ pairs around the Gemms; --input-shape sets the input's dimensions") {
    if (!fs::exists(std::string(tq::io::kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz") &&
        !fs::exists(std::string(tq::io::kFashionMnistDir) + "/t10k-labels-idx1-ubyte"))
      FAIL("Fashion-MNIST not found at " << tq::io::kFashionMnistDir << ": run scripts/setup.sh");
    const std::string q = temp_path("ptq.safetensors"), out = temp_path("ptq.onnx");
    json_of(tinyqat("ptq --from " + model + " --calibration-batches 2 --out " + q + " --json"));
    const json j = json_of(tinyqat("export --model " + q + " --out " + out + " --input-shape 784 --json"));
    CHECK(j["ops"]["QuantizeLinear"] == 3);
    CHECK(j["ops"]["DequantizeLinear"] == 7);
    CHECK(j["ops"]["Gemm"] == 2);
    CHECK(read_onnx(out).graph().input(0).type().tensor_type().shape().dim(1).dim_value() == 784);
    const Run text = tinyqat("export --model " + q + " --out " + out);
    CHECK(text.status == 0);
    CHECK_THAT(text.out, Contains("checked by the ONNX checker") && Contains("3 QuantizeLinear"));
  }
}

TEST_CASE("cli export and import: bad arguments and files are refused with one line", "[cli][onnx][errors]") {
  const std::string model = temp_path("float_e.safetensors");
  json_of(tinyqat("import --onnx " + kFixture + " --out " + model + " --json"));
  expect_one_line_error(tinyqat("export --out " + temp_path("x.onnx")), 2, "--model");
  expect_one_line_error(tinyqat("export --model " + model), 2, "--out");
  expect_one_line_error(tinyqat("export --model " + model + " --out " + temp_path("x.onnx") + " --input-shape 7,a"), 2,
                        "--input-shape: 'a'");
  // A shape the first layer (Linear 784 -> ...) cannot take: refused before
  // anything is written, naming the option; the flattened image is taken.
  const std::string x_onnx = temp_path("shape.onnx");
  fs::remove(x_onnx);
  expect_one_line_error(tinyqat("export --model " + model + " --out " + x_onnx + " --input-shape 100000,100000"), 2,
                        "--input-shape: the input shape (100000, 100000) does not fit the first Linear layer's 784");
  expect_one_line_error(tinyqat("export --model " + model + " --out " + x_onnx + " --input-shape 785"), 2,
                        "--input-shape");
  CHECK_FALSE(fs::exists(x_onnx));
  CHECK(tinyqat("export --model " + model + " --out " + x_onnx + " --input-shape 1,28,28").status == 0);
  CHECK(tinyqat("export --model " + model + " --out " + x_onnx + " --input-shape 3,784").status == 0);
  expect_one_line_error(tinyqat("import --onnx " + kFixture), 2, "--out");
  // An output that is the input.
  expect_one_line_error(tinyqat("import --onnx " + kFixture + " --out " + kFixture), 2, "is also --onnx");
  // Not an ONNX file; not a model file.
  const std::string bad = temp_path("bad.onnx");
  std::ofstream(bad) << "not a model";
  expect_one_line_error(tinyqat("import --onnx " + bad + " --out " + temp_path("y.safetensors")), 1, "not an ONNX model");
  expect_one_line_error(tinyqat("export --model " + bad + " --out " + temp_path("y.onnx")), 1, bad);
  CHECK_FALSE(fs::exists(temp_path("y.onnx")));
  CHECK_FALSE(fs::exists(temp_path("y.safetensors")));
}
