// The measurements behind suite.h. Each section builds its inputs, times
// the two sides in alternating samples and returns the timings; printing and
// JSON are separate so that `tinyqat bench` and the programs in bench/ share
// both.
#include "suite.h"

#include <cblas.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <random>

#include "quant/quant.h"
#include "quant/quant_kernels.h"
#include "tensor/cpu_features.h"
#include "tensor/int8_gemm.h"
#include "tensor/requantize.h"
#include "tinyqat.h"

// OpenBLAS's own call (declared in its cblas.h, repeated here for builds that
// use a cblas.h without it).
extern "C" void openblas_set_num_threads(int num_threads);

namespace tq::bench {

namespace {

// Samples per ratio, and the wall time one sample should last.
int repeats_for(const SuiteOptions& o, int full) { return o.quick ? std::max(3, full / 5) : full; }
double sample_seconds(const SuiteOptions& o) { return o.quick ? 5e-4 : 2e-3; }

// Times `a` and `b` in alternating samples, each side's calls per sample
// chosen so a sample lasts about sample_seconds.
template <class A, class B>
PairTiming pair(const SuiteOptions& o, int full_repeats, A&& a, B&& b) {
  const int inner_a = calibrate_inner(a, sample_seconds(o)), inner_b = calibrate_inner(b, sample_seconds(o));
  return measure_pair(a, b, repeats_for(o, full_repeats), inner_a, inner_b);
}

using Json = nlohmann::ordered_json;

Json timing_json(const Timing& t) {
  return {{"median_us", t.median * 1e6},
          {"min_us", t.min * 1e6},
          {"cpu_median_us", t.cpu_median * 1e6},
          {"samples", t.repeats},
          {"calls_per_sample", t.inner}};
}

// The float MLP of the Fashion-MNIST pipeline.
std::shared_ptr<nn::Sequential> make_mlp() { return nn::make_mlp({784, 256, 128, 10}); }

std::shared_ptr<nn::Sequential> make_simple_nn() {
  auto net = std::make_shared<nn::Sequential>();
  net->push_back("fc1", nn::Linear(10, 5));
  net->push_back("relu1", nn::ReLU());
  net->push_back("fc2", nn::Linear(5, 2));
  net->push_back("relu2", nn::ReLU());
  return net;
}

// A train step of `model`: zero_grad, forward, cross-entropy, backward, SGD.
struct Trainer {
  nn::Module& model;
  nn::SGD optimizer;
  Tensor x, y;
  Trainer(nn::Module& m, nn::SGDOptions o, Tensor x, Tensor y)
      : model(m), optimizer(m.parameters(), o), x(std::move(x)), y(std::move(y)) {}
  void step() {
    optimizer.zero_grad();
    Tensor loss = cross_entropy(model(x), y);
    loss.backward();
    optimizer.step();
  }
};

// One row-major GEMM of the MLP's train step: C (M, N) = op(A) op(B) (+ C when beta = 1).
struct Gemm {
  bool trans_a, trans_b;
  int M, N, K;
  float beta;
  std::vector<float> a, b, c;
  Gemm(bool ta, bool tb, int M, int N, int K, float beta)
      : trans_a(ta), trans_b(tb), M(M), N(N), K(K), beta(beta), a(static_cast<size_t>(M) * K, 0.01f),
        b(static_cast<size_t>(K) * N, 0.02f), c(static_cast<size_t>(M) * N, 0.f) {}
  void run() {
    const int lda = trans_a ? M : K, ldb = trans_b ? K : N;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.f,
                a.data(), lda, b.data(), ldb, beta, c.data(), N);
  }
};

double gmacs(int64_t macs, double seconds) { return static_cast<double>(macs) / (seconds * 1e9); }

}  // namespace

ProgramOptions parse_program_options(int argc, char** argv) {
  tune_allocator_for_training();  // every benchmark program starts here
  ProgramOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    char* end = nullptr;
    if (arg == "--threads" && i + 1 < argc && (o.suite.threads = static_cast<int>(std::strtol(argv[i + 1], &end, 10)),
                                               *end == '\0' && o.suite.threads >= 1)) {
      ++i;
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--quick") {
      o.suite.quick = true;
    } else {
      std::fprintf(stderr, "%s: bad argument '%s'\nusage: %s [--threads N>=1] [--quick] [--json]\n", argv[0],
                   arg.c_str(), argv[0]);
      std::exit(2);
    }
  }
  return o;
}

void set_blas_threads(int threads) { openblas_set_num_threads(std::max(1, threads)); }

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

double load_average() {
  std::ifstream f("/proc/loadavg");
  double load = -1;
  f >> load;
  return f ? load : -1;
}

std::string int8_kernel_description() {
  const Int8Kernel k = int8_kernel();
  std::string s = to_string(k);
  if (k == Int8Kernel::automatic) {
    // What automatic resolves to for the x86 preset's 7-bit activations.
    const int8_t w[4] = {1, -1, 1, -1};
    s += std::string(" (") + to_string(select_int8_path(127, PackedWeightsI8(w, 1, 4))) + ")";
  }
  const CpuFeatures& f = cpu_features();
  return s + " on " + (f.brand.empty() ? "an unnamed CPU" : f.brand) + " [" + cpu_feature_summary() + "]";
}

const char* verdict(bool met) { return met ? "ok" : "MISSED"; }

// ---- (a) int8 GEMM vs OpenBLAS ----

std::vector<GemmRow> int8_gemm(const SuiteOptions& options) {
  set_blas_threads(options.threads);
  std::mt19937 rng(2024);
  std::vector<GemmRow> rows;
  for (int64_t M : {1, 64, 256, 1024}) {
    for (auto KN : {std::pair<int64_t, int64_t>{784, 256}, {256, 128}, {1024, 1024}}) {
      const int64_t K = KN.first, N = KN.second;  // not a structured binding: clang 14 cannot capture one
      GemmRow row;
      row.M = M, row.K = K, row.N = N;
      if (M == 1 && K == 784) row.target = kGemvTargetM1;
      if (M == 64 && K == 784) row.target = kGemmTargetM64;
      if (M == 256 && K == 1024) row.target = kGemmTargetM256;

      std::uniform_real_distribution<float> real(-1.0f, 1.0f);
      std::vector<float> Xf(M * K), Wf(N * K), Yf(M * N);
      for (auto& v : Xf) v = real(rng);
      for (auto& v : Wf) v = real(rng);
      // The x86 preset: activations u8 in 0..127, weights i8 in -128..127,
      // per-channel multipliers, a bias, the ReLU clamp fused.
      std::vector<uint8_t> X(M * K), Y(M * N);
      std::vector<int8_t> W(N * K);
      std::vector<int32_t> bias(N);
      std::vector<FixedPointMultiplier> multipliers(N);
      for (auto& v : X) v = static_cast<uint8_t>(rng() % 128);
      for (auto& v : W) v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
      for (auto& v : bias) v = static_cast<int32_t>(rng() % 20001) - 10000;
      for (auto& m : multipliers) m = quantize_multiplier(std::uniform_real_distribution<double>(1e-4, 3e-4)(rng));
      const PackedWeightsI8 packed(W.data(), N, K);
      row.path = to_string(select_int8_path(127, packed));

      auto run_int8 = [&] {
        gemm_u8i8_requant(X.data(), M, K, 60, 127, packed, bias.data(), multipliers.data(), 30, 30, 255, Y.data(), N,
                          options.threads);
      };
      // Y (M, N) = X (M, K) W^T, W stored (N, K) as a Linear layer keeps it.
      auto run_sgemm = [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N),
                    static_cast<int>(K), 1.0f, Xf.data(), static_cast<int>(K), Wf.data(), static_cast<int>(K), 0.0f,
                    Yf.data(), static_cast<int>(N));
      };
      row.vs_sgemm = pair(options, 21, run_int8, run_sgemm);
      if (M == 1) {
        auto run_sgemv = [&] {
          cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(N), static_cast<int>(K), 1.0f, Wf.data(),
                      static_cast<int>(K), Xf.data(), 1, 0.0f, Yf.data(), 1);
        };
        row.vs_sgemv = pair(options, 21, run_int8, run_sgemv);
      }
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

void print_int8_gemm(std::FILE* out, const std::vector<GemmRow>& rows, const SuiteOptions& options) {
  std::fprintf(out, "(a) int8 GEMM (u8 0..127 x i8 -> requantized u8, ReLU fused) vs OpenBLAS f32, %d thread(s), %s\n",
               options.threads, int8_kernel_description().c_str());
  std::fprintf(out, "    speedup = t_float / t_int8, median of per-pair ratios (float = sgemm; sgemv at M = 1)\n");
  std::fprintf(out, "    %5s %10s | %9s %6s | %9s | %9s %6s %-13s | %8s %8s  %s\n", "M", "K->N", "sgemm us", "GMAC/s",
               "sgemv us", "int8 us", "GMAC/s", "path", "vs sgemm", "vs sgemv", "target");
  for (const GemmRow& r : rows) {
    const int64_t macs = r.M * r.K * r.N;
    const std::string shape = std::to_string(r.K) + "->" + std::to_string(r.N);
    char sgemv[16] = "", vs_sgemv[16] = "", target[32] = "";
    if (r.M == 1) {
      std::snprintf(sgemv, sizeof sgemv, "%.2f", r.vs_sgemv.b.median * 1e6);
      std::snprintf(vs_sgemv, sizeof vs_sgemv, "%.2fx", r.vs_sgemv.ratio);
    }
    if (r.target > 0)
      std::snprintf(target, sizeof target, ">= %.1fx %s", r.target, verdict(r.speedup() >= r.target));
    std::fprintf(out, "    %5lld %10s | %9.2f %6.1f | %9s | %9.2f %6.1f %-13s | %7.2fx %8s  %s\n",
                 static_cast<long long>(r.M), shape.c_str(), r.vs_sgemm.b.median * 1e6, gmacs(macs, r.vs_sgemm.b.median),
                 sgemv, r.vs_sgemm.a.median * 1e6, gmacs(macs, r.vs_sgemm.a.median), r.path.c_str(), r.vs_sgemm.ratio,
                 vs_sgemv, target);
  }
}

Json int8_gemm_json(const std::vector<GemmRow>& rows) {
  Json items = Json::array();
  for (const GemmRow& r : rows) {
    Json row = {{"M", r.M},
                {"K", r.K},
                {"N", r.N},
                {"path", r.path},
                {"sgemm_us", r.vs_sgemm.b.median * 1e6},
                {"int8_us", r.vs_sgemm.a.median * 1e6},
                {"speedup_vs_sgemm", r.vs_sgemm.ratio}};
    if (r.M == 1) row["sgemv_us"] = r.vs_sgemv.b.median * 1e6, row["speedup_vs_sgemv"] = r.vs_sgemv.ratio;
    if (r.target > 0) row["target"] = r.target, row["met"] = r.speedup() >= r.target;
    items.push_back(std::move(row));
  }
  return {{"kernel", int8_kernel_description()}, {"rows", std::move(items)}};
}

// ---- (b) the MLP, int8 vs float inference ----

std::vector<InferenceRow> mlp_inference(const SuiteOptions& options) {
  set_blas_threads(options.threads);
  NoGradGuard no_grad;
  manual_seed(0);
  auto float_mlp = make_mlp();
  float_mlp->eval();
  // The int8 twin, made as the pipeline's PTQ makes it: fuse Linear + ReLU,
  // observe a few batches, convert. Inputs are uniform in [0, 1) like the
  // pipeline's pixels; the timings do not depend on the values.
  manual_seed(0);
  auto int8_mlp = make_mlp();  // the same weights
  quant::fuse_linear_relu(*int8_mlp);
  int8_mlp->qconfig = quant::make_ptq_qconfig("minmax");
  quant::prepare(*int8_mlp);
  int8_mlp->eval();
  Generator g(7);
  for (int i = 0; i < 4; ++i) (*int8_mlp)(rand_uniform({64, 784}, 0.0, 1.0, g));
  quant::convert(*int8_mlp);
  quant::set_int8_threads(*int8_mlp, options.threads);
  std::string path = "?";  // the path of the first int8 layer, for its input's range
  for (const auto& named : int8_mlp->named_modules()) {
    if (auto* q = dynamic_cast<quant::QuantizedLinear*>(named.second); q != nullptr && q->input_qparams()) {
      path = to_string(select_int8_path(q->input_qparams()->quant_max, q->packed_weights()));
      break;
    }
  }

  std::vector<InferenceRow> rows;
  for (int64_t batch : {1, 64, 1000}) {
    const Tensor x = rand_uniform({batch, 784}, 0.0, 1.0, g);
    InferenceRow row;
    row.batch = batch;
    row.path = path;
    row.target = batch == 1 ? kInferenceTargetBatch1 : kInferenceTargetBatched;
    row.pair = pair(options, 31, [&] { (*int8_mlp)(x); }, [&] { (*float_mlp)(x); });
    rows.push_back(row);
  }
  return rows;
}

void print_mlp_inference(std::FILE* out, const std::vector<InferenceRow>& rows, const SuiteOptions& options) {
  std::fprintf(out, "(b) MLP 784-256-128-10 forward (float in, float out), static int8 vs float, %d thread(s)\n",
               options.threads);
  std::fprintf(out, "    %6s | %10s %10s %-13s | %8s %8s  %s\n", "batch", "float us", "int8 us", "path", "speedup",
               "(CPU)", "target");
  for (const InferenceRow& r : rows)
    std::fprintf(out, "    %6lld | %10.2f %10.2f %-13s | %7.2fx %7.2fx  >= %.1fx %s\n", static_cast<long long>(r.batch),
                 r.pair.b.median * 1e6, r.pair.a.median * 1e6, r.path.c_str(), r.pair.ratio, r.pair.cpu_ratio,
                 r.target, verdict(r.pair.ratio >= r.target));
}

Json mlp_inference_json(const std::vector<InferenceRow>& rows) {
  Json items = Json::array();
  for (const InferenceRow& r : rows) {
    items.push_back({{"batch", r.batch},
                     {"path", r.path},
                     {"float_us", r.pair.b.median * 1e6},
                     {"int8_us", r.pair.a.median * 1e6},
                     {"speedup", r.pair.ratio},
                     {"speedup_cpu", r.pair.cpu_ratio},
                     {"target", r.target},
                     {"met", r.pair.ratio >= r.target}});
  }
  return {{"model", "784-256-128-10"}, {"rows", std::move(items)}};
}

// ---- (c) the MLP's train step ----

TrainStepResult mlp_train_step(const SuiteOptions& options) {
  set_blas_threads(options.threads);
  TrainStepResult r;
  r.quant_kernels = to_string(quant::quant_kernel_level());
  const int B = static_cast<int>(r.batch);
  manual_seed(0);
  auto float_mlp = make_mlp();
  manual_seed(0);
  auto qat_mlp = make_mlp();  // the same weights, Linear + ReLU fused as the pipeline's qat does
  quant::fuse_linear_relu(*qat_mlp);
  qat_mlp->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*qat_mlp);
  const Tensor x = randn({B, 784});
  const Tensor y = randint(0, 10, {B});
  Trainer float_step(*float_mlp, {.lr = 0.01, .momentum = 0.9}, x, y);
  Trainer qat_step(*qat_mlp, {.lr = 0.01, .momentum = 0.9}, x, y);

  // The products the float step makes: x W^T forward with the bias already
  // in C; dW = dY^T X; dX = dY W; no dX for fc1, whose input needs no gradient.
  std::vector<Gemm> gemms = {
      {false, true, B, 256, 784, 1.f},  {false, true, B, 128, 256, 1.f}, {false, true, B, 10, 128, 1.f},
      {true, false, 10, 128, B, 1.f},   {false, false, B, 128, 10, 0.f}, {true, false, 128, 256, B, 1.f},
      {false, false, B, 256, 128, 0.f}, {true, false, 256, 784, B, 1.f},
  };
  auto gemms_only = [&] {
    for (auto& g : gemms) g.run();
  };
  // One step per sample: a sample (~0.3 ms) then fits in a scheduler time
  // slice, so on a busy machine most samples run undisturbed.
  const int repeats = repeats_for(options, 101);
  r.step_vs_gemms = measure_pair(gemms_only, [&] { float_step.step(); }, repeats, 1, 1, 10);
  r.qat_vs_float = measure_pair([&] { float_step.step(); }, [&] { qat_step.step(); }, repeats, 1, 1, 10);
  r.forward_nograd = measure(
      [&] {
        NoGradGuard no_grad;
        cross_entropy((*float_mlp)(x), y);
      },
      {.repeats = repeats, .inner = 1});
  r.optimizer = measure(
      [&] {
        float_step.optimizer.zero_grad();
        float_step.optimizer.step();
      },
      {.repeats = repeats, .inner = 5});
  return r;
}

void print_mlp_train_step(std::FILE* out, const TrainStepResult& r, const SuiteOptions& options) {
  const double step_gemms = r.step_vs_gemms.ratio, qat_float = r.qat_vs_float.ratio;
  std::fprintf(out, "(c) MLP 784-256-128-10 train step, batch %lld, SGD momentum 0.9, %d thread(s), QAT loops %s"
               "   wall [thread CPU]\n", static_cast<long long>(r.batch), options.threads, r.quant_kernels.c_str());
  std::fprintf(out, "    the step's 8 GEMMs via cblas_sgemm    %8.1f us [%8.1f]\n", r.step_vs_gemms.a.median * 1e6,
               r.step_vs_gemms.a.cpu_median * 1e6);
  std::fprintf(out, "    float step (fwd + loss + bwd + SGD)   %8.1f us [%8.1f]\n", r.step_vs_gemms.b.median * 1e6,
               r.step_vs_gemms.b.cpu_median * 1e6);
  std::fprintf(out, "    QAT step (x86 preset)                 %8.1f us [%8.1f]\n", r.qat_vs_float.b.median * 1e6,
               r.qat_vs_float.b.cpu_median * 1e6);
  std::fprintf(out, "    float step / GEMMs                    %8.3f    [%8.3f]  target <= %.2f %s\n", step_gemms,
               r.step_vs_gemms.cpu_ratio, kStepOverGemmsTarget, verdict(step_gemms <= kStepOverGemmsTarget));
  std::fprintf(out, "    QAT step / float step                 %8.3f    [%8.3f]  target <= %.2f %s\n", qat_float,
               r.qat_vs_float.cpu_ratio, kQatOverFloatTarget, verdict(qat_float <= kQatOverFloatTarget));
  std::fprintf(out, "    forward + loss alone (no graph)       %8.1f us\n", r.forward_nograd.median * 1e6);
  std::fprintf(out, "    zero_grad + SGD step alone            %8.1f us\n", r.optimizer.median * 1e6);
}

Json mlp_train_step_json(const TrainStepResult& r) {
  return {{"model", "784-256-128-10"},
          {"batch", r.batch},
          {"quant_kernels", r.quant_kernels},
          {"gemms", timing_json(r.step_vs_gemms.a)},
          {"float_step", timing_json(r.step_vs_gemms.b)},
          {"qat_step", timing_json(r.qat_vs_float.b)},
          {"float_over_gemms", r.step_vs_gemms.ratio},
          {"float_over_gemms_cpu", r.step_vs_gemms.cpu_ratio},
          {"qat_over_float", r.qat_vs_float.ratio},
          {"qat_over_float_cpu", r.qat_vs_float.cpu_ratio},
          {"target_float_over_gemms", kStepOverGemmsTarget},
          {"target_qat_over_float", kQatOverFloatTarget},
          {"forward_nograd", timing_json(r.forward_nograd)},
          {"zero_grad_and_sgd", timing_json(r.optimizer)}};
}

// ---- (d) SimpleNN at batch 1 ----

SimpleNNResult simple_nn_step(const SuiteOptions& options) {
  set_blas_threads(options.threads);
  manual_seed(0);
  auto float_net = make_simple_nn();
  manual_seed(0);
  auto qat_net = make_simple_nn();  // the same weights
  qat_net->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*qat_net);
  const Tensor x = randn({1, 10});
  const Tensor y = from_vector_i64({1}, {1});
  Trainer float_step(*float_net, {.lr = 0.01}, x, y);
  Trainer qat_step(*qat_net, {.lr = 0.01}, x, y);
  // Samples of about 0.2 ms: long enough for the clocks, short enough to fall
  // between other processes' time slices.
  auto f = [&] { float_step.step(); };
  auto q = [&] { qat_step.step(); };
  SimpleNNResult r;
  r.qat_vs_float = measure_pair(f, q, repeats_for(options, 401), calibrate_inner(f, 2e-4), calibrate_inner(q, 2e-4), 10);
  return r;
}

void print_simple_nn_step(std::FILE* out, const SimpleNNResult& r) {
  const double f = r.qat_vs_float.a.median * 1e6, q = r.qat_vs_float.b.median * 1e6;
  std::fprintf(out, "(d) SimpleNN 10-5-2 train step, batch 1, SGD                 wall [thread CPU]\n");
  std::fprintf(out, "    float step                            %8.2f us [%8.2f]  target <= %.1f us %s\n", f,
               r.qat_vs_float.a.cpu_median * 1e6, kSimpleNNTargetMicroseconds, verdict(f <= kSimpleNNTargetMicroseconds));
  std::fprintf(out, "    QAT step                              %8.2f us [%8.2f]  target <= %.1f us %s\n", q,
               r.qat_vs_float.b.cpu_median * 1e6, kSimpleNNTargetMicroseconds, verdict(q <= kSimpleNNTargetMicroseconds));
}

Json simple_nn_step_json(const SimpleNNResult& r) {
  return {{"model", "10-5-2"},
          {"batch", 1},
          {"float_step", timing_json(r.qat_vs_float.a)},
          {"qat_step", timing_json(r.qat_vs_float.b)},
          {"qat_over_float", r.qat_vs_float.ratio},
          {"target_us", kSimpleNNTargetMicroseconds}};
}

}  // namespace tq::bench
