// bench_data_parallel — where the time of a data-parallel training epoch goes
// (docs/distributed.md §9). Run it alone (the single process) and under
// `mpirun -np 2` (each rank a shard); both print, per rank and per step, the
// wall time and the thread's CPU time of each part of the step:
//
//   load      the loader's next batch (the u8 -> f32 conversion of the shard)
//   forward   model + loss (BatchNorm's statistics all-reduce is inside:
//             `comm` shows it separately)
//   loss      the all-reduce of the step's loss
//   backward  (BatchNorm's gradient sums all-reduce inside)
//   grads     the gradient buckets: copy in, all-reduce (`comm`), copy out
//   step      the optimizer
//
// then the start-up (MPI, the data set, broadcasting the model), the sharded
// evaluation, the CPU time of the process's other threads, and the cost of
// the all-reduces alone, timed back to back after a barrier. On a loaded
// machine the CPU times and their ratios are the steadier figures.
//
//   bench_data_parallel [--arch mlp|cnn] [--batch-size B] [--limit-train N]
//                       [--limit-test N] [--steps N] [--data DIR] [--repeat N]
//   (--steps: stop the epoch after N steps; --repeat: all-reduces timed alone)
//   OPENBLAS_NUM_THREADS=1 mpirun -np 2 bench_data_parallel --arch cnn --batch-size 32 --limit-train 6000
#include <cblas.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dist/mpi.h"
#include "models/cnn.h"
#include "nn/data_parallel.h"
#include "quant/evaluate.h"
#include "tinyqat.h"

using namespace tq;

namespace {

double wall() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double clock_of(clockid_t id) {
  timespec t{};
  clock_gettime(id, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}
double thread_cpu() { return clock_of(CLOCK_THREAD_CPUTIME_ID); }
double process_cpu() { return clock_of(CLOCK_PROCESS_CPUTIME_ID); }

// kOther: outside the steps (start-up, evaluation); not printed per step.
enum Phase { kLoad, kForward, kLoss, kBackward, kGrads, kStep, kOther, kPhases };
const char* const kPhaseNames[kPhases] = {"load", "forward", "loss", "backward", "grads", "step", "other"};
Phase g_phase = kOther;

// The world's communicator, timed: wall seconds and calls per phase.
class TimedCommunicator final : public dist::Communicator {
 public:
  explicit TimedCommunicator(std::shared_ptr<dist::Communicator> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void allreduce(float* d, int64_t n, dist::ReduceOp op) override { timed([&] { inner_->allreduce(d, n, op); }); }
  void allreduce(double* d, int64_t n, dist::ReduceOp op) override { timed([&] { inner_->allreduce(d, n, op); }); }
  void allreduce(int64_t* d, int64_t n, dist::ReduceOp op) override { timed([&] { inner_->allreduce(d, n, op); }); }
  void broadcast(void* d, int64_t bytes, int root) override { timed([&] { inner_->broadcast(d, bytes, root); }); }
  void barrier() override { timed([&] { inner_->barrier(); }); }
  std::string describe() const override { return inner_->describe(); }
  double seconds[kPhases] = {}, cpu[kPhases] = {};
  int64_t calls[kPhases] = {};

 private:
  template <class F>
  void timed(F&& f) {
    const double t0 = wall(), c0 = thread_cpu();
    f();
    seconds[g_phase] += wall() - t0;
    cpu[g_phase] += thread_cpu() - c0;
    ++calls[g_phase];
  }
  std::shared_ptr<dist::Communicator> inner_;
};

struct Options {
  std::string arch = "mlp", data = io::kFashionMnistDir;
  int64_t batch = 0, limit_train = 0, limit_test = 0, steps = 0;
  int repeat = 200;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_data_parallel: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--arch") o.arch = value();
    else if (a == "--batch-size") o.batch = std::stoll(value());
    else if (a == "--limit-train") o.limit_train = std::stoll(value());
    else if (a == "--limit-test") o.limit_test = std::stoll(value());
    else if (a == "--data") o.data = value();
    else if (a == "--repeat") o.repeat = std::stoi(value());
    else if (a == "--steps") o.steps = std::stoll(value());
    else {
      std::fprintf(stderr,
                   "usage: bench_data_parallel [--arch mlp|cnn] [--batch-size B] [--limit-train N] [--limit-test N] "
                   "[--steps N] [--data DIR] [--repeat N]\n");
      std::exit(2);
    }
  }
  if (o.arch != "mlp" && o.arch != "cnn") {
    std::fprintf(stderr, "bench_data_parallel: --arch must be mlp or cnn, not '%s'\n", o.arch.c_str());
    std::exit(2);
  }
  return o;
}

// Seconds per call of an all-reduce of n floats, both ranks starting together (median of `repeat`).
double allreduce_cost(dist::Communicator& comm, int64_t n, int repeat) {
  std::vector<float> v(static_cast<size_t>(std::max<int64_t>(n, 1)), 1.f);
  std::vector<double> t;
  comm.barrier();
  for (int i = 0; i < repeat; ++i) {
    const double t0 = wall();
    comm.allreduce_sum(v.data(), n);
    t.push_back(wall() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const double t_start = wall();
  const Options o = parse(argc, argv);
  dist::MpiSession mpi(argc, argv);
  const double t_mpi = wall();
  auto timed = std::make_shared<TimedCommunicator>(dist::set_world(nullptr));
  dist::WorldScope scope(timed);
  dist::Communicator& comm = dist::world();
  const int R = comm.size(), r = comm.rank();
  if (std::getenv("OPENBLAS_NUM_THREADS") == nullptr) openblas_set_num_threads(1);
  const int64_t batch = o.batch > 0 ? o.batch : 64 / R;

  io::Dataset train = io::load_fashion_mnist(o.data, io::Split::train);
  io::Dataset test = io::load_fashion_mnist(o.data, io::Split::test);
  if (o.limit_train > 0 && o.limit_train < train.size()) train = train.slice(0, o.limit_train);
  if (o.limit_test > 0 && o.limit_test < test.size()) test = test.slice(0, o.limit_test);
  const double t_data = wall();

  const bool cnn = o.arch == "cnn";
  manual_seed(0);
  std::shared_ptr<nn::Module> model = cnn ? std::shared_ptr<nn::Module>(models::cnn(10))
                                          : std::shared_ptr<nn::Module>(nn::make_mlp({784, 256, 128, 10}));
  nn::broadcast_state(*model, comm);
  const double t_model = wall();

  io::DataLoader loader(train, {.batch_size = batch, .seed = 0, .as_images = cnn, .rank = r, .world_size = R});
  nn::SGD opt(model->parameters(), {.lr = 0.01, .momentum = 0.9});
  nn::GradientReducer reducer(R > 1 ? opt.params() : std::vector<Tensor>{});
  double w[kPhases] = {}, c[kPhases] = {};
  // Each step's wall time per phase and in all: on a loaded machine the
  // low percentiles are the steps nothing else interrupted.
  std::vector<double> per_step[kPhases + 1];
  double this_step[kPhases] = {};
  auto enter = [&](Phase p, double& w0, double& c0) {
    const double w1 = wall(), c1 = thread_cpu();
    w[g_phase] += w1 - w0;
    c[g_phase] += c1 - c0;
    this_step[g_phase] += w1 - w0;
    w0 = w1, c0 = c1;
    g_phase = p;
  };
  auto end_step = [&] {
    double total = 0;
    for (int p = 0; p < kOther; ++p) per_step[p].push_back(this_step[p]), total += this_step[p], this_step[p] = 0;
    per_step[kPhases].push_back(total);
  };
  model->train();
  io::Batch b;
  int64_t steps = 0;
  double loss_sum = 0;
  const double e_wall = wall(), e_cpu = thread_cpu(), e_proc = process_cpu();
  double w0 = e_wall, c0 = e_cpu;
  g_phase = kLoad;  // (what came before is kOther's)
  while ((o.steps == 0 || steps < o.steps) && loader.next(b)) {
    enter(kForward, w0, c0);
    opt.zero_grad();
    Tensor loss = cross_entropy((*model)(b.images), b.labels);
    double l = loss.item();
    enter(kLoss, w0, c0);
    const double share = static_cast<double>(b.size()) / static_cast<double>(b.global_size);
    if (R > 1) {
      l *= share;
      comm.allreduce_sum(&l, 1);
    }
    enter(kBackward, w0, c0);
    loss.backward();
    enter(kGrads, w0, c0);
    if (R > 1) reducer.reduce(share, comm);
    enter(kStep, w0, c0);
    opt.step();
    enter(kLoad, w0, c0);
    end_step();  // (a step's load phase is counted with the step after it)
    loss_sum += l;
    ++steps;
  }
  enter(kOther, w0, c0);
  const double epoch_wall = wall() - e_wall, epoch_cpu = thread_cpu() - e_cpu, epoch_proc = process_cpu() - e_proc;

  // The per-epoch evaluation, sharded as the command line's is.
  const double v0 = wall();
  model->eval();
  const int64_t n = test.size(), lo = n * r / R, hi = n * (r + 1) / R;
  io::DataLoader tl(test.slice(lo, hi), {.batch_size = cnn ? 200 : 1000, .shuffle = false, .as_images = cnn});
  io::Batch tb;
  const quant::Evaluation ev = quant::evaluate(*model, [&](Tensor& in, Tensor& lab) {
    if (!tl.next(tb)) return false;
    in = tb.images;
    lab = tb.labels;
    return true;
  });
  int64_t correct = std::llround(ev.accuracy * static_cast<double>(hi - lo) / 100.0);
  comm.allreduce_sum(&correct, 1);
  const double eval_wall = wall() - v0;

  std::vector<int64_t> bucket_floats;
  if (R > 1) {
    // The same buckets as the reducer's (1 MiB).
    int64_t in_bucket = 0;
    for (const Tensor& p : opt.params()) {
      if (in_bucket > 0 && (in_bucket + p.numel()) * 4 > (int64_t{1} << 20)) bucket_floats.push_back(in_bucket), in_bucket = 0;
      in_bucket += p.numel();
    }
    bucket_floats.push_back(in_bucket);
  }

  // Gather every rank's figures on rank 0: K values per rank.
  std::vector<double> mine;
  auto percentile = [](std::vector<double> v, double q) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
  };
  for (int p = 0; p < kPhases; ++p)
    mine.insert(mine.end(), {w[p], c[p], timed->seconds[p], timed->cpu[p], static_cast<double>(timed->calls[p]),
                             percentile(per_step[p], 0.1), percentile(per_step[p], 0.5)});
  mine.insert(mine.end(), {percentile(per_step[kPhases], 0.1), percentile(per_step[kPhases], 0.5)});
  mine.insert(mine.end(), {epoch_wall, epoch_cpu, epoch_proc, eval_wall, t_mpi - t_start, t_data - t_mpi, t_model - t_data,
                           reducer.allreduce_seconds()});
  const auto K = static_cast<int64_t>(mine.size());
  std::vector<double> all(static_cast<size_t>(K * R), 0.0);
  std::copy(mine.begin(), mine.end(), all.begin() + r * K);
  comm.allreduce_sum(all.data(), K * R);

  std::vector<double> costs;
  if (R > 1) {
    costs.push_back(allreduce_cost(comm, 1, o.repeat));
    for (int64_t f : bucket_floats) costs.push_back(allreduce_cost(comm, f, std::max(10, o.repeat / 4)));
  }

  if (r == 0) {
    std::printf("%s, %d rank(s) x batch %lld (global %lld), %lld training images, %lld steps, loss %.4f, test accuracy "
                "%.2f%% (%lld images)\n",
                o.arch.c_str(), R, static_cast<long long>(batch), static_cast<long long>(batch * R),
                static_cast<long long>(train.size()), static_cast<long long>(steps),
                loss_sum / static_cast<double>(std::max<int64_t>(steps, 1)),
                100.0 * static_cast<double>(correct) / static_cast<double>(n), static_cast<long long>(n));
    for (int q = 0; q < R; ++q) {
      const double* f = all.data() + q * K;
      const double* e = f + 7 * kPhases + 2;
      std::printf("rank %d: epoch %.3f s wall, %.3f s CPU (main thread), %.3f s CPU (process: +%.3f s other threads)\n", q,
                  e[0], e[1], e[2], e[2] - e[1]);
      std::printf("  per step (ms)   wall    CPU   in collectives: wall   CPU (calls)   wall p10  median\n");
      double sw = 0, sc = 0, cw = 0, cc = 0;
      for (int p = 0; p < kOther; ++p) {
        const double s = static_cast<double>(std::max<int64_t>(steps, 1));
        const double* x = f + 7 * p;
        std::printf("  %-10s %9.3f %6.3f   %20.3f %6.3f (%g) %10.3f %7.3f\n", kPhaseNames[p], 1e3 * x[0] / s,
                    1e3 * x[1] / s, 1e3 * x[2] / s, 1e3 * x[3] / s, x[4] / s, 1e3 * x[5], 1e3 * x[6]);
        sw += x[0], sc += x[1], cw += x[2], cc += x[3];
      }
      const double s = static_cast<double>(std::max<int64_t>(steps, 1));
      std::printf("  %-10s %9.3f %6.3f   %20.3f %6.3f\n", "total", 1e3 * sw / s, 1e3 * sc / s, 1e3 * cw / s, 1e3 * cc / s);
      std::printf("  CPU outside collectives %.3f ms per step; a whole step's wall time: p10 %.3f ms, median %.3f ms\n",
                  1e3 * (sc - cc) / s, 1e3 * f[7 * kPhases], 1e3 * f[7 * kPhases + 1]);
      std::printf("  start-up: MPI %.3f s, data set %.3f s, model + broadcast %.3f s; evaluation %.3f s\n", e[4], e[5],
                  e[6], e[3]);
    }
    if (R > 1) {
      std::printf("all-reduce alone, back to back (median): 1 float %.1f us", 1e6 * costs[0]);
      for (size_t i = 0; i < bucket_floats.size(); ++i)
        std::printf(", %lld floats %.1f us", static_cast<long long>(bucket_floats[i]), 1e6 * costs[i + 1]);
      std::printf("\n");
    }
  }
  return 0;
}
