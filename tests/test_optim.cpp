// Optimizers (docs/optim.md: groups, Adam / AdamW against formulas in double, errors),
// checkpoint states that resume bit for bit through a safetensors file,
// schedule states, gradient clipping's edge cases, and model snapshots.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "clusters.h"
#include "tinyqat.h"

using namespace tq;
using Catch::Contains;

namespace {

constexpr double kTol = 1e-6;  // f32 results against double formulas, relative

bool close(double a, double b) { return std::fabs(a - b) <= kTol * std::max(1.0, std::fabs(b)); }

// Adam on one scalar parameter with gradient g(w) = 0.5 + 0.3 w (the loss
// 0.5 w + 0.15 w^2), written out in double from docs/optim.md eq. 1-6.
std::vector<double> reference_adam(const nn::AdamOptions& o, bool decoupled, int steps) {
  double w = 1, m = 0, v = 0, vmax = 0;
  std::vector<double> out;
  for (int t = 1; t <= steps; ++t) {
    double g = 0.5 + 0.3 * w;
    if (!decoupled) g += o.weight_decay * w;    // eq. 5
    else w *= 1 - o.lr * o.weight_decay;          // eq. 6 (the gradient was taken before)
    m = o.beta1 * m + (1 - o.beta1) * g;          // eq. 1
    v = o.beta2 * v + (1 - o.beta2) * g * g;      // eq. 2
    vmax = std::max(vmax, v);
    const double second = o.amsgrad ? vmax : v;   // eq. 4
    const double m_hat = m / (1 - std::pow(o.beta1, t));
    w -= o.lr * m_hat / (std::sqrt(second / (1 - std::pow(o.beta2, t))) + o.eps);  // eq. 3
    out.push_back(w);
  }
  return out;
}

std::vector<double> run_adam(const nn::AdamOptions& o, bool decoupled, int steps) {
  Tensor w = from_vector({1.0f}, {1}).requires_grad_();
  std::unique_ptr<nn::Adam> opt;
  if (decoupled)
    opt = std::make_unique<nn::AdamW>(std::vector<Tensor>{w}, nn::AdamWOptions{.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2,
                                                                               .eps = o.eps, .weight_decay = o.weight_decay,
                                                                               .amsgrad = o.amsgrad});
  else
    opt = std::make_unique<nn::Adam>(std::vector<Tensor>{w}, o);
  std::vector<double> out;
  for (int s = 0; s < steps; ++s) {
    opt->zero_grad();
    sum(w * 0.5f + w * w * 0.15f).backward();
    opt->step();
    out.push_back(w.item());
  }
  return out;
}

}  // namespace

TEST_CASE("Adam and AdamW follow their update equations (bias correction, eps after the square root, decay)",
          "[optim]") {
  const nn::AdamOptions cases[] = {
      {.lr = 0.1},
      {.lr = 0.1, .weight_decay = 0.2},
      {.lr = 0.05, .beta1 = 0.5, .beta2 = 0.9, .eps = 0.1},
      {.lr = 0.2, .weight_decay = 0.1, .amsgrad = true},
  };
  for (const auto& o : cases)
    for (bool decoupled : {false, true}) {
      const auto got = run_adam(o, decoupled, 8), want = reference_adam(o, decoupled, 8);
      for (size_t s = 0; s < got.size(); ++s) {
        INFO((decoupled ? "AdamW" : "Adam") << " lr " << o.lr << " wd " << o.weight_decay << " eps " << o.eps
                                            << " amsgrad " << o.amsgrad << " step " << s);
        CHECK(close(got[s], want[s]));
      }
    }
  // The first step moves every coordinate by about lr, whatever the gradient's size (m̂ / sqrt(v̂) = sign g).
  Tensor w = from_vector({1, 1}, {2}).requires_grad_();
  nn::Adam adam({w}, {.lr = 0.01});
  sum(w * from_vector({1000, 0.001f}, {2})).backward();
  adam.step();
  CHECK(to_vector(w)[0] == Approx(0.99).epsilon(1e-6));
  CHECK(to_vector(w)[1] == Approx(0.99).epsilon(1e-4));  // eps = 1e-8 beside |g| = 1e-3
}

TEST_CASE("AdamW decouples weight decay: with zero gradients it only shrinks the weights by (1 - lr wd)", "[optim]") {
  Tensor a = from_vector({2, -4}, {2}).requires_grad_(), b = from_vector({2, -4}, {2}).requires_grad_();
  nn::AdamW adamw({a}, {.lr = 0.1, .weight_decay = 0.5});
  nn::Adam adam({b}, {.lr = 0.1, .weight_decay = 0.5});
  for (int s = 0; s < 3; ++s) {
    for (Tensor* t : {&a, &b}) t->set_grad(zeros({2}));
    adamw.step();
    adam.step();
  }
  // AdamW: w (1 - 0.05)^3; Adam's L2 term goes through the moments and moves w by about lr per step.
  CHECK(to_vector(a)[0] == Approx(2 * std::pow(0.95, 3)).epsilon(1e-6));
  CHECK(to_vector(a)[1] == Approx(-4 * std::pow(0.95, 3)).epsilon(1e-6));
  CHECK(to_vector(b)[0] == Approx(2 - 0.3).margin(0.002));  // PyTorch: 1.7006
  CHECK(to_vector(b)[1] == Approx(-4 + 0.3).margin(0.002));  // PyTorch: -3.7003
}

TEST_CASE("Optimizer parameter groups: defaults, own rates, errors that name the group", "[optim]") {
  Tensor a = ones({2}).requires_grad_(), b = ones({3}).requires_grad_(), c = ones({1}).requires_grad_();
  nn::SGD sgd({{.name = "weights", .params = {a, b}}, {.name = "scales", .params = {c}, .lr = 0.5, .weight_decay = 0.0}},
              {.lr = 0.1, .weight_decay = 0.01});
  REQUIRE(sgd.param_groups().size() == 2);
  CHECK(sgd.lr(0) == 0.1);
  CHECK(sgd.weight_decay(0) == 0.01);
  CHECK(sgd.lr(1) == 0.5);
  CHECK(sgd.weight_decay(1) == 0.0);
  CHECK(sgd.params().size() == 3);
  for (Tensor* t : {&a, &b, &c}) t->set_grad(ones(t->shape()));
  sgd.step();
  CHECK(to_vector(a)[0] == Approx(1 - 0.1 * (1 + 0.01)));
  CHECK(to_vector(c)[0] == Approx(1 - 0.5));
  sgd.set_lr(1, 0.25);
  CHECK(sgd.lr(1) == 0.25);
  REQUIRE_THROWS_WITH(sgd.set_lr(1, NAN), Contains("SGD") && Contains("learning rate nan") && Contains("'scales'"));

  REQUIRE_THROWS_WITH(nn::Adam({{.params = {a}}, {.name = "again", .params = {a}}}),
                      Contains("Adam") && Contains("appears twice") && Contains("'again'"));
  REQUIRE_THROWS_WITH(nn::AdamW({{.params = {a}, .lr = -1.0}}), Contains("AdamW") && Contains("learning rate -1"));
  REQUIRE_THROWS_WITH(nn::Adam({{.params = {a}, .weight_decay = INFINITY}}), Contains("weight_decay inf"));
  REQUIRE_THROWS_WITH(nn::Adam({a}, {.beta1 = 1.0}), Contains("beta1 1"));
  REQUIRE_THROWS_WITH(nn::Adam({a}, {.beta2 = -0.1}), Contains("beta2 -0.1"));
  REQUIRE_THROWS_WITH(nn::AdamW({a}, {.eps = -1.0}), Contains("eps -1"));
  REQUIRE_THROWS_WITH(nn::Adam({kernels::transpose(zeros({2, 3}), 0, 1)}), Contains("contiguous"));
  Tensor no_grad = ones({2}).requires_grad_();
  nn::Adam idle({no_grad});
  REQUIRE_THROWS_WITH(idle.step(), Contains("Adam.step") && Contains("no parameter has a gradient"));
}

TEST_CASE("Adam skips parameters without a gradient and starts their state only at their first gradient",
          "[optim]") {
  Tensor a = ones({2}).requires_grad_(), b = ones({2}).requires_grad_();
  nn::Adam opt({a, b}, {.lr = 0.1});
  a.set_grad(ones({2}));
  opt.step();
  opt.step();
  CHECK(opt.steps() == std::vector<int64_t>{2, 0});
  CHECK_FALSE(opt.exp_avg()[1].defined());
  CHECK(to_vector(b) == std::vector<float>{1, 1});
  const nn::StateDict s = opt.state_dict();
  CHECK(s.scalars.at("param.0.step") == 2);
  CHECK(s.scalars.count("param.1.step") == 0);
  CHECK(s.tensors.count("param.0.exp_avg") == 1);
  CHECK(s.tensors.count("param.1.exp_avg") == 0);
}

// ---- Exact resume: optimizer + schedule states through a safetensors file ----

namespace {

struct Run {
  std::shared_ptr<tq_test::ClusterMLP> model;
  std::unique_ptr<nn::Optimizer> optimizer;
  std::shared_ptr<nn::LRScheduler> schedule;
};

enum class Kind { sgd, adam, adamw_amsgrad };

Run make_run(Kind kind, const tq_test::ClusterMLP* copy_from) {
  Run r;
  manual_seed(7);
  r.model = std::make_shared<tq_test::ClusterMLP>(6, 3);
  if (copy_from) nn::ModelSnapshot::take(*copy_from).restore(*r.model);
  auto groups = std::vector<nn::ParamGroup>{
      {.name = "weights", .params = nn::ParameterSplit::tensors(nn::split_parameters(*r.model, [](const std::string& n) {
                                                                   return !nn::is_bias_name(n);
                                                                 }).selected)},
      {.name = "biases",
       .params = nn::ParameterSplit::tensors(nn::split_parameters(*r.model, nn::is_bias_name).selected),
       .weight_decay = 0.0}};
  switch (kind) {
    case Kind::sgd:
      r.optimizer = std::make_unique<nn::SGD>(groups, nn::SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3});
      break;
    case Kind::adam: r.optimizer = std::make_unique<nn::Adam>(groups, nn::AdamOptions{.lr = 3e-3, .weight_decay = 1e-3}); break;
    case Kind::adamw_amsgrad:
      r.optimizer = std::make_unique<nn::AdamW>(groups, nn::AdamWOptions{.lr = 3e-3, .amsgrad = true});
      break;
  }
  r.schedule = nn::make_lr_scheduler(*r.optimizer, {.kind = nn::LRScheduleKind::cosine, .total_steps = 20, .warmup_steps = 4});
  return r;
}

void train_steps(Run& r, const tq_test::Clusters& data, int first, int count) {
  for (int s = first; s < first + count; ++s) {
    const int64_t b = (s * 16) % (data.x.size(0) - 16);
    r.optimizer->zero_grad();
    cross_entropy((*r.model)(kernels::slice(data.x, 0, b, b + 16)), kernels::slice(data.y, 0, b, b + 16)).backward();
    nn::clip_grad_norm_(*r.model, 5.0);
    r.optimizer->step();
    r.schedule->step();
  }
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data<float>(), b.data<float>(), a.numel() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("Optimizer and schedule states resume a run bit for bit through a safetensors file", "[optim][resume]") {
  const tq_test::Clusters data = tq_test::make_clusters(256, 3, 6, 1.0f, 5);
  for (Kind kind : {Kind::sgd, Kind::adam, Kind::adamw_amsgrad}) {
    INFO("optimizer kind " << static_cast<int>(kind));
    Run straight = make_run(kind, nullptr);
    train_steps(straight, data, 0, 7);
    // Save mid-run (inside the cosine part), as a checkpoint writer does.
    io::SafetensorsFile file = io::model_to_safetensors(*straight.model);
    io::put_state(file, "__optimizer__", straight.optimizer->state_dict());
    io::put_state(file, "__lr_scheduler__", straight.schedule->state_dict());
    const std::string bytes = io::serialize_safetensors(file);
    train_steps(straight, data, 7, 9);

    // A new process: the same construction, then the states from the file.
    const io::SafetensorsFile loaded = io::parse_safetensors(bytes, "checkpoint");
    Run resumed = make_run(kind, nullptr);
    io::load_into(*resumed.model, loaded, "checkpoint");
    resumed.optimizer->load_state_dict(io::get_state(loaded, "__optimizer__", "checkpoint"));
    resumed.schedule->load_state_dict(io::get_state(loaded, "__lr_scheduler__", "checkpoint"));
    CHECK(resumed.schedule->last_epoch() == 7);
    train_steps(resumed, data, 7, 9);

    const auto a = straight.model->named_parameters(), b = resumed.model->named_parameters();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      INFO(a[i].first);
      CHECK(same_bytes(a[i].second, b[i].second));
    }
    for (size_t g = 0; g < 2; ++g) CHECK(straight.optimizer->lr(g) == resumed.optimizer->lr(g));
  }
}

TEST_CASE("Loading a state checks kind, groups, settings and shapes, and changes nothing when it fails",
          "[optim][resume]") {
  Tensor a = ones({2}).requires_grad_(), b = ones({3}).requires_grad_();
  nn::Adam adam({a, b}, {.lr = 0.1});
  a.set_grad(ones({2}));
  b.set_grad(ones({3}));
  adam.step();
  const nn::StateDict good = adam.state_dict();

  nn::SGD sgd({a, b}, 0.1);
  REQUIRE_THROWS_WITH(sgd.load_state_dict(good), Contains("SGD") && Contains("'Adam'"));
  nn::Adam other_betas({a, b}, {.lr = 0.1, .beta2 = 0.99});
  REQUIRE_THROWS_WITH(other_betas.load_state_dict(good), Contains("beta2 = 0.999") && Contains("beta2 = 0.99"));
  nn::Adam amsgrad({a, b}, {.lr = 0.1, .amsgrad = true});
  REQUIRE_THROWS_WITH(amsgrad.load_state_dict(good), Contains("amsgrad"));
  nn::Adam one_group({a}, {.lr = 0.1});
  REQUIRE_THROWS_WITH(one_group.load_state_dict(good), Contains("group 0") && Contains("2 parameters"));
  Tensor c = ones({5}).requires_grad_();
  nn::Adam other_shape({a, c}, {.lr = 0.1});
  REQUIRE_THROWS_WITH(other_shape.load_state_dict(good), Contains("param.1.exp_avg") && Contains("(5,)"));
  CHECK(other_shape.steps() == std::vector<int64_t>{0, 0});  // unchanged

  nn::StateDict partial = good;
  partial.tensors.erase("param.1.exp_avg_sq");
  nn::Adam fresh({a, b}, {.lr = 0.5});
  REQUIRE_THROWS_WITH(fresh.load_state_dict(partial), Contains("parameter 1 has only part of its state"));
  CHECK(fresh.lr(0) == 0.5);
  fresh.load_state_dict(good);
  CHECK(fresh.lr(0) == 0.1);  // the rate comes from the state
  CHECK(fresh.steps() == std::vector<int64_t>{1, 1});

  // Schedules: the settings must agree.
  auto cosine = std::make_shared<nn::CosineAnnealingLR>(fresh, 10);
  cosine->step();
  nn::CosineAnnealingLR longer(fresh, 20);
  REQUIRE_THROWS_WITH(longer.load_state_dict(cosine->state_dict()), Contains("T_max = 10") && Contains("T_max = 20"));
  nn::StepLR step(fresh, 3);
  REQUIRE_THROWS_WITH(step.load_state_dict(cosine->state_dict()), Contains("StepLR") && Contains("'CosineAnnealingLR'"));

  // A state in a file whose metadata lost a tensor is a format error naming the file.
  io::SafetensorsFile file;
  io::put_state(file, "__optimizer__", good);
  file.tensors.erase("__optimizer__.param.0.exp_avg");
  REQUIRE_THROWS_WITH(io::get_state(file, "__optimizer__", "ck.safetensors"),
                      Contains("ck.safetensors") && Contains("param.0.exp_avg"));
  REQUIRE_THROWS_WITH(io::get_state(file, "__lr_scheduler__", "ck.safetensors"), Contains("no '__lr_scheduler__' state"));
}

TEST_CASE("Schedules: the constructor takes epoch 0; errors name the schedule and the setting", "[optim][schedule]") {
  Tensor a = ones({1}).requires_grad_();
  nn::SGD opt({a}, 1.0);
  nn::LinearLR warm(opt, 0.1, 1.0, 4);
  CHECK(opt.lr(0) == Approx(0.1));
  CHECK(warm.last_epoch() == 0);
  CHECK(opt.param_groups()[0].initial_lr == 1.0);
  for (int s = 0; s < 6; ++s) warm.step();
  CHECK(opt.lr(0) == Approx(1.0));
  REQUIRE_THROWS_WITH(nn::StepLR(opt, 0), Contains("StepLR") && Contains("step_size"));
  REQUIRE_THROWS_WITH(nn::CosineAnnealingLR(opt, 0), Contains("T_max"));
  REQUIRE_THROWS_WITH(nn::LinearLR(opt, 0.0), Contains("start_factor"));
  REQUIRE_THROWS_WITH(nn::MultiStepLR(opt, {3, -1}), Contains("milestones"));
  auto s1 = std::make_shared<nn::StepLR>(opt, 2);
  REQUIRE_THROWS_WITH(nn::SequentialLR(opt, {s1}, {3}), Contains("1 schedulers need 0 milestones"));
  Tensor b = ones({1}).requires_grad_();
  nn::SGD other({b}, 1.0);
  auto foreign = std::make_shared<nn::StepLR>(other, 2);
  REQUIRE_THROWS_WITH(nn::SequentialLR(opt, {s1, foreign}, {3}), Contains("another optimizer"));
  REQUIRE_THROWS_WITH(nn::parse_lr_schedule("linear"), Contains("'linear'") && Contains("cosine"));
  CHECK(nn::parse_lr_schedule("multistep") == nn::LRScheduleKind::multistep);
  REQUIRE_THROWS_WITH(nn::make_lr_scheduler(opt, {.kind = nn::LRScheduleKind::cosine, .total_steps = 5, .warmup_steps = 5}),
                      Contains("cosine") && Contains("warm-up"));
}

TEST_CASE("clip_grad_norm_: returns the norm before clipping; non-finite norms leave the gradients or throw",
          "[optim][clip]") {
  Tensor a = zeros({2}).requires_grad_(), b = zeros({1}).requires_grad_(), none = zeros({1}).requires_grad_();
  a.set_grad(from_vector({3, 0}, {2}));
  b.set_grad(from_vector({4}, {1}));
  CHECK(nn::clip_grad_norm_({a, b, none}, 10.0) == Approx(5.0));  // below max: untouched
  CHECK(to_vector(a.grad()) == std::vector<float>{3, 0});
  CHECK(nn::clip_grad_norm_({a, b, none}, 1.0) == Approx(5.0));
  CHECK(to_vector(a.grad())[0] == Approx(3.0 / (5 + 1e-6)));
  CHECK(to_vector(b.grad())[0] == Approx(4.0 / (5 + 1e-6)));
  CHECK(nn::clip_grad_norm_({none}, 1.0) == 0.0);  // no gradients at all

  a.set_grad(from_vector({NAN, 1}, {2}));
  b.set_grad(from_vector({4}, {1}));
  CHECK(std::isnan(nn::clip_grad_norm_({a, b}, 1.0)));
  CHECK(to_vector(b.grad()) == std::vector<float>{4});  // left as it was: the caller skips the step
  REQUIRE_THROWS_WITH(nn::clip_grad_norm_({b, a}, 1.0, {.error_if_nonfinite = true}),
                      Contains("parameter 1") && Contains("not finite"));
  a.set_grad(from_vector({INFINITY, 1}, {2}));
  CHECK(std::isinf(nn::clip_grad_norm_({a, b}, 1.0, {.norm_type = INFINITY})));
  REQUIRE_THROWS_WITH(nn::clip_grad_norm_({a}, -1.0), Contains("max_norm"));
  REQUIRE_THROWS_WITH(nn::clip_grad_norm_({a}, 1.0, {.norm_type = 0}), Contains("norm_type"));
}

TEST_CASE("ModelSnapshot keeps parameters and buffers and restores them in place", "[optim][snapshot]") {
  manual_seed(1);
  tq_test::ClusterMLP model(4, 3);
  const nn::ModelSnapshot best = nn::ModelSnapshot::take(model);
  const std::vector<float> w = to_vector(model.fc1->weight);
  const float* storage = model.fc1->weight.data<float>();
  nn::SGD opt(model.parameters(), 0.5);
  const tq_test::Clusters data = tq_test::make_clusters(32, 3, 4, 1.0f, 2);
  cross_entropy(model(data.x), data.y).backward();
  opt.step();
  REQUIRE(to_vector(model.fc1->weight) != w);
  best.restore(model);
  CHECK(to_vector(model.fc1->weight) == w);
  CHECK(model.fc1->weight.data<float>() == storage);  // in place: the optimizer still holds it

  tq_test::ClusterMLP other(5, 3);
  REQUIRE_THROWS_WITH(best.restore(other), Contains("fc1.weight") && Contains("(64, 5)"));
}

TEST_CASE("ModelSnapshot restores a QAT model's quantizer state (qparams buffers and LSQ scales)",
          "[optim][snapshot][qat]") {
  manual_seed(2);
  const tq_test::Clusters data = tq_test::make_clusters(64, 3, 4, 1.0f, 3);
  for (bool lsq : {false, true}) {
    INFO("lsq " << lsq);
    tq_test::ClusterMLP model(4, 3);
    model.qconfig = lsq ? quant::make_lsq_qat_qconfig(4, 4) : quant::make_qat_qconfig(8, 8);
    quant::prepare_qat(model);
    nn::SGD opt(model.parameters(), 0.1);
    auto step = [&](int64_t b) {
      opt.zero_grad();
      cross_entropy(model(kernels::slice(data.x, 0, b, b + 32)), kernels::slice(data.y, 0, b, b + 32)).backward();
      opt.step();
    };
    step(0);
    const nn::ModelSnapshot snap = nn::ModelSnapshot::take(model);
    model.eval();
    const std::vector<float> out = to_vector(model(data.x));
    model.train();
    step(32);
    step(0);
    snap.restore(model);
    model.eval();
    CHECK(to_vector(model(data.x)) == out);  // the same fake-quant outputs: qparams restored too
  }
}
