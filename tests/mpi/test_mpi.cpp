// Data parallelism under MPI (docs/distributed.md), run by ctest as
// `mpirun -np 2 tinyqat_mpi_tests [tag]`: every rank runs every test case;
// each computes the single-process reference itself (the whole global batch
// inside a dist::WorldScope of one process) and compares. Small shapes only.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "dist/mpi.h"
#include "tinyqat.h"
#include "nn/data_parallel.h"
#include "quant/histogram_observer.h"
#include "autograd/fused_conv_ops.h"

using namespace tq;

namespace {

dist::Communicator& comm() { return dist::world(); }

// Runs `f` as a single process (the reference), whatever the world is.
template <class F>
auto alone(F&& f) {
  dist::WorldScope scope(std::make_shared<dist::SingleProcess>());
  return f();
}

// Is `v` the same on every rank (bit for bit)?
bool same_everywhere(std::vector<float> v) {
  std::vector<float> lo = v, hi = v;
  comm().allreduce(lo.data(), static_cast<int64_t>(lo.size()), dist::ReduceOp::min);
  comm().allreduce(hi.data(), static_cast<int64_t>(hi.size()), dist::ReduceOp::max);
  return lo == v && hi == v;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
  return d;
}

// Rank r's part of a global batch of n rows (the loader's even cut).
std::pair<int64_t, int64_t> shard(int64_t n) {
  const int64_t R = comm().size(), r = comm().rank();
  return {n * r / R, n * (r + 1) / R};
}

// Synthetic u8 images (n, h, w) and labels, the same on every rank.
io::Dataset synthetic(int64_t n, int64_t h, int64_t w, uint64_t seed) {
  Generator g(seed);
  Tensor labels = randint(0, 4, {n}, g);
  Tensor images = empty({n, h, w}, DType::u8);
  uint8_t* p = images.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < h * w; ++k) {
      // A class-dependent stripe plus noise: learnable in a few steps.
      const int64_t label = labels.data<int64_t>()[i];
      const double v = (k % w == label * (w / 4) ? 200 : 40) + 30 * g.normal();
      p[i * h * w + k] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
    }
  return {images, labels};
}

std::shared_ptr<nn::Sequential> tiny_mlp() { return nn::make_mlp({64, 16, 4}); }

std::shared_ptr<nn::Sequential> tiny_cnn() {
  auto m = std::make_shared<nn::Sequential>();
  m->push_back("conv1", nn::Conv2d(1, 4, 3, 1, 1));
  m->push_back("bn1", nn::BatchNorm2d(4));
  m->push_back("relu1", nn::ReLU());
  m->push_back("pool1", nn::MaxPool2d(2));
  m->push_back("flatten", nn::Flatten(1));
  m->push_back("fc1", nn::Linear(4 * 4 * 4, 4));
  return m;
}

// `steps` steps of SGD over `data`, data parallel over the current world:
// per-rank batch `batch` (the global batch is size() * batch).
void train_steps(nn::Module& model, const io::Dataset& data, int64_t batch, int steps, bool images) {
  io::DataLoader loader(data, {.batch_size = batch, .seed = 5, .as_images = images, .rank = comm().rank(),
                               .world_size = comm().size()});
  nn::SGD opt(model.parameters(), {.lr = 0.1, .momentum = 0.9});
  nn::broadcast_state(model);
  nn::GradientReducer reducer(model.parameters(), 256);  // small buckets: several per model
  model.train();
  io::Batch b;
  for (int s = 0; s < steps; ++s) {
    if (!loader.next(b)) REQUIRE(loader.next(b));
    opt.zero_grad();
    cross_entropy(model(b.images), b.labels).backward();
    reducer.reduce(static_cast<double>(b.size()) / static_cast<double>(b.global_size));
    opt.step();
  }
}

std::vector<float> flat_state(const nn::Module& m) {
  std::vector<float> all;
  for (auto& [name, t] : m.named_parameters())
    for (float v : to_vector(t)) all.push_back(v);
  for (auto& [name, t] : m.named_buffers())
    if (t.dtype() == DType::f32)
      for (float v : to_vector(t)) all.push_back(v);
  return all;
}

}  // namespace

TEST_CASE("mpi: collectives sum, min, max, broadcast over the ranks", "[mpi][collectives]") {
  const int R = comm().size(), r = comm().rank();
  REQUIRE(R >= 2);
  float f[2] = {static_cast<float>(r + 1), static_cast<float>(-r)};
  comm().allreduce_sum(f, 2);
  CHECK(f[0] == static_cast<float>(R * (R + 1) / 2));
  double d[1] = {static_cast<double>(r)};
  comm().allreduce(d, 1, dist::ReduceOp::max);
  CHECK(d[0] == R - 1);
  int64_t i[1] = {r + 10};
  comm().allreduce(i, 1, dist::ReduceOp::min);
  CHECK(i[0] == 10);
  int64_t b[3] = {r, r, r};
  comm().broadcast(b, sizeof b, R - 1);
  CHECK((b[0] == R - 1 && b[2] == R - 1));
  comm().barrier();
}

TEST_CASE("mpi: the sharded loader gives each rank its slice of one permutation", "[mpi][sampler]") {
  const io::Dataset d = synthetic(21, 2, 2, 1);  // 21 = 2 global batches of 8 and a last one of 5
  io::DataLoader mine(d, {.batch_size = 4, .seed = 9, .rank = comm().rank(), .world_size = comm().size()});
  const int R = comm().size();  // (inside alone(), comm() is the single process)
  io::DataLoader whole = alone([&] { return io::DataLoader(d, {.batch_size = 4 * R, .seed = 9}); });
  CHECK(mine.num_batches() == whole.num_batches());
  for (int epoch = 0; epoch < 2; ++epoch) {
    io::Batch a, g;
    while (whole.next(g)) {
      REQUIRE(mine.next(a));
      CHECK(a.global_size == g.size());
      // The global batch's rows, in rank order, are the single process's batch.
      const auto [lo, hi] = shard(g.size());
      CHECK(a.size() == hi - lo);
      const std::vector<float> all = to_vector(g.images);
      const int64_t row = d.images.numel() / d.size();
      const std::vector<float> part(all.begin() + lo * row, all.begin() + hi * row);
      CHECK(to_vector(a.images) == part);
    }
    CHECK_FALSE(mine.next(a));
  }
  // A state from another world size is refused, naming both sizes.
  io::LoaderState s = mine.state();
  s.world_size = comm().size() + 1;
  CHECK_THROWS_WITH(mine.set_state(s), Catch::Contains("rank(s)") && Catch::Contains("mpirun -np"));
}

TEST_CASE("mpi: observers all-reduce their batch range and histogram", "[mpi][observers]") {
  const int64_t n = 6 * comm().size();
  manual_seed(3);
  const Tensor global = randn({n, 5}) * 3.f;  // the same on every rank
  const auto [lo, hi] = shard(n);
  const Tensor mine = kernels::contiguous(tq::slice(global, 0, lo, hi));
  const Tensor global2 = global * 1.5f + 0.5f;
  const Tensor mine2 = kernels::contiguous(tq::slice(global2, 0, lo, hi));

  auto check = [&](quant::ObserverBase& dp, quant::ObserverBase& ref) {
    dp.observe(mine);
    dp.observe(mine2);
    alone([&] {
      ref.observe(global);
      ref.observe(global2);
      return 0;
    });
    const QParams a = dp.calculate_qparams(), b = ref.calculate_qparams();
    CHECK(same_everywhere(a.scale));
    CHECK(a.scale == b.scale);  // the global range is the single process's, bit for bit
    CHECK(a.zero_point == b.zero_point);
  };
  SECTION("min/max") {
    quant::MinMaxObserver a, b;
    check(a, b);
  }
  SECTION("moving average") {
    quant::MovingAverageMinMaxObserver a, b;
    check(a, b);
  }
  SECTION("per channel") {
    quant::PerChannelMinMaxObserver a(quant::weight_spec(8, QScheme::per_channel_symmetric, 1)),
        b(quant::weight_spec(8, QScheme::per_channel_symmetric, 1));
    check(a, b);
  }
  SECTION("histogram") {
    quant::HistogramObserver a(quant::activation_spec(7), 64, 16), b(quant::activation_spec(7), 64, 16);
    check(a, b);
    CHECK(a.histogram() == b.histogram());
    CHECK(a.total_count() == static_cast<double>(2 * global.numel()));
  }
}

TEST_CASE("mpi: BatchNorm uses the global batch's statistics, forward and backward", "[mpi][batchnorm]") {
  const int64_t C = 3, n = 2 * comm().size();
  manual_seed(4);
  const Tensor x_all = randn({n, C, 3, 3}) * 2.f + 1.f, w_all = randn({n, C, 3, 3});
  const Tensor gamma0 = randn({C}), beta0 = randn({C});
  const auto rows = shard(n);  // a lambda may not capture a structured binding before clang 16
  auto part = [&](const Tensor& t) { return kernels::contiguous(tq::slice(t, 0, rows.first, rows.second)); };

  // Distributed: this rank's rows; loss = sum over every rank of sum(y * w).
  Tensor x = part(x_all).requires_grad_(), gamma = kernels::clone(gamma0).requires_grad_(), beta = kernels::clone(beta0).requires_grad_();
  Tensor rm = zeros({C}), rv = ones({C});
  Tensor y = batch_norm(x, rm, rv, gamma, beta, true);
  tq::sum(y * part(w_all)).backward();
  std::vector<float> dgamma = to_vector(gamma.grad()), dbeta = to_vector(beta.grad());
  comm().allreduce_sum(dgamma.data(), C);  // the parameter gradients the trainer averages (here: sums)
  comm().allreduce_sum(dbeta.data(), C);

  // The single process over the whole batch.
  Tensor xr = kernels::clone(x_all).requires_grad_(), gr = kernels::clone(gamma0).requires_grad_(), br = kernels::clone(beta0).requires_grad_();
  Tensor rmr = zeros({C}), rvr = ones({C});
  const Tensor yr = alone([&] {
    Tensor out = batch_norm(xr, rmr, rvr, gr, br, true);
    tq::sum(out * w_all).backward();
    return out;
  });
  constexpr double kTol = 2e-5;  // float sums in another order
  CHECK(max_abs_diff(to_vector(y), to_vector(part(yr.detach()))) < kTol);
  CHECK(max_abs_diff(to_vector(x.grad()), to_vector(part(xr.grad()))) < kTol);
  CHECK(max_abs_diff(dgamma, to_vector(gr.grad())) < 1e-4);
  CHECK(max_abs_diff(dbeta, to_vector(br.grad())) < 1e-4);
  CHECK(max_abs_diff(to_vector(rm), to_vector(rmr)) < kTol);
  CHECK(max_abs_diff(to_vector(rv), to_vector(rvr)) < kTol);  // unbiased with the global M
  CHECK(same_everywhere(to_vector(rv)));

  // A gradient check across the ranks: central differences of the global
  // loss in a few of rank 0's inputs against the all-reduced backward.
  auto global_loss = [&](const Tensor& xin) {
    NoGradGuard ng;
    Tensor m = zeros({C}), v = ones({C});
    double l = tq::sum(batch_norm(xin, m, v, gamma0, beta0, true) * part(w_all)).item();
    comm().allreduce_sum(&l, 1);
    return l;
  };
  const std::vector<float> dx = to_vector(x.grad());
  for (int64_t k : {0, 7, 20}) {
    constexpr float kEps = 1e-2f;
    std::vector<double> numeric(1);
    Tensor xp = kernels::clone(part(x_all)), xm = kernels::clone(part(x_all));
    if (comm().rank() == 0) xp.data<float>()[k] += kEps, xm.data<float>()[k] -= kEps;
    const double g = (global_loss(xp) - global_loss(xm)) / (2 * kEps);
    if (comm().rank() == 0) CHECK(std::fabs(g - dx[static_cast<size_t>(k)]) < 2e-2 * std::max(1.0, std::fabs(g)));
  }
}

TEST_CASE("mpi: the fused conv + BatchNorm + ReLU + max-pool op takes the global batch's statistics", "[mpi][fused]") {
  // The op on 2 ranks, each with its shard, against one process with the
  // whole batch: forward, the input and weight gradients, the BatchNorm
  // parameters' and the convolution bias's gradients (summed over the ranks,
  // as the gradient all-reduce does), and the running statistics.
  const int64_t C = 3, OC = 4, n = 2 * comm().size();
  manual_seed(21);
  const Tensor x_all = randn({n, C, 6, 6}) * 2.f + 0.5f, w_all = randn({n, OC, 3, 3});
  const Tensor weight0 = randn({OC, C, 3, 3}) * 0.3f, bias0 = randn({OC}), gamma0 = rand_uniform({OC}, 0.5, 1.5),
               beta0 = randn({OC});
  const auto rows = shard(n);  // a lambda may not capture a structured binding before clang 16
  auto part = [&](const Tensor& t) { return kernels::contiguous(tq::slice(t, 0, rows.first, rows.second)); };
  const Conv2dOptions opt{.padding = {1, 1}};
  struct Run {
    Tensor x, weight, bias, gamma, beta, rm = zeros({4}), rv = ones({4}), y;
  };
  auto run = [&](const Tensor& x_in, const Tensor& w_out) {
    Run r{kernels::clone(x_in).requires_grad_(), kernels::clone(weight0).requires_grad_(),
          kernels::clone(bias0).requires_grad_(), kernels::clone(gamma0).requires_grad_(),
          kernels::clone(beta0).requires_grad_(), zeros({4}), ones({4}), Tensor()};
    r.y = conv2d_batch_norm_relu_max_pool2x2(r.x, r.weight, r.bias, opt, r.rm, r.rv, r.gamma, r.beta);
    REQUIRE(std::string(r.y.grad_fn()->name()) == "BatchNormReluMaxPool2dBackward");
    tq::sum(r.y * w_out).backward();
    return r;
  };
  Run dp = run(part(x_all), part(w_all));
  const Run ref = alone([&] { return run(x_all, w_all); });
  auto summed = [&](const Tensor& g) {
    std::vector<float> v = to_vector(g);
    comm().allreduce_sum(v.data(), static_cast<int64_t>(v.size()));
    return v;
  };
  constexpr double kTol = 5e-5;  // float sums in another order
  CHECK(max_abs_diff(to_vector(dp.y), to_vector(part(ref.y.detach()))) < kTol);
  CHECK(max_abs_diff(to_vector(dp.x.grad()), to_vector(part(ref.x.grad()))) < kTol);
  CHECK(max_abs_diff(summed(dp.weight.grad()), to_vector(ref.weight.grad())) < 1e-4);
  CHECK(max_abs_diff(summed(dp.bias.grad()), to_vector(ref.bias.grad())) < 1e-4);
  CHECK(max_abs_diff(summed(dp.gamma.grad()), to_vector(ref.gamma.grad())) < 1e-4);
  CHECK(max_abs_diff(summed(dp.beta.grad()), to_vector(ref.beta.grad())) < 1e-4);
  CHECK(max_abs_diff(to_vector(dp.rm), to_vector(ref.rm)) < kTol);
  CHECK(max_abs_diff(to_vector(dp.rv), to_vector(ref.rv)) < kTol);  // unbiased with the global M
  CHECK(same_everywhere(to_vector(dp.rv)));
  // The shard's own statistics would give another output: the test can tell.
  const Run own = alone([&] { return run(part(x_all), part(w_all)); });
  CHECK(max_abs_diff(to_vector(own.y), to_vector(dp.y)) > 1e-3);

  // nn::Sequential takes the fused op on every rank in training.
  manual_seed(22);
  auto m = tiny_cnn();
  m->train();
  const Tensor out = (*m)(part(randn({n, 1, 8, 8})));
  const auto* producer = out.grad_fn().get();  // fc1's; its input is the block's output (via flatten)
  REQUIRE(producer != nullptr);
  bool fused = false;
  std::vector<const Node*> todo{producer};
  while (!todo.empty() && !fused) {
    const Node* node = todo.back();
    todo.pop_back();
    fused = std::string(node->name()) == "BatchNormReluMaxPool2dBackward";
    for (int i = 0; i < node->num_inputs; ++i)
      if (node->inputs[i].defined() && node->inputs[i].grad_fn()) todo.push_back(node->inputs[i].grad_fn().get());
  }
  CHECK(fused);
}

TEST_CASE("mpi: 2 ranks x batch B train the model one process trains with batch 2B", "[mpi][equivalence]") {
  // Parameters agree within kTol after 4 SGD steps (momentum 0.9, lr 0.1):
  // float sums are taken in another order, nothing else differs.
  constexpr double kTol = 1e-4;
  const int R = comm().size();
  for (const bool cnn : {false, true}) {
    INFO((cnn ? "cnn" : "mlp"));
    const io::Dataset data = cnn ? synthetic(64, 8, 8, 2) : synthetic(64, 8, 8, 3);
    manual_seed(11);
    auto dp = cnn ? tiny_cnn() : tiny_mlp();
    manual_seed(11);
    auto ref = cnn ? tiny_cnn() : tiny_mlp();
    train_steps(*dp, data, 6, 4, cnn);  // 4 global batches of 12 (2 ranks)
    alone([&] {
      train_steps(*ref, data, 6 * R, 4, cnn);
      return 0;
    });
    CHECK(nn::replicas_agree(*dp));
    const double diff = max_abs_diff(flat_state(*dp), flat_state(*ref));
    INFO("max |dp - single| = " << diff);
    CHECK(diff < kTol);
    // ... and the run moved the parameters much further than that.
    manual_seed(11);
    auto init = cnn ? tiny_cnn() : tiny_mlp();
    CHECK(max_abs_diff(flat_state(*init), flat_state(*ref)) > 100 * kTol);
  }
}

TEST_CASE("mpi: QAT keeps observers in sync and converts to the same int8 model on every rank", "[mpi][qat]") {
  const io::Dataset data = synthetic(64, 8, 8, 6);
  auto run = [&](int64_t batch) {
    manual_seed(12);
    auto m = tiny_cnn();
    quant::quantize_qat(
        *m, [&](nn::Module& model) {
          train_steps(model, data, batch, 4, true);
          return true;
        },
        {.qconfig = quant::get_default_qat_qconfig("x86")});
    return m;
  };
  const int R = comm().size();
  auto dp = run(6);
  auto ref = alone([&] { return run(6 * R); });
  // The int8 model: the same bytes on every rank.
  CHECK(nn::replicas_agree(*dp));
  const uint64_t d = nn::state_digest(*dp);
  std::vector<float> halves = {static_cast<float>(d & 0xffff), static_cast<float>((d >> 16) & 0xffff),
                               static_cast<float>((d >> 32) & 0xffff), static_cast<float>(d >> 48)};
  CHECK(same_everywhere(halves));
  // Against one process with the global batch: the qparams (the scales and
  // zero points of every int8 layer) agree to float rounding.
  for (auto& [name, t] : dp->named_buffers()) {
    if (name.find("scale") == std::string::npos && name.find("zero_point") == std::string::npos) continue;
    const Tensor other = ref->buffer(name);
    INFO(name);
    REQUIRE(other.defined());
    const std::vector<float> a = to_vector(kernels::to_float(t)), b = to_vector(kernels::to_float(other));
    for (size_t i = 0; i < a.size(); ++i) CHECK(std::fabs(a[i] - b[i]) <= 1e-4 * std::fabs(b[i]) + 1e-7);
  }
}

// Not run by default: the dead-rank test runs it with a short timeout and
// expects the job to end with the timeout's message, not to hang.
TEST_CASE("mpi: a rank that stops calling collectives ends the job", "[.dead]") {
  if (comm().rank() == 1) {
    const char* how = std::getenv("TINYQAT_TEST_DEAD");
    if (how && std::string(how) == "exit") std::_Exit(0);  // dies without MPI_Finalize
    std::this_thread::sleep_for(std::chrono::seconds(120));  // hangs
  }
  float v = 1;
  comm().allreduce_sum(&v, 1);
  FAIL("the all-reduce returned although rank 1 never joined it");
}

int main(int argc, char** argv) {
  // Started by mpirun (or alone: Open MPI's singleton, one rank).
  dist::MpiSession mpi(argc, argv, /*force=*/true);
  if (comm().size() < 2) {
    std::fprintf(stderr, "tinyqat_mpi_tests: run under mpirun -np 2 (or more)\n");
    return 2;
  }
  Catch::Session session;
  if (comm().rank() != 0) session.configData().reporterName = "compact";  // rank 0's report is the readable one
  const int failed = session.run(argc, argv);
  int64_t worst = failed;
  comm().allreduce(&worst, 1, dist::ReduceOp::max);
  return worst > 0 ? 1 : 0;
}
