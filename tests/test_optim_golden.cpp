// Optimizers, learning-rate schedules and clip_grad_norm_ against PyTorch
// 1.13 (tests/golden/optim.txt, written by tests/golden/generate_optim.py).
#include <catch2/catch.hpp>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "golden_reader.h"
#include "tinyqat.h"

using namespace tq;

namespace {

constexpr double kRelTol = 1e-6;  // relative, in the max norm (golden::compare)

const golden::File& optim_file() { return golden::load("optim.txt"); }

std::vector<double> row(const golden::Entry& e, int64_t r) {
  const int64_t cols = e.shape[1];
  return {e.values.begin() + r * cols, e.values.begin() + (r + 1) * cols};
}

// Replays golden case `name` through `opt` over params (made from the golden
// init): each step sets the golden gradients, checks the groups' rates,
// steps (and steps `schedule` after, if any), and compares the parameters.
void replay(const std::string& name, nn::Optimizer& opt, std::vector<Tensor>& params,
              nn::LRScheduler* schedule = nullptr) {
  const golden::File& g = optim_file();
  for (int s = 0;; ++s) {
    const std::string step = fmt::format("{}/step{}/", name, s);
    if (!g.has(step + "lr")) break;
    const golden::Entry& lr = g.entry(step + "lr");
    REQUIRE(lr.numel() == static_cast<int64_t>(opt.param_groups().size()));
    for (size_t k = 0; k < opt.param_groups().size(); ++k) {
      INFO(step << "lr of group " << k);
      CHECK(std::fabs(opt.lr(k) - lr.values[k]) <= kRelTol * lr.values[k]);
    }
    opt.zero_grad();
    for (size_t i = 0; i < params.size(); ++i) params[i].set_grad(g.tensor(fmt::format("{}grad/{}", step, i)));
    opt.step();
    if (schedule) schedule->step();
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string key = fmt::format("{}param/{}", step, i);
      const golden::Comparison c = golden::compare(params[i], g.tensor(key));
      INFO(c.describe(key));
      CHECK(c.relative_error <= kRelTol);
    }
  }
}

std::vector<Tensor> initial_params(const std::string& name) {
  const golden::File& g = optim_file();
  std::vector<Tensor> params;
  for (int i = 0; g.has(fmt::format("{}/init/{}", name, i)); ++i)
    params.push_back(g.tensor(fmt::format("{}/init/{}", name, i)).requires_grad_());
  REQUIRE(params.size() == 2);
  return params;
}

// Group 1 = parameter 1 with its own rate and weight decay (generate_optim.py's two_groups).
std::vector<nn::ParamGroup> two_groups(const std::vector<Tensor>& p, double lr1, double wd1) {
  return {{.name = "weights", .params = {p[0]}}, {.name = "bias", .params = {p[1]}, .lr = lr1, .weight_decay = wd1}};
}

void check_state(const std::string& name, const std::string& key, const std::vector<Tensor>& got) {
  const golden::File& g = optim_file();
  for (size_t i = 0; i < got.size(); ++i) {
    const std::string k = fmt::format("{}/state/{}/{}", name, i, key);
    REQUIRE(g.has(k));
    REQUIRE(got[i].defined());
    const golden::Comparison c = golden::compare(got[i], g.tensor(k));
    INFO(c.describe(k));
    CHECK(c.relative_error <= kRelTol);
  }
}

void check_adam_state(const std::string& name, const nn::Adam& opt) {
  check_state(name, "exp_avg", opt.exp_avg());
  check_state(name, "exp_avg_sq", opt.exp_avg_sq());
  if (opt.options().amsgrad) check_state(name, "max_exp_avg_sq", opt.max_exp_avg_sq());
  for (size_t i = 0; i < opt.steps().size(); ++i)
    CHECK(opt.steps()[i] == static_cast<int64_t>(optim_file().scalar(fmt::format("{}/state/{}/step", name, i))));
}

}  // namespace

TEST_CASE("golden optim: Adam follows torch.optim.Adam (plain, L2 weight decay, amsgrad, betas and eps)",
          "[optim][golden]") {
  struct Case {
    const char* name;
    nn::AdamOptions options;
  };
  const Case cases[] = {
      {"adam/plain", {.lr = 0.01}},
      {"adam/wd", {.lr = 0.01, .weight_decay = 0.1}},
      {"adam/amsgrad_wd", {.lr = 0.01, .weight_decay = 0.1, .amsgrad = true}},
      {"adam/betas_eps", {.lr = 0.05, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-3}},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    std::vector<Tensor> params = initial_params(c.name);
    nn::Adam opt(params, c.options);
    CHECK(opt.type_name() == std::string("Adam"));
    replay(c.name, opt, params);
    check_adam_state(c.name, opt);
  }
}

TEST_CASE("golden optim: AdamW follows torch.optim.AdamW (decoupled weight decay, amsgrad, parameter groups)",
          "[optim][golden]") {
  struct Case {
    const char* name;
    nn::AdamWOptions options;
    bool groups;
  };
  const Case cases[] = {
      {"adamw/default", {.lr = 0.01}, false},
      {"adamw/wd", {.lr = 0.01, .weight_decay = 0.5}, false},
      {"adamw/amsgrad_wd", {.lr = 0.01, .weight_decay = 0.5, .amsgrad = true}, false},
      {"adamw/groups", {.lr = 0.01, .weight_decay = 0.5}, true},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    std::vector<Tensor> params = initial_params(c.name);
    nn::AdamW opt(c.groups ? two_groups(params, 0.002, 0.0) : nn::single_group(params), c.options);
    CHECK(opt.type_name() == std::string("AdamW"));
    replay(c.name, opt, params);
    check_adam_state(c.name, opt);
  }
  // The default weight decay of AdamW is PyTorch's 0.01; Adam's is 0.
  std::vector<Tensor> p = initial_params("adamw/default");
  CHECK(nn::AdamW(p).weight_decay(0) == 0.01);
  CHECK(nn::Adam(p).weight_decay(0) == 0.0);
}

TEST_CASE("golden optim: SGD with parameter groups follows torch.optim.SGD", "[optim][golden]") {
  {
    std::vector<Tensor> params = initial_params("sgd/groups");
    nn::SGD opt(two_groups(params, 0.02, 0.0), {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
    replay("sgd/groups", opt, params);
    check_state("sgd/groups", "momentum_buffer", opt.momentum_buffers());
  }
  {
    std::vector<Tensor> params = initial_params("sgd/nesterov_groups");
    nn::SGD opt(two_groups(params, 0.3, 0.2), {.lr = 0.1, .momentum = 0.5, .weight_decay = 0.05, .nesterov = true});
    replay("sgd/nesterov_groups", opt, params);
    check_state("sgd/nesterov_groups", "momentum_buffer", opt.momentum_buffers());
  }
}

TEST_CASE("golden optim: AdamW under warm-up then cosine, stepped per batch", "[optim][golden]") {
  const std::string name = "adamw/warmup_cosine";
  std::vector<Tensor> params = initial_params(name);
  nn::AdamW opt(two_groups(params, 0.001, 0.0), {.lr = 0.01, .weight_decay = 0.1});
  nn::SequentialLR schedule(
      opt, {std::make_shared<nn::LinearLR>(opt, 0.1, 1.0, 2), std::make_shared<nn::CosineAnnealingLR>(opt, 4)}, {2});
  replay(name, opt, params, &schedule);  // checks each step's rates too
  check_adam_state(name, opt);
}

namespace {

using SchedulerFactory = std::function<std::shared_ptr<nn::LRScheduler>(nn::Optimizer&)>;

// The golden rates of schedule `name` (two groups at 0.1 and 0.02): after
// construction, then after each step.
void check_schedule(const std::string& name, const SchedulerFactory& make) {
  INFO(name);
  Tensor p0 = zeros({1}).requires_grad_(), p1 = zeros({1}).requires_grad_();
  nn::SGD opt({{.params = {p0}}, {.params = {p1}, .lr = 0.02}}, {.lr = 0.1});
  auto schedule = make(opt);
  const golden::File& g = optim_file();
  const golden::Entry& lr = g.entry("schedule/" + name + "/lr");
  const int64_t steps = static_cast<int64_t>(g.scalar("schedule/" + name + "/steps"));
  REQUIRE(lr.shape[0] == steps + 1);
  for (int64_t s = 0; s <= steps; ++s) {
    if (s > 0) schedule->step();
    const std::vector<double> want = row(lr, s);
    for (size_t k = 0; k < 2; ++k) {
      INFO("after " << s << " steps, group " << k << ": got " << opt.lr(k) << ", PyTorch " << want[k]);
      CHECK(std::fabs(opt.lr(k) - want[k]) <= kRelTol * std::fabs(want[k]));
      CHECK(schedule->get_last_lr()[k] == opt.lr(k));
    }
    CHECK(schedule->last_epoch() == s);
  }
}

}  // namespace

TEST_CASE("golden optim: StepLR, MultiStepLR, CosineAnnealingLR, LinearLR and ConstantLR follow PyTorch",
          "[optim][golden][schedule]") {
  using std::make_shared;
  check_schedule("step", [](nn::Optimizer& o) { return make_shared<nn::StepLR>(o, 3, 0.5); });
  check_schedule("multistep",
                 [](nn::Optimizer& o) { return make_shared<nn::MultiStepLR>(o, std::vector<int64_t>{2, 5, 5, 9}, 0.3); });
  check_schedule("cosine", [](nn::Optimizer& o) { return make_shared<nn::CosineAnnealingLR>(o, 10, 0.001); });
  check_schedule("cosine_eta0", [](nn::Optimizer& o) { return make_shared<nn::CosineAnnealingLR>(o, 7); });
  check_schedule("linear_warmup", [](nn::Optimizer& o) { return make_shared<nn::LinearLR>(o, 0.1, 1.0, 4); });
  check_schedule("linear_decay", [](nn::Optimizer& o) { return make_shared<nn::LinearLR>(o, 1.0, 0.2, 5); });
  check_schedule("constant", [](nn::Optimizer& o) { return make_shared<nn::ConstantLR>(o, 0.5, 3); });
}

TEST_CASE("golden optim: SequentialLR composes warm-up with cosine, step and multi-step schedules as PyTorch",
          "[optim][golden][schedule]") {
  using std::make_shared;
  using Parts = std::vector<std::shared_ptr<nn::LRScheduler>>;
  check_schedule("warmup_cosine", [](nn::Optimizer& o) {
    return make_shared<nn::SequentialLR>(
        o, Parts{make_shared<nn::LinearLR>(o, 0.01, 1.0, 5), make_shared<nn::CosineAnnealingLR>(o, 15)},
        std::vector<int64_t>{5});
  });
  check_schedule("warmup_step", [](nn::Optimizer& o) {
    return make_shared<nn::SequentialLR>(
        o, Parts{make_shared<nn::LinearLR>(o, 0.25, 1.0, 3), make_shared<nn::StepLR>(o, 4, 0.5)}, std::vector<int64_t>{3});
  });
  check_schedule("warmup_multistep", [](nn::Optimizer& o) {
    return make_shared<nn::SequentialLR>(
        o, Parts{make_shared<nn::LinearLR>(o, 0.5, 1.0, 2), make_shared<nn::MultiStepLR>(o, std::vector<int64_t>{0, 3, 6}, 0.1)},
        std::vector<int64_t>{2});
  });
  check_schedule("three_part", [](nn::Optimizer& o) {
    return make_shared<nn::SequentialLR>(o,
                                         Parts{make_shared<nn::ConstantLR>(o, 0.1, 2), make_shared<nn::LinearLR>(o, 0.5, 1.0, 3),
                                               make_shared<nn::CosineAnnealingLR>(o, 6, 0.005)},
                                         std::vector<int64_t>{2, 6});
  });
  // make_lr_scheduler builds the same warm-up + cosine from a few settings.
  check_schedule("warmup_cosine", [](nn::Optimizer& o) {
    return nn::make_lr_scheduler(o, {.kind = nn::LRScheduleKind::cosine, .total_steps = 20, .warmup_steps = 5,
                                     .warmup_start_factor = 0.01});
  });
}

TEST_CASE("golden optim: clip_grad_norm_ returns PyTorch's total norm and scales the gradients as it does",
          "[optim][golden][clip]") {
  const golden::File& g = optim_file();
  for (const char* name : {"clip/l2_clipped", "clip/l2_unclipped", "clip/inf_clipped", "clip/l1_clipped", "clip/l3_clipped"}) {
    INFO(name);
    const std::string base = name;
    std::vector<Tensor> params;
    for (int i = 0; g.has(fmt::format("{}/grad/{}", base, i)); ++i) {
      Tensor grad = g.tensor(fmt::format("{}/grad/{}", base, i));
      Tensor p = zeros(grad.shape()).requires_grad_();
      p.set_grad(grad);
      params.push_back(p);
    }
    REQUIRE(params.size() == 3);
    const double total = nn::clip_grad_norm_(params, g.scalar(base + "/max_norm"), {.norm_type = g.scalar(base + "/norm_type")});
    const double want = g.scalar(base + "/total_norm");
    CHECK(std::fabs(total - want) <= kRelTol * want);
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string key = fmt::format("{}/clipped/{}", base, i);
      const golden::Comparison c = golden::compare(params[i].grad(), g.tensor(key));
      INFO(c.describe(key));
      CHECK(c.relative_error <= kRelTol);
    }
  }
}
