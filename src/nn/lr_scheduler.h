// Learning-rate schedules with the semantics of torch.optim.lr_scheduler in
// PyTorch 1.13 (docs/optim.md §4): each sets the rate of every parameter
// group of an optimizer, once per step() — call step() after each epoch or
// after each batch, as the schedule is counted.
//
//   nn::AdamW opt(model.parameters(), {.lr = 1e-3});
//   auto warmup = std::make_shared<nn::LinearLR>(opt, 0.01, 1.0, 500);
//   auto cosine = std::make_shared<nn::CosineAnnealingLR>(opt, 9500);
//   nn::SequentialLR schedule(opt, {warmup, cosine}, {500});   // warm-up, then cosine
//   for (batch ...) { ...; opt.step(); schedule.step(); }
//
// Like PyTorch's, the schedules are chainable: step() computes the new rate
// from the group's current one (PyTorch's get_lr), so the numbers match
// PyTorch's to the last bit, and a schedule's state (last_epoch) with the
// optimizer's (the groups' rates) resumes a run exactly. Each schedule's
// constructor takes its first step (epoch 0), as PyTorch's does.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nn/optimizer.h"

namespace tq::nn {

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  // "StepLR", "CosineAnnealingLR", ...; SequentialLR names its parts.
  virtual std::string type_name() const = 0;
  // Advances the count by one and sets the groups' rates.
  virtual void step();
  // The rates the last step set, one per group.
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  // Steps taken since epoch 0 (PyTorch's last_epoch; 0 right after construction).
  int64_t last_epoch() const { return last_epoch_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  Optimizer& optimizer() const { return *optimizer_; }

  // last_epoch, the base and last rates, and the settings (checked on load).
  virtual StateDict state_dict() const;
  // Restores a state saved by a schedule of the same kind and settings over
  // an optimizer with as many groups. The groups' current rates belong to the
  // optimizer's state: restore both.
  virtual void load_state_dict(const StateDict& state);

 protected:
  // Sets each group's initial_lr if unset (the first schedule attached) and
  // takes base_lrs from them. Subclasses call initial_step() at the end of
  // their constructor (the base cannot: its get_lr() is not yet theirs).
  explicit LRScheduler(Optimizer& optimizer);
  void initial_step();

  // The new rates from the groups' current ones at last_epoch (PyTorch's get_lr).
  virtual std::vector<double> get_lr() const = 0;
  // The rates at last_epoch from base_lrs alone (PyTorch's _get_closed_form_lr).
  virtual std::vector<double> closed_form_lr() const = 0;
  // The settings that define the schedule, saved and checked on load.
  virtual std::vector<std::pair<std::string, double>> settings() const = 0;
  // PyTorch's step(epoch): jumps to `epoch` with the closed form (SequentialLR uses it at milestones).
  void step_to(int64_t epoch);
  void set_rates(const std::vector<double>& rates);
  std::vector<double> current_rates() const;

  Optimizer* optimizer_;
  int64_t last_epoch_ = -1;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;

  friend class SequentialLR;
};

// Multiplies the rate by gamma every step_size steps.
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);
  std::string type_name() const override { return "StepLR"; }

 protected:
  std::vector<double> get_lr() const override;
  std::vector<double> closed_form_lr() const override;
  std::vector<std::pair<std::string, double>> settings() const override;

 private:
  int64_t step_size_;
  double gamma_;
};

// Multiplies the rate by gamma at each milestone (a milestone listed twice counts twice).
class MultiStepLR : public LRScheduler {
 public:
  MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma = 0.1);
  std::string type_name() const override { return "MultiStepLR"; }

 protected:
  std::vector<double> get_lr() const override;
  std::vector<double> closed_form_lr() const override;
  std::vector<std::pair<std::string, double>> settings() const override;

 private:
  std::vector<int64_t> milestones_;  // sorted
  double gamma_;
};

// Half a cosine from the base rate down to eta_min over T_max steps:
//   lr_t = eta_min + (base - eta_min) (1 + cos(pi t / T_max)) / 2     (docs/optim.md eq. 8)
// (and back up after T_max, as PyTorch's, which has no restarts here).
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min = 0.0);
  std::string type_name() const override { return "CosineAnnealingLR"; }

 protected:
  std::vector<double> get_lr() const override;
  std::vector<double> closed_form_lr() const override;
  std::vector<std::pair<std::string, double>> settings() const override;

 private:
  int64_t T_max_;
  double eta_min_;
};

// A factor moving linearly from start_factor to end_factor over total_iters
// steps, then staying: with start_factor small, the linear warm-up (eq. 9).
class LinearLR : public LRScheduler {
 public:
  LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3, double end_factor = 1.0, int64_t total_iters = 5);
  std::string type_name() const override { return "LinearLR"; }

 protected:
  std::vector<double> get_lr() const override;
  std::vector<double> closed_form_lr() const override;
  std::vector<std::pair<std::string, double>> settings() const override;

 private:
  double start_factor_, end_factor_;
  int64_t total_iters_;
};

// The rate times `factor` for the first total_iters steps, then the base rate.
// With factor 1 it leaves the rate alone: the "constant" schedule.
class ConstantLR : public LRScheduler {
 public:
  ConstantLR(Optimizer& optimizer, double factor = 1.0 / 3, int64_t total_iters = 5);
  std::string type_name() const override { return "ConstantLR"; }

 protected:
  std::vector<double> get_lr() const override;
  std::vector<double> closed_form_lr() const override;
  std::vector<std::pair<std::string, double>> settings() const override;

 private:
  double factor_;
  int64_t total_iters_;
};

// Runs schedulers[0] until milestones[0], then schedulers[1] (restarted at its
// epoch 0) until milestones[1], and so on, as PyTorch's SequentialLR.
class SequentialLR : public LRScheduler {
 public:
  SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
               std::vector<int64_t> milestones);
  std::string type_name() const override;
  void step() override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;
  const std::vector<std::shared_ptr<LRScheduler>>& schedulers() const { return schedulers_; }

 protected:
  std::vector<double> get_lr() const override;
  std::vector<double> closed_form_lr() const override;
  std::vector<std::pair<std::string, double>> settings() const override;

 private:
  std::vector<std::shared_ptr<LRScheduler>> schedulers_;
  std::vector<int64_t> milestones_;
};

// ---- Building a schedule from a few settings (what a command line asks for) ----

enum class LRScheduleKind { constant, step, multistep, cosine };
// "constant" | "step" | "multistep" | "cosine"; throws naming the text otherwise.
LRScheduleKind parse_lr_schedule(const std::string& name);
const char* lr_schedule_name(LRScheduleKind kind);

struct LRScheduleOptions {
  LRScheduleKind kind = LRScheduleKind::constant;
  // The schedule's length in steps, warm-up included (cosine: it ends at eta_min there).
  int64_t total_steps = 0;
  // Linear warm-up from warmup_start_factor * lr to lr over the first warmup_steps steps (0: none).
  int64_t warmup_steps = 0;
  double warmup_start_factor = 0.01;
  int64_t step_size = 1;                // step: every step_size steps after warm-up
  std::vector<int64_t> milestones = {};  // multistep: counted after warm-up
  double gamma = 0.1;                   // step, multistep
  double eta_min = 0.0;                 // cosine
};

// The schedule, with its warm-up: SequentialLR(LinearLR, main) with the
// milestone at warmup_steps, or the main schedule alone without warm-up.
// Counts in whatever unit the caller steps it (batches or epochs).
std::shared_ptr<LRScheduler> make_lr_scheduler(Optimizer& optimizer, const LRScheduleOptions& options);

}  // namespace tq::nn
