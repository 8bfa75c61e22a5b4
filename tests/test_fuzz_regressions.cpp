// The fuzz corpus as tests (docs/reliability.md): every committed file of
// fuzz/corpus/<target>/ (seeds and what the fuzzers found) and of
// fuzz/corpus/regressions/<target>/ (inputs that once crashed a reader) goes
// through the entry points of fuzz/fuzz_entry_points.h in the normal build,
// and must give an answer: accepted, or rejected with an exception. Under
// scripts/sanitize.sh the same files run with ASan + UBSan.
//
// The seeds also pin the readers' answers: each valid seed is accepted, and
// each broken one is rejected with a FormatError that names the file and
// says what is wrong.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../fuzz/fuzz_entry_points.h"

using namespace tq;
namespace fs = std::filesystem;

namespace {

const fs::path kCorpus = fs::path(TINYQAT_GOLDEN_DIR) / ".." / ".." / "fuzz" / "corpus";

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every file of fuzz/corpus/<target> and fuzz/corpus/regressions/<target>, sorted.
std::vector<fs::path> inputs_of(const std::string& target) {
  std::vector<fs::path> files;
  for (const fs::path& dir : {kCorpus / target, kCorpus / "regressions" / target}) {
    if (!fs::is_directory(dir)) continue;
    for (auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

using EntryPoint = fuzzing::Problem (*)(const uint8_t*, size_t);

void replay_all(const std::string& target, EntryPoint run) {
  const std::vector<fs::path> files = inputs_of(target);
  REQUIRE(files.size() >= 5);  // the seeds at least: a missing corpus must not pass silently
  for (const fs::path& f : files) {
    INFO(f.string());
    const std::string bytes = read_bytes(f);
    fuzzing::Problem problem;
    CHECK_NOTHROW(problem = run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    CHECK(problem == "");
  }
}

// The reader's message for seed `name` of `target`, or "" if it was accepted.
std::string answer(const std::string& target, const std::string& name) {
  const std::string bytes = read_bytes(kCorpus / target / name);
  try {
    if (target == "idx") io::parse_idx(bytes.data(), bytes.size(), name);
    else if (target == "safetensors") io::parse_safetensors(bytes, name);
    else if (target == "checkpoint") io::parse_checkpoint(io::parse_safetensors(bytes, name), name);
    else io::build_model(io::parse_safetensors(bytes, name), name);
  } catch (const io::FormatError& e) {
    return e.what();
  }
  return "";
}

void check_rejected(const std::string& target, const std::string& name, const std::string& says) {
  INFO(target << "/" << name);
  const std::string message = answer(target, name);
  CHECK_THAT(message, Catch::StartsWith(name + ": ") && Catch::Contains(says));
}

// The seeds of `target`: each of `valid` is read without complaint, each of
// `broken` is refused with a message that starts with its name and says what
// is wrong (the second of the pair, a part of the message).
void check_seeds(const std::string& target, const std::vector<std::string>& valid,
                 const std::vector<std::pair<std::string, std::string>>& broken) {
  REQUIRE(!valid.empty());
  for (const std::string& name : valid) {
    INFO(target << "/" << name);
    CHECK(answer(target, name) == "");
  }
  for (const auto& [name, says] : broken) check_rejected(target, name, says);
}

}  // namespace

TEST_CASE("fuzz corpus: every IDX input is read or rejected, plain and gzip-wrapped alike", "[fuzz][io][errors]") {
  replay_all("idx", fuzzing::run_idx);
}

TEST_CASE("fuzz corpus: every safetensors input is read or rejected, and what is read round-trips", "[fuzz][io][errors]") {
  replay_all("safetensors", fuzzing::run_safetensors);
}

TEST_CASE("fuzz corpus: every model input is built or rejected, and a built model runs and saves", "[fuzz][io][errors]") {
  replay_all("model", fuzzing::run_model);
}

TEST_CASE("fuzz corpus: every checkpoint input is refused, or restores and resumes", "[fuzz][io][errors]") {
  replay_all("checkpoint", fuzzing::run_checkpoint);
}

TEST_CASE("fuzz seeds: valid checkpoints of float and QAT runs parse, restore and resume; broken ones are refused",
          "[fuzz][io][errors]") {
  check_seeds("checkpoint",
              {"seed-train-sgd-momentum", "seed-train-sgd-first-epoch", "seed-train-adam-cosine-warmup",
               "seed-train-adamw-step-augment", "seed-train-sgd-multistep-best", "seed-qat-sgd", "seed-qat-sgd-best",
               "seed-qat-lsq-adam-cosine"},
              {{"seed-train-sgd-momentum-truncated-half", "header length"},
               {"seed-train-sgd-momentum-truncated-by-1", "outside the data area"},
               {"seed-train-sgd-momentum-flipped-byte", "not valid JSON"},
               {"seed-train-epoch-equals-epochs", "checkpoint field 'epoch' is 3, outside 0..2"},
               {"seed-train-zero-rng", "checkpoint field 'loader.rng' is the all-zero generator state"},
               {"seed-qat-relabelled-train", "checkpoint field 'command.command' is \"train\""}});
}

TEST_CASE("fuzz seeds: valid IDX files are read, broken ones rejected naming the defect", "[fuzz][io][errors]") {
  check_seeds("idx",
              {"seed-images-u8-2x3x4", "seed-images-u8-2x3x4.gz", "seed-labels-u8-5", "seed-labels-u8-5.gz", "seed-i8-2x2",
               "seed-i32-3", "seed-f32-2x2x1x2"},
              {{"seed-images-u8-2x3x4-truncated-half", "truncated"},
               {"seed-images-u8-2x3x4-truncated-by-1", "truncated"},
               {"seed-images-u8-2x3x4-flipped-byte", "unknown IDX data type"},
               {"seed-images-u8-2x3x4.gz-truncated-half", "truncated gzip stream"},
               {"seed-images-u8-2x3x4.gz-truncated-by-1", "truncated gzip stream"},
               {"seed-images-u8-2x3x4.gz-flipped-byte", "bad magic number"},  // inflated, wrong, before the CRC check
               {"seed-labels-declares-100", "truncated"},
               {"seed-labels-trailing", "trailing data"},
               {"seed-i16-2", "not supported"},
               {"seed-f64-1", "not supported"}});
}

TEST_CASE("fuzz seeds: valid safetensors files are read, broken ones rejected naming the defect", "[fuzz][io][errors]") {
  check_seeds("safetensors", {"seed-tensors", "seed-empty"},
              {{"seed-tensors-truncated-half", "header length"},
               {"seed-tensors-truncated-by-1", "outside the data area"},
               {"seed-tensors-flipped-byte", "header length"},
               {"seed-tensors-bad-json", "not valid JSON"},
               {"seed-overlap", "overlap"},
               {"seed-past-end", "outside the data area"},
               {"seed-negative-dim", "negative dimension"}});
}

TEST_CASE("fuzz seeds: float, QAT, observed, static and dynamic int8 model files build, broken ones do not", "[fuzz][io][errors]") {
  check_seeds("model",
              {"seed-float-mlp", "seed-qat-x86", "seed-observed-minmax", "seed-observed-histogram", "seed-static-int8-minmax",
               "seed-static-int8-histogram", "seed-static-int8-qnnpack", "seed-dynamic-int8"},
              {{"seed-static-int8-minmax-truncated-half", "header length"},
               {"seed-static-int8-minmax-truncated-by-1", "outside the data area"},
               {"seed-static-int8-minmax-flipped-byte", "not valid JSON"},
               {"seed-float-mlp-missing-key", "in_features"}});
}

// Found by fuzz/fuzz_model: a calibrated model file whose observer holds
// min_val = -inf loaded (the file is well formed), but convert computed a
// NaN zero point and converted it to an integer (undefined behaviour; in
// practice a garbage zero point). calculate_qparams refuses the range, and
// now the file is refused before that, when it loads (no observer can hold
// that range), naming the file, the observer and the range.
TEST_CASE("fuzz regression: a loaded model whose observer saw an infinite range is refused, naming the range", "[fuzz][io][errors]") {
  const std::string bytes = read_bytes(kCorpus / "regressions" / "model" / "crash-calculate-qparams-infinite-min");
  CHECK_THROWS_WITH(io::build_model(io::parse_safetensors(bytes, "min-inf"), "min-inf"),
                    Catch::StartsWith("min-inf: ") && Catch::Contains("fc1.input_observer") &&
                        Catch::Contains("[-inf, 1.8771377]"));
  CHECK_THROWS_WITH(quant::calculate_qparams(-std::numeric_limits<float>::infinity(), 1.f, quant::activation_spec(8)),
                    Catch::Contains("[-inf, 1] is not finite"));
}

// Found by fuzz/fuzz_model: a QAT model file with a NaN bias converts, and
// the int8 layer's first forward quantized the bias with a NaN-to-integer
// conversion (undefined behaviour). It first refused at that forward; now the
// layer refuses to be built (at convert, or when a model file loads), naming
// the layer and the bias.
TEST_CASE("fuzz regression: an int8 layer with a NaN bias refuses to be built, naming the layer and the bias", "[fuzz][errors]") {
  const quant::QuantSpec w = quant::weight_spec(8, QScheme::per_tensor_symmetric);
  const quant::QuantSpec a = quant::activation_spec(8);
  const Tensor weight = from_vector({0.5f, -0.25f, 1.f, 0.f, 0.75f, -1.f}, {2, 3});
  const Tensor bias = from_vector({0.1f, std::nanf("")}, {2});
  CHECK_THROWS_WITH(quant::QuantizedLinear(weight, bias, quant::make_qparams(w, {{0.01f, 0}}),
                                           quant::make_qparams(a, {{0.02f, 128}}),
                                           std::make_shared<const QParams>(quant::make_qparams(a, {{0.05f, 128}})), false,
                                           "fc9"),
                    Catch::Contains("fc9") && Catch::Contains("bias[1] is nan"));
}

// Found by fuzz/fuzz_model: a histogram observer loaded with an infinite
// min_val or max_val computed NaN bin indices when the next batch widened its
// range (undefined behaviour, then a write anywhere). The loaded state is now
// checked: a range with data must be finite, counts finite and >= 0.
TEST_CASE("fuzz regression: a histogram observer loaded with an infinite range is refused, naming file and module", "[fuzz][io][errors]") {
  CHECK_THAT(answer("model", "seed-observed-histogram-min-inf"),
             Catch::StartsWith("seed-observed-histogram-min-inf: ") && Catch::Contains("fc1.input_observer") &&
                 Catch::Contains("[-inf, ") && Catch::Contains("not finite"));
  CHECK(answer("model", "seed-observed-histogram-huge-range") == "");  // finite, however wide: accepted and runs
}

// The same files through the tinyqat binary, as a user would pass them: every
// safetensors and model input ends with exit 0 (read) or 1 (a one-line error),
// never a signal or a hang (killed after 10 s, exit 137).
TEST_CASE("fuzz corpus: tinyqat inspect answers every safetensors and model input with exit 0 or 1", "[fuzz][cli][errors]") {
  const std::string binary = std::string(TINYQAT_BINARY_DIR) + "/tinyqat";
  REQUIRE(fs::exists(binary));
  int files = 0;
  for (const char* target : {"safetensors", "model"}) {
    for (const fs::path& f : inputs_of(target)) {
      INFO(f.string());
      const std::string cmd = "timeout -s KILL 10 " + binary + " inspect --model '" + f.string() + "' >/dev/null 2>&1";
      const int status = std::system(cmd.c_str());
      REQUIRE(WIFEXITED(status));
      const int code = WEXITSTATUS(status);
      CHECK((code == 0 || code == 1));
      ++files;
    }
  }
  CHECK(files >= 100);
}
