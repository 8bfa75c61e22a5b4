// Learning-rate schedules as torch.optim.lr_scheduler computes them in
// PyTorch 1.13 (docs/optim.md §4): the chainable get_lr() forms for step(),
// the closed forms for step(epoch), in double, as Python does.
#include "nn/lr_scheduler.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>

#include <fmt/format.h>

namespace tq::nn {

// ---- LRScheduler ----

LRScheduler::LRScheduler(Optimizer& optimizer) : optimizer_(&optimizer) {
  for (ParamGroup& g : optimizer.param_groups()) {
    if (!g.initial_lr) g.initial_lr = *g.lr;  // PyTorch: group.setdefault('initial_lr', group['lr'])
    base_lrs_.push_back(*g.initial_lr);
  }
}

void LRScheduler::initial_step() { step(); }

std::vector<double> LRScheduler::current_rates() const {
  std::vector<double> r;
  for (const ParamGroup& g : optimizer_->param_groups()) r.push_back(*g.lr);
  return r;
}

void LRScheduler::set_rates(const std::vector<double>& rates) {
  for (size_t g = 0; g < rates.size(); ++g) optimizer_->set_lr(g, rates[g]);
  last_lr_ = rates;
}

void LRScheduler::step() {
  if (optimizer_->param_groups().size() != base_lrs_.size())
    throw std::logic_error(fmt::format("{}: the optimizer has {} parameter groups, the schedule was made for {}",
                                       type_name(), optimizer_->param_groups().size(), base_lrs_.size()));
  ++last_epoch_;
  set_rates(get_lr());
}

void LRScheduler::step_to(int64_t epoch) {
  last_epoch_ = epoch;
  set_rates(closed_form_lr());
}

StateDict LRScheduler::state_dict() const {
  StateDict s;
  s.kind = type_name();
  s.scalars["last_epoch"] = static_cast<double>(last_epoch_);
  s.scalars["groups"] = static_cast<double>(base_lrs_.size());
  for (size_t g = 0; g < base_lrs_.size(); ++g) s.scalars[fmt::format("base_lr.{}", g)] = base_lrs_[g];
  for (size_t g = 0; g < last_lr_.size(); ++g) s.scalars[fmt::format("last_lr.{}", g)] = last_lr_[g];
  for (const auto& [key, value] : settings()) s.scalars[key] = value;
  return s;
}

void LRScheduler::load_state_dict(const StateDict& s) {
  if (s.kind != type_name())
    throw std::invalid_argument(fmt::format("{}: cannot load the state of a '{}' schedule", type_name(), s.kind));
  for (const auto& [key, value] : settings()) {
    const double saved = s.scalar(key);
    if (saved != value)
      throw std::invalid_argument(
          fmt::format("{} state: saved with {} = {}, this schedule has {} = {}", type_name(), key, saved, key, value));
  }
  if (s.scalar("groups") != static_cast<double>(base_lrs_.size()))
    throw std::invalid_argument(fmt::format("{} state: saved for {} parameter groups, the optimizer has {}",
                                            type_name(), s.scalar("groups"), base_lrs_.size()));
  const double epoch = s.scalar("last_epoch");
  if (!(epoch >= -1 && epoch <= 9.0e15 && epoch == std::floor(epoch)))
    throw std::invalid_argument(fmt::format("{} state: last_epoch {} is not an integer >= -1", type_name(), epoch));
  std::vector<double> base, last;
  for (size_t g = 0; g < base_lrs_.size(); ++g) {
    base.push_back(s.scalar(fmt::format("base_lr.{}", g)));
    if (epoch >= 0) last.push_back(s.scalar(fmt::format("last_lr.{}", g)));
  }
  // Rates the optimizer would refuse at the next step are refused now.
  for (const std::vector<double>* rates : {&base, &last})
    for (double r : *rates)
      if (!std::isfinite(r) || r < 0)
        throw std::invalid_argument(fmt::format("{} state: a learning rate of {} (rates are finite and >= 0)", type_name(), r));
  last_epoch_ = static_cast<int64_t>(epoch);
  base_lrs_ = std::move(base);
  last_lr_ = std::move(last);
}

// ---- StepLR ----

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  if (step_size < 1) throw std::invalid_argument(fmt::format("StepLR: step_size must be >= 1, got {}", step_size));
  if (!(gamma > 0) || !std::isfinite(gamma))
    throw std::invalid_argument(fmt::format("StepLR: gamma must be positive and finite, got {}", gamma));
  initial_step();
}

std::vector<double> StepLR::get_lr() const {
  std::vector<double> r = current_rates();
  if (last_epoch_ == 0 || last_epoch_ % step_size_ != 0) return r;
  for (double& lr : r) lr *= gamma_;
  return r;
}

std::vector<double> StepLR::closed_form_lr() const {
  std::vector<double> r;
  for (double base : base_lrs_) r.push_back(base * std::pow(gamma_, static_cast<double>(last_epoch_ / step_size_)));
  return r;
}

std::vector<std::pair<std::string, double>> StepLR::settings() const {
  return {{"step_size", static_cast<double>(step_size_)}, {"gamma", gamma_}};
}

// ---- MultiStepLR ----

MultiStepLR::MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma)
    : LRScheduler(optimizer), milestones_(std::move(milestones)), gamma_(gamma) {
  for (int64_t m : milestones_)
    if (m < 0) throw std::invalid_argument(fmt::format("MultiStepLR: milestones must be >= 0, got {}", m));
  if (!(gamma > 0) || !std::isfinite(gamma))
    throw std::invalid_argument(fmt::format("MultiStepLR: gamma must be positive and finite, got {}", gamma));
  std::sort(milestones_.begin(), milestones_.end());
  initial_step();
}

std::vector<double> MultiStepLR::get_lr() const {
  std::vector<double> r = current_rates();
  const auto hits = std::count(milestones_.begin(), milestones_.end(), last_epoch_);
  if (hits == 0) return r;
  for (double& lr : r) lr *= std::pow(gamma_, static_cast<double>(hits));
  return r;
}

std::vector<double> MultiStepLR::closed_form_lr() const {
  // bisect_right: the milestones at or before last_epoch.
  const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin();
  std::vector<double> r;
  for (double base : base_lrs_) r.push_back(base * std::pow(gamma_, static_cast<double>(passed)));
  return r;
}

std::vector<std::pair<std::string, double>> MultiStepLR::settings() const {
  std::vector<std::pair<std::string, double>> s{{"gamma", gamma_}, {"milestones", static_cast<double>(milestones_.size())}};
  for (size_t k = 0; k < milestones_.size(); ++k)
    s.emplace_back(fmt::format("milestone.{}", k), static_cast<double>(milestones_[k]));
  return s;
}

// ---- CosineAnnealingLR ----

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min)
    : LRScheduler(optimizer), T_max_(T_max), eta_min_(eta_min) {
  if (T_max < 1) throw std::invalid_argument(fmt::format("CosineAnnealingLR: T_max must be >= 1, got {}", T_max));
  if (!(eta_min >= 0) || !std::isfinite(eta_min))
    throw std::invalid_argument(fmt::format("CosineAnnealingLR: eta_min must be finite and >= 0, got {}", eta_min));
  initial_step();
}

std::vector<double> CosineAnnealingLR::get_lr() const {
  constexpr double pi = std::numbers::pi;
  std::vector<double> r = current_rates();
  if (last_epoch_ == 0) return r;
  const auto t = static_cast<double>(last_epoch_), T = static_cast<double>(T_max_);
  if ((last_epoch_ - 1 - T_max_) % (2 * T_max_) == 0) {
    // Just past the bottom, where the ratio below would divide by zero.
    for (size_t g = 0; g < r.size(); ++g) r[g] = r[g] + (base_lrs_[g] - eta_min_) * (1 - std::cos(pi / T)) / 2;
    return r;
  }
  // eq. 8 from the previous step's rate (the chainable form).
  for (double& lr : r) lr = (1 + std::cos(pi * t / T)) / (1 + std::cos(pi * (t - 1) / T)) * (lr - eta_min_) + eta_min_;
  return r;
}

std::vector<double> CosineAnnealingLR::closed_form_lr() const {
  constexpr double pi = std::numbers::pi;
  std::vector<double> r;
  for (double base : base_lrs_)
    r.push_back(eta_min_ + (base - eta_min_) * (1 + std::cos(pi * static_cast<double>(last_epoch_) /
                                                             static_cast<double>(T_max_))) / 2);
  return r;
}

std::vector<std::pair<std::string, double>> CosineAnnealingLR::settings() const {
  return {{"T_max", static_cast<double>(T_max_)}, {"eta_min", eta_min_}};
}

// ---- LinearLR ----

LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor, int64_t total_iters)
    : LRScheduler(optimizer), start_factor_(start_factor), end_factor_(end_factor), total_iters_(total_iters) {
  if (!(start_factor > 0 && start_factor <= 1))
    throw std::invalid_argument(fmt::format("LinearLR: start_factor must be in (0, 1], got {}", start_factor));
  if (!(end_factor >= 0 && end_factor <= 1))
    throw std::invalid_argument(fmt::format("LinearLR: end_factor must be in [0, 1], got {}", end_factor));
  if (total_iters < 1)
    throw std::invalid_argument(fmt::format("LinearLR: total_iters must be >= 1, got {}", total_iters));
  initial_step();
}

std::vector<double> LinearLR::get_lr() const {
  std::vector<double> r = current_rates();
  if (last_epoch_ == 0) {
    for (double& lr : r) lr *= start_factor_;
    return r;
  }
  if (last_epoch_ > total_iters_) return r;
  // The ratio of eq. 9 at this step to eq. 9 at the previous one.
  const double d = end_factor_ - start_factor_;
  for (double& lr : r)
    lr *= 1.0 + d / (static_cast<double>(total_iters_) * start_factor_ + static_cast<double>(last_epoch_ - 1) * d);
  return r;
}

std::vector<double> LinearLR::closed_form_lr() const {
  std::vector<double> r;
  const auto t = static_cast<double>(std::min(total_iters_, last_epoch_));
  for (double base : base_lrs_)
    r.push_back(base * (start_factor_ + (end_factor_ - start_factor_) * t / static_cast<double>(total_iters_)));
  return r;
}

std::vector<std::pair<std::string, double>> LinearLR::settings() const {
  return {{"start_factor", start_factor_}, {"end_factor", end_factor_}, {"total_iters", static_cast<double>(total_iters_)}};
}

// ---- ConstantLR ----

ConstantLR::ConstantLR(Optimizer& optimizer, double factor, int64_t total_iters)
    : LRScheduler(optimizer), factor_(factor), total_iters_(total_iters) {
  if (!(factor > 0 && factor <= 1))
    throw std::invalid_argument(fmt::format("ConstantLR: factor must be in (0, 1], got {}", factor));
  if (total_iters < 0)
    throw std::invalid_argument(fmt::format("ConstantLR: total_iters must be >= 0, got {}", total_iters));
  initial_step();
}

std::vector<double> ConstantLR::get_lr() const {
  std::vector<double> r = current_rates();
  if (last_epoch_ == 0) {
    for (double& lr : r) lr *= factor_;
  } else if (last_epoch_ == total_iters_) {
    for (double& lr : r) lr *= 1.0 / factor_;
  }
  return r;
}

std::vector<double> ConstantLR::closed_form_lr() const {
  std::vector<double> r;
  for (double base : base_lrs_) r.push_back(base * (factor_ + (last_epoch_ >= total_iters_ ? 1 - factor_ : 0.0)));
  return r;
}

std::vector<std::pair<std::string, double>> ConstantLR::settings() const {
  return {{"factor", factor_}, {"total_iters", static_cast<double>(total_iters_)}};
}

// ---- SequentialLR ----

SequentialLR::SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
                           std::vector<int64_t> milestones)
    : LRScheduler(optimizer), schedulers_(std::move(schedulers)), milestones_(std::move(milestones)) {
  if (schedulers_.empty()) throw std::invalid_argument("SequentialLR: expected at least one scheduler");
  if (milestones_.size() + 1 != schedulers_.size())
    throw std::invalid_argument(fmt::format("SequentialLR: {} schedulers need {} milestones, got {}",
                                            schedulers_.size(), schedulers_.size() - 1, milestones_.size()));
  for (size_t k = 0; k < schedulers_.size(); ++k) {
    if (!schedulers_[k]) throw std::invalid_argument(fmt::format("SequentialLR: scheduler {} is null", k));
    if (&schedulers_[k]->optimizer() != &optimizer)
      throw std::invalid_argument(
          fmt::format("SequentialLR: scheduler {} ({}) belongs to another optimizer", k, schedulers_[k]->type_name()));
  }
  for (size_t k = 0; k < milestones_.size(); ++k)
    if (milestones_[k] < 1 || (k > 0 && milestones_[k] <= milestones_[k - 1]))
      throw std::invalid_argument(fmt::format("SequentialLR: milestones must be increasing and >= 1, got {} at {}",
                                              milestones_[k], k));
  // As PyTorch: back to the initial rates, undo the first step each
  // scheduler took when it was made, and start the first one again.
  for (size_t g = 0; g < optimizer.param_groups().size(); ++g) optimizer.set_lr(g, *optimizer.param_groups()[g].initial_lr);
  for (auto& s : schedulers_) --s->last_epoch_;
  schedulers_[0]->initial_step();
  last_epoch_ = 0;
  last_lr_ = schedulers_[0]->get_last_lr();
}

std::string SequentialLR::type_name() const {
  std::string name = "SequentialLR(";
  for (size_t k = 0; k < schedulers_.size(); ++k) {
    if (k > 0) name += ',';
    name += schedulers_[k]->type_name();
  }
  return name + ")";
}

void SequentialLR::step() {
  ++last_epoch_;
  const size_t k = std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin();
  LRScheduler& s = *schedulers_[k];
  if (k > 0 && milestones_[k - 1] == last_epoch_)
    s.step_to(0);  // the next scheduler starts at its epoch 0, from its base rates
  else
    s.step();
  last_lr_ = s.get_last_lr();
}

std::vector<double> SequentialLR::get_lr() const { return current_rates(); }
std::vector<double> SequentialLR::closed_form_lr() const { return current_rates(); }

std::vector<std::pair<std::string, double>> SequentialLR::settings() const {
  std::vector<std::pair<std::string, double>> s{{"milestones", static_cast<double>(milestones_.size())}};
  for (size_t k = 0; k < milestones_.size(); ++k)
    s.emplace_back(fmt::format("milestone.{}", k), static_cast<double>(milestones_[k]));
  return s;
}

StateDict SequentialLR::state_dict() const {
  StateDict s = LRScheduler::state_dict();
  for (size_t k = 0; k < schedulers_.size(); ++k)
    for (const auto& [key, value] : schedulers_[k]->state_dict().scalars)
      s.scalars[fmt::format("scheduler.{}.{}", k, key)] = value;
  return s;
}

void SequentialLR::load_state_dict(const StateDict& s) {
  // Check every part before changing any: load into copies of the states first.
  std::vector<StateDict> parts(schedulers_.size());
  for (size_t k = 0; k < schedulers_.size(); ++k) {
    parts[k].kind = schedulers_[k]->type_name();
    const std::string prefix = fmt::format("scheduler.{}.", k);
    for (const auto& [key, value] : s.scalars)
      if (key.compare(0, prefix.size(), prefix) == 0) parts[k].scalars[key.substr(prefix.size())] = value;
  }
  std::vector<StateDict> before;
  for (auto& sch : schedulers_) before.push_back(sch->state_dict());
  const StateDict own = LRScheduler::state_dict();
  try {
    LRScheduler::load_state_dict(s);
    for (size_t k = 0; k < schedulers_.size(); ++k) schedulers_[k]->load_state_dict(parts[k]);
  } catch (...) {
    LRScheduler::load_state_dict(own);
    for (size_t k = 0; k < schedulers_.size(); ++k) schedulers_[k]->load_state_dict(before[k]);
    throw;
  }
}

// ---- make_lr_scheduler ----

LRScheduleKind parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LRScheduleKind::constant;
  if (name == "step") return LRScheduleKind::step;
  if (name == "multistep") return LRScheduleKind::multistep;
  if (name == "cosine") return LRScheduleKind::cosine;
  throw std::invalid_argument(fmt::format("unknown learning-rate schedule '{}': use constant, step, multistep or cosine", name));
}

const char* lr_schedule_name(LRScheduleKind kind) {
  switch (kind) {
    case LRScheduleKind::constant: return "constant";
    case LRScheduleKind::step: return "step";
    case LRScheduleKind::multistep: return "multistep";
    case LRScheduleKind::cosine: return "cosine";
  }
  return "?";
}

std::shared_ptr<LRScheduler> make_lr_scheduler(Optimizer& optimizer, const LRScheduleOptions& o) {
  if (o.warmup_steps < 0) throw std::invalid_argument(fmt::format("warm-up steps must be >= 0, got {}", o.warmup_steps));
  const int64_t main_steps = o.total_steps - o.warmup_steps;
  std::shared_ptr<LRScheduler> warmup;
  if (o.warmup_steps > 0) warmup = std::make_shared<LinearLR>(optimizer, o.warmup_start_factor, 1.0, o.warmup_steps);
  std::shared_ptr<LRScheduler> main;
  switch (o.kind) {
    case LRScheduleKind::constant:
      if (warmup) return warmup;  // LinearLR stays at the full rate after its last step
      main = std::make_shared<ConstantLR>(optimizer, 1.0, 0);
      break;
    case LRScheduleKind::step: main = std::make_shared<StepLR>(optimizer, o.step_size, o.gamma); break;
    case LRScheduleKind::multistep: main = std::make_shared<MultiStepLR>(optimizer, o.milestones, o.gamma); break;
    case LRScheduleKind::cosine:
      if (main_steps < 1)
        throw std::invalid_argument(fmt::format("cosine schedule: {} total steps leave none after {} warm-up steps",
                                                o.total_steps, o.warmup_steps));
      main = std::make_shared<CosineAnnealingLR>(optimizer, main_steps, o.eta_min);
      break;
  }
  if (!warmup) return main;
  return std::make_shared<SequentialLR>(optimizer, std::vector<std::shared_ptr<LRScheduler>>{warmup, main},
                                        std::vector<int64_t>{o.warmup_steps});
}

}  // namespace tq::nn
