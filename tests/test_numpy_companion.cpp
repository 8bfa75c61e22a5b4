// tools/numpy_int8.py, the numpy companion of the docs, against the C++ side:
// its int8 inference of a model file gives the very u8 outputs, predictions
// and accuracy of the library (and of `tinyqat eval`), its walkthrough prints
// the lines of examples/int8_walkthrough, and its histogram search picks the
// ranges and qparams of HistogramObserver, bit for bit.
#include <catch2/catch.hpp>

#include "test_files.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tinyqat.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace tq;

const fs::path& scratch_dir() { return tq_test::scratch_dir("numpy"); }

// python3 with numpy, or "" (the test is then skipped with a warning).
std::string python_with_numpy() {
  for (const char* candidate : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(candidate) + " -c 'import numpy' >/dev/null 2>&1").c_str()) == 0) return candidate;
  return "";
}

// Runs a shell command, returns its stdout; REQUIREs exit status 0.
std::string run(const std::string& cmd) {
  int status = -1;
  const std::string out = tq_test::capture(cmd + " 2>&1", &status);
  INFO("command: " << cmd << "\noutput:\n" << out);
  REQUIRE(status == 0);
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

const std::string kScript = std::string(TINYQAT_GOLDEN_DIR) + "/../../tools/numpy_int8.py";

}  // namespace

TEST_CASE("numpy companion: the walkthrough prints the example's lines, digit for digit", "[numpy][python]") {
  const std::string python = python_with_numpy();
  if (python.empty()) {
    WARN("skipped: no python3 with numpy (apt-get install python3-numpy)");
    return;
  }
  const std::vector<std::string> ours = lines_of(run(python + " " + kScript + " walkthrough"));
  const std::vector<std::string> example = lines_of(run(std::string(TINYQAT_BINARY_DIR) + "/examples/int8_walkthrough"));
  REQUIRE(ours.size() >= 40);
  // Every numpy line appears in the example's output, in the same order
  // (the example also prints a note, the dequantized result and Part C).
  size_t at = 0;
  for (const std::string& line : ours) {
    INFO("numpy line: " << line);
    while (at < example.size() && example[at] != line) ++at;
    REQUIRE(at < example.size());
    ++at;
  }
}

TEST_CASE("numpy companion: int8 inference and the histogram search match the library bit for bit", "[numpy][python]") {
  const std::string python = python_with_numpy();
  if (python.empty()) {
    WARN("skipped: no python3 with numpy (apt-get install python3-numpy)");
    return;
  }
  if (!fs::exists(std::string(io::kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz"))
    FAIL("Fashion-MNIST not found at " << io::kFashionMnistDir << ": apt-get install dataset-fashion-mnist");

  // A small float MLP, trained a little, calibrated with histogram observers
  // (the x86 preset), converted: the model file `tinyqat ptq` would write.
  manual_seed(5);
  auto model = nn::make_mlp({784, 32, 16, 10});
  {
    io::DataLoader train(io::load_fashion_mnist(io::kFashionMnistDir, io::Split::train), {.batch_size = 64, .seed = 2});
    nn::SGD opt(model->parameters(), {.lr = 0.01, .momentum = 0.9});
    io::Batch b;
    for (int step = 0; step < 150 && train.next(b); ++step) {
      opt.zero_grad();
      Tensor loss = cross_entropy((*model)(b.images), b.labels);
      loss.backward();
      opt.step();
    }
  }
  const io::Dataset test = io::load_fashion_mnist(io::kFashionMnistDir, io::Split::test);
  quant::fuse_linear_relu(*model);
  model->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*model);
  model->eval();
  {
    NoGradGuard no_grad;
    io::DataLoader calibration(test, {.batch_size = 64, .seed = 3});
    io::Batch b;
    for (int i = 0; i < 8 && calibration.next(b); ++i) (*model)(b.images);
  }
  const fs::path calibrated = scratch_dir() / "calibrated.safetensors";
  io::save_model(*model, calibrated.string());

  SECTION("the histogram search") {
    const json j = json::parse(run(python + " " + kScript + " histogram " + calibrated.string()));
    int observers = 0;
    for (auto& [path, module] : model->named_modules()) {
      auto* h = dynamic_cast<quant::HistogramObserver*>(module);
      if (h == nullptr || !h->has_data()) continue;  // fc2's and fc3's input observers see u8, not float
      ++observers;
      INFO("observer " << path);
      REQUIRE(j.contains(path));
      const quant::ClippingRange r = h->non_linear_param_search();
      const QParams q = h->calculate_qparams();
      CHECK(j[path]["min"].get<double>() == static_cast<double>(r.min));
      CHECK(j[path]["max"].get<double>() == static_cast<double>(r.max));
      CHECK(j[path]["scale"].get<double>() == static_cast<double>(q.scale[0]));
      CHECK(j[path]["zero_point"].get<int>() == q.zero_point[0]);
    }
    CHECK(observers == 4);  // fc1's input and output, fc2's and fc3's outputs
    CHECK(static_cast<int>(j.size()) == observers);
  }

  SECTION("int8 inference: the same outputs, predictions and accuracy") {
    quant::convert(*model);
    const fs::path int8_file = scratch_dir() / "int8.safetensors";
    io::save_model(*model, int8_file.string());
    const fs::path outputs_file = scratch_dir() / "numpy_outputs.u8";
    const json ours = json::parse(
        run(python + " " + kScript + " eval " + int8_file.string() + " --json --outputs " + outputs_file.string()));

    // The library's u8 outputs over the whole test set, in order.
    std::string expected;
    int64_t correct = 0;
    {
      NoGradGuard no_grad;
      io::DataLoader loader(test, {.batch_size = 1000, .shuffle = false});
      io::Batch b;
      while (loader.next(b)) {
        const Tensor y = kernels::contiguous((*model)(b.images));
        REQUIRE(y.dtype() == DType::u8);
        expected.append(reinterpret_cast<const char*>(y.data<uint8_t>()), static_cast<size_t>(y.numel()));
        const Tensor pred = kernels::argmax(kernels::to_float(y), 1);
        for (int64_t i = 0; i < b.size(); ++i) correct += pred.data<int64_t>()[i] == b.labels.data<int64_t>()[i];
      }
    }
    const std::string got = tq_test::read_bytes(outputs_file.string());
    REQUIRE(got.size() == expected.size());
    size_t differing = 0;
    for (size_t i = 0; i < got.size(); ++i) differing += got[i] != expected[i];
    CHECK(differing == 0);
    CHECK(ours["samples"].get<int64_t>() == test.size());
    CHECK(ours["correct"].get<int64_t>() == correct);
    CHECK(correct > test.size() / 2);  // the model did learn (10 classes)

    // And `tinyqat eval` prints the same accuracy, to the last digit.
    const json cli = json::parse(run(std::string(TINYQAT_BINARY_DIR) + "/tinyqat eval --model " + int8_file.string() +
                                     " --json --threads 1"));
    CHECK(cli["accuracy"].get<double>() == ours["accuracy"].get<double>());
  }
}
