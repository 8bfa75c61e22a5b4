// Writes the seed corpus of the fuzz targets: small valid files of every kind
// the readers take, and broken variants of them (truncated, a flipped header
// byte, bad JSON). Deterministic: the same files on every run.
//
//   make_corpus <corpus dir>     writes <dir>/idx, <dir>/safetensors, <dir>/model, <dir>/checkpoint
//
// Seeds are named "seed-*"; scripts/fuzz.sh runs this before fuzzing, and the
// files are committed (fuzz/corpus/) so the regression test reads them.
#include <filesystem>
#include <functional>
#include <fstream>
#include <cmath>
#include <iostream>
#include <limits>
#include <sstream>

#include "fuzz_entry_points.h"
#include "io/idx.h"
#include "io/model_file.h"
#include "io/safetensors.h"
#include "tinyqat.h"

using namespace tq;
namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + p.string());
}

// Broken copies of a valid file `name` in `dir`: cut short, and with byte
// `flip_at` changed.
void broken_variants(const fs::path& dir, const std::string& name, size_t flip_at) {
  const std::string good = read_bytes(dir / name);
  write_bytes(dir / (name + "-truncated-half"), good.substr(0, good.size() / 2));
  write_bytes(dir / (name + "-truncated-by-1"), good.substr(0, good.size() - 1));
  std::string flipped = good;
  if (flip_at < flipped.size()) flipped[flip_at] = static_cast<char>(flipped[flip_at] ^ 0x5a);
  write_bytes(dir / (name + "-flipped-byte"), flipped);
}

// A copy of model file `name` with tensor `tensor` replaced by `value`.
void with_tensor(const fs::path& dir, const std::string& name, const std::string& tensor, const Tensor& value,
                 const std::string& out) {
  io::SafetensorsFile f = io::load_safetensors((dir / name).string());
  if (!f.tensors.count(tensor)) throw std::runtime_error(name + " has no tensor " + tensor);
  f.tensors[tensor] = value;
  io::save_safetensors((dir / out).string(), f);
}

// ---- IDX ----

Tensor as(DType dtype, const std::vector<float>& values, const Shape& shape) {
  return kernels::to_dtype(from_vector(values, shape), dtype);
}

void idx_seeds(const fs::path& dir) {
  std::vector<float> pixels(24);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>((i * 37) % 256);
  const Tensor images = as(DType::u8, pixels, {2, 3, 4});
  io::write_idx((dir / "seed-images-u8-2x3x4").string(), images);
  io::write_idx((dir / "seed-images-u8-2x3x4.gz").string(), images);
  io::write_idx((dir / "seed-labels-u8-5").string(), as(DType::u8, {3, 1, 4, 1, 5}, {5}));
  io::write_idx((dir / "seed-labels-u8-5.gz").string(), as(DType::u8, {3, 1, 4, 1, 5}, {5}));
  io::write_idx((dir / "seed-i8-2x2").string(), as(DType::i8, {-128, -1, 0, 127}, {2, 2}));
  io::write_idx((dir / "seed-i32-3").string(), as(DType::i32, {-70000, 0, 65536}, {3}));
  io::write_idx((dir / "seed-f32-2x2x1x2").string(), from_vector({0.5f, -1, 3e8f, 1e-30f, 0, 2, -0.f, 7}, {2, 2, 1, 2}));
  broken_variants(dir, "seed-images-u8-2x3x4", 2);  // the data type byte
  broken_variants(dir, "seed-images-u8-2x3x4.gz", 12);
  // A valid header that declares more than the file holds, and extra bytes.
  std::string big = read_bytes(dir / "seed-labels-u8-5");
  big[7] = 100;
  write_bytes(dir / "seed-labels-declares-100", big);
  write_bytes(dir / "seed-labels-trailing", read_bytes(dir / "seed-labels-u8-5") + "xyz");
  // Valid IDX types tinyqat does not take (i16, f64).
  write_bytes(dir / "seed-i16-2", std::string("\0\0\x0b\x01\0\0\0\x02\x01\x02\x03\x04", 12));
  write_bytes(dir / "seed-f64-1", std::string("\0\0\x0e\x01\0\0\0\x01", 8) + std::string(8, '\x3f'));
}

// ---- safetensors ----

void safetensors_seeds(const fs::path& dir) {
  io::SafetensorsFile f;
  f.tensors["weight"] = from_vector({1, -2, 3.5f, 0, 1e-8f, -7}, {2, 3});
  f.tensors["bias"] = from_vector({0.25f, -0.25f}, {2});
  f.tensors["codes"] = as(DType::i8, {-128, 5, 127}, {3});
  f.tensors["pixels"] = as(DType::u8, {0, 200}, {1, 2});
  f.tensors["acc"] = as(DType::i32, {-100000, 100000}, {2});
  f.tensors["index"] = from_vector_i64({1, -1}, {2});
  f.tensors["scalar"] = from_vector({42}, {});
  f.metadata["about"] = "seed";
  io::save_safetensors((dir / "seed-tensors").string(), f);
  io::save_safetensors((dir / "seed-empty").string(), io::SafetensorsFile{});
  broken_variants(dir, "seed-tensors", 3);  // the header length
  std::string bad_json = read_bytes(dir / "seed-tensors");
  bad_json[8] = '[';
  write_bytes(dir / "seed-tensors-bad-json", bad_json);
  // Overlapping ranges, an offset past the end, a negative dimension.
  auto with_header = [](const std::string& json, const std::string& data) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
    return out + json + data;
  };
  write_bytes(dir / "seed-overlap", with_header(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                                R"("b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", "abc"));
  write_bytes(dir / "seed-past-end", with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "ab"));
  write_bytes(dir / "seed-negative-dim", with_header(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", "a"));
}

// ---- Model files ----

std::shared_ptr<nn::Sequential> mlp() {
  manual_seed(3);
  auto m = std::make_shared<nn::Sequential>();
  m->push_back("fc1", nn::Linear(4, 6));
  m->push_back("relu", nn::ReLU());
  m->push_back("fc2", nn::Linear(6, 3));
  return m;
}

Tensor batch() {
  Generator g(5);
  return randn({8, 4}, g);
}

// The qconfig with 64-bin histograms instead of 2048: the same code paths in
// a file of 2 KB rather than 37 KB (small seeds keep the fuzzer fast).
quant::QConfigPtr small(const quant::QConfigPtr& qconfig) {
  const quant::QuantSpec spec = qconfig->activation()->spec();
  if (!dynamic_cast<quant::HistogramObserver*>(qconfig->activation().get())) return qconfig;
  auto out = std::make_shared<quant::QConfig>(*qconfig);
  out->activation = [spec] { return std::make_shared<quant::HistogramObserver>(spec, 64, 8); };
  return out;
}

void model_seeds(const fs::path& dir) {
  NoGradGuard no_grad;
  io::save_model(*mlp(), (dir / "seed-float-mlp").string());
  {
    auto m = mlp();
    m->qconfig = quant::get_default_qat_qconfig("x86");
    quant::prepare_qat(*m);
    (*m)(batch());
    io::save_model(*m, (dir / "seed-qat-x86").string());
  }
  for (const char* observer : {"minmax", "histogram"}) {
    auto m = mlp();
    m->qconfig = small(quant::make_ptq_qconfig(observer));
    quant::prepare(*m);
    (*m)(batch());
    io::save_model(*m, (dir / ("seed-observed-" + std::string(observer))).string());
    quant::convert(*m);
    io::save_model(*m, (dir / ("seed-static-int8-" + std::string(observer))).string());
  }
  {
    auto m = mlp();
    m->qconfig = small(quant::get_default_qconfig("qnnpack"));
    quant::prepare(*m);
    (*m)(batch());
    quant::convert(*m);
    io::save_model(*m, (dir / "seed-static-int8-qnnpack").string());
  }
  {
    auto m = mlp();
    quant::quantize_dynamic(*m);
    io::save_model(*m, (dir / "seed-dynamic-int8").string());
  }
  broken_variants(dir, "seed-static-int8-minmax", 9);  // inside the JSON
  // Valid files whose observer state is not: an infinite or NaN range, one
  // too wide for float arithmetic (max - min overflows), a zero scale.
  const float inf = std::numeric_limits<float>::infinity();
  with_tensor(dir, "seed-observed-minmax", "fc1.input_observer.min_val", from_vector({-inf}, {}), "seed-observed-minmax-min-inf");
  with_tensor(dir, "seed-observed-minmax", "fc1.input_observer.max_val", from_vector({std::nanf("")}, {}),
              "seed-observed-minmax-max-nan");
  with_tensor(dir, "seed-observed-histogram", "fc1.input_observer.max_val", from_vector({3e38f}, {}),
              "seed-observed-histogram-huge-range");
  with_tensor(dir, "seed-observed-histogram", "fc1.input_observer.min_val", from_vector({-inf}, {}),
              "seed-observed-histogram-min-inf");
  with_tensor(dir, "seed-qat-x86", "fc1.activation_post_process.scale", from_vector({0.f}, {1}), "seed-qat-x86-zero-scale");
  std::string file = read_bytes(dir / "seed-float-mlp");
  const size_t at = file.find("in_features");
  if (at != std::string::npos) file.replace(at, 11, "in_featureX");
  write_bytes(dir / "seed-float-mlp-missing-key", file);
}

// ---- Checkpoints ----

// A checkpoint of `steps` steps of a tiny run (10 samples, batches of 4: 3
// steps an epoch) of `model` with the settings `command`.
void checkpoint_seed(const fs::path& dir, const std::string& name, std::shared_ptr<nn::Module> model,
                     const nlohmann::json& command, int steps, bool best = false) {
  fuzzing::TinyRun run = fuzzing::make_tiny_run(std::move(model), command, 10, 4);
  for (int i = 0; i < steps; ++i) run.step();
  if (best) {
    run.state.best_epoch = 1;
    run.state.best_val_accuracy = 37.5;
    run.state.best = nn::ModelSnapshot::take(*run.model);
  }
  manual_seed(17);  // the global generator's state goes into the file
  io::save_safetensors((dir / name).string(), run.checkpoint());
}

std::shared_ptr<nn::Module> qat_mlp(bool lsq) {
  auto m = mlp();
  m->qconfig = lsq ? quant::make_lsq_qat_qconfig(8, 8) : quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*m);
  (*m)(batch());
  return m;
}

void checkpoint_seeds(const fs::path& dir) {
  using nlohmann::json;
  const json sgd = {{"command", "train"}, {"epochs", 3}, {"optimizer", "sgd"}, {"lr", 0.05}, {"momentum", 0.9}, {"seed", 1}};
  checkpoint_seed(dir, "seed-train-sgd-momentum", mlp(), sgd, 4);
  checkpoint_seed(dir, "seed-train-sgd-first-epoch", mlp(), sgd, 2);
  json adam = sgd;
  adam.update({{"optimizer", "adam"}, {"lr", 0.01}, {"lr_schedule", "cosine"}, {"warmup", 0.5}});
  checkpoint_seed(dir, "seed-train-adam-cosine-warmup", mlp(), adam, 4);
  json adamw = sgd;
  adamw.update({{"optimizer", "adamw"}, {"weight_decay", 0.01}, {"lr_schedule", "step"}, {"step_size", 1},
                {"gamma", 0.5}, {"augment", true}});
  checkpoint_seed(dir, "seed-train-adamw-step-augment", mlp(), adamw, 5);
  json multistep = sgd;
  multistep.update({{"lr_schedule", "multistep"}, {"milestones", {1, 2}}, {"epochs", 4}});
  checkpoint_seed(dir, "seed-train-sgd-multistep-best", mlp(), multistep, 7, true);
  json qat = sgd;
  qat["command"] = "qat";
  checkpoint_seed(dir, "seed-qat-sgd", qat_mlp(false), qat, 4);
  checkpoint_seed(dir, "seed-qat-sgd-best", qat_mlp(false), qat, 4, true);
  json lsq = adam;
  lsq["command"] = "qat";
  checkpoint_seed(dir, "seed-qat-lsq-adam-cosine", qat_mlp(true), lsq, 4);
  broken_variants(dir, "seed-train-sgd-momentum", 9);  // inside the JSON
  // Valid files whose description is not: the crash of a finished run, a
  // generator that never leaves zero, a QAT checkpoint relabelled as a float run.
  auto edit = [&](const std::string& from, const std::string& to, const std::function<void(json&)>& change) {
    io::SafetensorsFile f = io::load_safetensors((dir / from).string());
    json j = json::parse(f.metadata.at("tinyqat_checkpoint"));
    change(j);
    f.metadata["tinyqat_checkpoint"] = j.dump();
    io::save_safetensors((dir / to).string(), f);
  };
  edit("seed-train-sgd-momentum", "seed-train-epoch-equals-epochs", [](json& j) { j["epoch"] = 3; });
  edit("seed-train-sgd-momentum", "seed-train-zero-rng", [](json& j) { j["loader"]["rng"]["s"] = {0, 0, 0, 0}; });
  edit("seed-qat-sgd", "seed-qat-relabelled-train", [](json& j) { j["command"]["command"] = "train"; });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_corpus <corpus dir>\n";
    return 2;
  }
  const fs::path root = argv[1];
  for (const char* target : {"idx", "safetensors", "model", "checkpoint"}) fs::create_directories(root / target);
  idx_seeds(root / "idx");
  safetensors_seeds(root / "safetensors");
  model_seeds(root / "model");
  checkpoint_seeds(root / "checkpoint");
  std::cout << "make_corpus: seeds written under " << root.string() << "\n";
  return 0;
}
