// Inference speed of models::cnn, float against its QAT int8 version, one
// thread, at batch 64 and batch 1 (Fashion-MNIST test images as input). The
// two sides alternate sample after sample (bench::measure_pair); the ratio is
// the median of the per-pair ratios, wall clock and thread CPU time.
//
// The float model: a models::cnn file (--model, e.g. the one bench_cnn_quant
// saves), else a fresh one trained for --steps SGD steps (default 100; speed
// does not depend on how well it is trained). The int8 model: fused,
// prepare_qat with the x86 preset, --qat-steps steps of QAT (BN frozen after
// half of them, observers after 80%), convert: what bench_cnn_quant builds.
//
//   OPENBLAS_NUM_THREADS=1 ./build/bench/bench_cnn_int8 [--model file] [--repeats 21] [--json]
//   ./build/bench/bench_cnn_int8 --loop int8 --batch 64 --calls 2000   (for a profiler: int8 forwards only)
#include <cstdio>
#include <cstring>
#include <string>

#include "bench_util.h"
#include "tinyqat.h"

extern "C" void openblas_set_num_threads(int num_threads);

using namespace tq;

namespace {

const char* flag_string(int argc, char** argv, const char* flag, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], flag) == 0) return argv[i + 1];
  return fallback;
}

void sgd_steps(nn::Module& model, const io::Dataset& train, int64_t steps, uint64_t seed,
               const std::function<void(double)>& before_step = nullptr) {
  model.train();
  nn::SGD opt(model.parameters(), nn::SGDOptions{.lr = 0.01, .momentum = 0.9});
  io::DataLoader loader(train, {.batch_size = 64, .seed = seed, .as_images = true});
  io::Batch b;
  for (int64_t s = 0; s < steps; ++s) {
    if (!loader.next(b)) {
      loader.reset();
      loader.next(b);
    }
    if (before_step) before_step(static_cast<double>(s) / static_cast<double>(steps));
    opt.zero_grad();
    cross_entropy(model(b.images), b.labels).backward();
    opt.step();
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string model_file = flag_string(argc, argv, "--model", "");
  const std::string loop = flag_string(argc, argv, "--loop", "");
  const std::string dir = flag_string(argc, argv, "--data", io::kFashionMnistDir);
  const int repeats = static_cast<int>(bench::flag_value(argc, argv, "--repeats", 21));
  const bool json = bench::has_flag(argc, argv, "--json");
  openblas_set_num_threads(1);
  tune_allocator_for_training();  // as the tinyqat command does: freed activations stay in the heap

  io::Dataset train = io::load_fashion_mnist(dir, io::Split::train);
  const io::Dataset test = io::load_fashion_mnist(dir, io::Split::test);
  std::shared_ptr<nn::Module> model;
  if (!model_file.empty()) {
    model = io::load_model(model_file);
  } else {
    manual_seed(0);
    model = models::cnn();
    sgd_steps(*model, train, bench::flag_value(argc, argv, "--steps", 100), 0);
  }
  const std::string path = "/tmp/bench_cnn_int8_float.safetensors";
  io::save_model(*model, path);
  auto int8 = io::load_model(path);
  int8->train();
  quant::fuse_known_modules(*int8);
  int8->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*int8);
  bool bn = false, obs = false;
  sgd_steps(*int8, train, bench::flag_value(argc, argv, "--qat-steps", 50), 1, [&](double done) {
    if (!bn && done >= 0.5) quant::freeze_bn_stats(*int8), bn = true;
    if (!obs && done >= 0.8) quant::disable_observer(*int8), obs = true;
  });
  quant::convert(*int8);
  quant::set_int8_threads(*int8, 1);
  model->eval();
  int8->eval();
  NoGradGuard no_grad;

  auto batch_of = [&](int64_t n) {
    io::DataLoader loader(test, {.batch_size = n, .shuffle = false, .as_images = true});
    io::Batch b;
    loader.next(b);
    return b.images;
  };

  if (bench::has_flag(argc, argv, "--layers")) {
    // Thread CPU time of each child of the Sequential, median of the repeats.
    for (int64_t batch : {64, 1}) {
      const Tensor x = batch_of(batch);
      for (auto* m : {model.get(), int8.get()}) {
        auto* seq = dynamic_cast<nn::Sequential*>(m);
        std::vector<std::vector<double>> t(seq->size());
        for (int r = 0; r < repeats + 3; ++r) {
          Tensor h = x;
          for (size_t i = 0; i < seq->size(); ++i) {
            const double c0 = bench::thread_cpu_seconds();
            h = (*seq)[i](h);
            if (r >= 3) t[i].push_back(bench::thread_cpu_seconds() - c0);
          }
        }
        std::printf("batch %lld, %s:", static_cast<long long>(batch), m == model.get() ? "float" : "int8");
        for (size_t i = 0; i < seq->size(); ++i)
          std::printf(" %s %.1f", seq->children()[i]->name.c_str(), bench::median_of(t[i]) * 1e6);
        std::printf(" (us)\n");
      }
    }
    return 0;
  }

  if (!loop.empty()) {
    const Tensor x = batch_of(bench::flag_value(argc, argv, "--batch", 64));
    const long calls = bench::flag_value(argc, argv, "--calls", 1000);
    nn::Module& m = loop == "float" ? *model : *int8;
    const double t0 = bench::now_seconds();
    for (long i = 0; i < calls; ++i) m(x);
    std::printf("%ld %s forwards at batch %lld: %.1f us each\n", calls, loop.c_str(),
                static_cast<long long>(x.size(0)), (bench::now_seconds() - t0) / static_cast<double>(calls) * 1e6);
    return 0;
  }

  nlohmann::ordered_json out;
  if (!json) std::printf("models::cnn inference, one thread, median of %d alternating pairs\n", repeats);
  for (int64_t batch : {64, 1}) {
    const Tensor x = batch_of(batch);
    auto run_float = [&] { (*model)(x); };
    auto run_int8 = [&] { (*int8)(x); };
    const int inner_f = bench::calibrate_inner(run_float, 0.004);
    const int inner_i = bench::calibrate_inner(run_int8, 0.004);
    const bench::PairTiming t = bench::measure_pair(run_float, run_int8, repeats, inner_f, inner_i);
    if (json) {
      nlohmann::ordered_json j;
      j["float"] = t.a;
      j["int8"] = t.b;
      j["float_over_int8"] = 1.0 / t.ratio;
      j["float_over_int8_cpu"] = 1.0 / t.cpu_ratio;
      out["batch_" + std::to_string(batch)] = j;
    } else {
      std::printf("batch %2lld: float %9.1f us (thread CPU %9.1f), int8 %9.1f us (thread CPU %9.1f): int8 %.2fx "
                  "faster (thread CPU %.2fx)\n",
                  static_cast<long long>(batch), t.a.median * 1e6, t.a.cpu_median * 1e6, t.b.median * 1e6,
                  t.b.cpu_median * 1e6, 1.0 / t.ratio, 1.0 / t.cpu_ratio);
    }
  }
  if (json) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
