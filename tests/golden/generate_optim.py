#!/usr/bin/env python3
"""Golden data for tinyqat's optimizers, learning-rate schedules and gradient
clipping, produced with PyTorch 1.13.  Run from the repository root:

    /usr/bin/python3 tests/golden/generate_optim.py

It writes optim.txt next to itself, in the format of generate.py (whose
writer it reuses); README.md in this directory documents every tensor name.
The script is deterministic: running it twice gives the same file.

The optimizers are driven by given gradients (no model): each step sets
p.grad to a fixed random tensor and calls step(), so the file pins down the
update rule alone.  The schedules are stepped on a dummy optimizer and the
learning rate of every group is recorded after construction and after each
step().
"""

import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generate import GoldenFile  # noqa: E402  (the shared writer and read-back check)

torch.set_num_threads(1)
lrs = torch.optim.lr_scheduler

STEPS = 6


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------

def make_params(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 4, generator=g)
    b = torch.randn(4, generator=g)
    return [w, b]


def make_grads(seed, params):
    """STEPS gradients per parameter.  Their size changes from step to step
    (large, small, large...) so that amsgrad's running maximum matters."""
    g = torch.Generator().manual_seed(seed)
    scales = [1.0, 0.1, 2.0, 0.05, 0.5, 0.01]
    out = []
    for s in range(STEPS):
        out.append([torch.randn(p.shape, generator=g) * scales[s] for p in params])
    return out


def state_tensors(opt, p):
    st = opt.state[p]
    return {k: v for k, v in st.items() if torch.is_tensor(v) and k != "step"}


def optimizer_case(g, name, make_opt, groups_of, describe, schedule=None):
    """make_opt(param_groups) -> optimizer; groups_of(params) -> param groups."""
    params = [p.clone().requires_grad_(True) for p in make_params(1)]
    grads = make_grads(2, params)
    g.comment("%s: %s" % (name, describe))
    for i, p in enumerate(params):
        g.f32("%s/init/%d" % (name, i), p.detach(), exact=True)
    opt = make_opt(groups_of(params))
    sched = schedule(opt) if schedule else None
    for s in range(STEPS):
        opt.zero_grad()
        for i, p in enumerate(params):
            p.grad = grads[s][i].clone()
            g.f32("%s/step%d/grad/%d" % (name, s, i), grads[s][i], exact=True)
        g.f64("%s/step%d/lr" % (name, s), np.array([grp["lr"] for grp in opt.param_groups]))
        opt.step()
        if sched:
            sched.step()
        for i, p in enumerate(params):
            g.f32("%s/step%d/param/%d" % (name, s, i), p.detach(), exact=True)
    for i, p in enumerate(params):
        for k, v in sorted(state_tensors(opt, p).items()):
            g.f32("%s/state/%d/%s" % (name, i, k), v, exact=True)
        if "step" in opt.state[p]:
            g.i64("%s/state/%d/step" % (name, i), np.array(int(opt.state[p]["step"])))


def one_group(params):
    return params


def two_groups(lr1, wd1):
    # Group 1 (the bias) with its own rate and weight decay, as the LSQ step
    # sizes get in tinyqat's quantizer group.
    return lambda params: [{"params": [params[0]]}, {"params": [params[1]], "lr": lr1, "weight_decay": wd1}]


def gen_optimizers(g):
    g.comment("")
    g.comment("== Optimizers: parameters 0 (3,4) and 1 (4); 6 steps with given gradients.")
    Adam, AdamW, SGD = torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD
    cases = [
        ("adam/plain", lambda p: Adam(p, lr=0.01), one_group, "Adam(lr=0.01)"),
        ("adam/wd", lambda p: Adam(p, lr=0.01, weight_decay=0.1), one_group, "Adam(lr=0.01, weight_decay=0.1)"),
        ("adam/amsgrad_wd", lambda p: Adam(p, lr=0.01, weight_decay=0.1, amsgrad=True), one_group,
         "Adam(lr=0.01, weight_decay=0.1, amsgrad=True)"),
        ("adam/betas_eps", lambda p: Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-3), one_group,
         "Adam(lr=0.05, betas=(0.8, 0.99), eps=1e-3)"),
        ("adamw/default", lambda p: AdamW(p, lr=0.01), one_group, "AdamW(lr=0.01) (weight_decay 0.01)"),
        ("adamw/wd", lambda p: AdamW(p, lr=0.01, weight_decay=0.5), one_group, "AdamW(lr=0.01, weight_decay=0.5)"),
        ("adamw/amsgrad_wd", lambda p: AdamW(p, lr=0.01, weight_decay=0.5, amsgrad=True), one_group,
         "AdamW(lr=0.01, weight_decay=0.5, amsgrad=True)"),
        ("adamw/groups", lambda p: AdamW(p, lr=0.01, weight_decay=0.5), two_groups(0.002, 0.0),
         "AdamW(lr=0.01, weight_decay=0.5); group 1 = parameter 1 with lr=0.002, weight_decay=0"),
        ("sgd/groups", lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01), two_groups(0.02, 0.0),
         "SGD(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01); group 1 = parameter 1 with lr=0.02, "
         "weight_decay=0"),
        ("sgd/nesterov_groups", lambda p: SGD(p, lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.05),
         two_groups(0.3, 0.2),
         "SGD(lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.05); group 1 = parameter 1 with lr=0.3, "
         "weight_decay=0.2"),
    ]
    for name, make, groups, text in cases:
        optimizer_case(g, name, make, groups, text)
    # An optimizer under a schedule stepped once per batch: warm-up then cosine.
    optimizer_case(
        g, "adamw/warmup_cosine", lambda p: AdamW(p, lr=0.01, weight_decay=0.1), two_groups(0.001, 0.0),
        "AdamW(lr=0.01, weight_decay=0.1), group 1 lr=0.001 weight_decay=0, with SequentialLR([LinearLR(0.1, 1, 2), "
        "CosineAnnealingLR(T_max=4)], milestones=[2]) stepped after every optimizer step",
        schedule=lambda o: lrs.SequentialLR(o, [lrs.LinearLR(o, 0.1, 1.0, 2), lrs.CosineAnnealingLR(o, 4)], [2]))


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------

def schedule_case(g, name, steps, make, describe):
    # Two groups with base rates 0.1 and 0.02.
    p0 = torch.zeros(1, requires_grad=True)
    p1 = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([{"params": [p0]}, {"params": [p1], "lr": 0.02}], lr=0.1)
    sched = make(opt)
    rows = [[grp["lr"] for grp in opt.param_groups]]
    last = [list(sched.get_last_lr())]
    for _ in range(steps):
        opt.step()  # (no gradients: only keeps PyTorch from warning)
        sched.step()
        rows.append([grp["lr"] for grp in opt.param_groups])
        last.append(list(sched.get_last_lr()))
    assert rows == last, name  # get_last_lr() is what the groups hold
    g.comment("%s: %s, %d steps" % (name, describe, steps))
    g.i64("%s/steps" % name, np.array(steps))
    g.f64("%s/lr" % name, np.array(rows))


def gen_schedules(g):
    g.comment("")
    g.comment("== Schedules: SGD with two groups, lr 0.1 and 0.02; <name>/lr is (steps+1, 2): the rates after")
    g.comment("   construction (row 0) and after each step() (row k).")
    cases = [
        ("step", 12, lambda o: lrs.StepLR(o, step_size=3, gamma=0.5), "StepLR(step_size=3, gamma=0.5)"),
        ("multistep", 12, lambda o: lrs.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3),
         "MultiStepLR(milestones=[2, 5, 5, 9], gamma=0.3) (5 listed twice)"),
        ("cosine", 25, lambda o: lrs.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
         "CosineAnnealingLR(T_max=10, eta_min=0.001), past T_max (it rises again)"),
        ("cosine_eta0", 9, lambda o: lrs.CosineAnnealingLR(o, T_max=7), "CosineAnnealingLR(T_max=7)"),
        ("linear_warmup", 8, lambda o: lrs.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=4),
         "LinearLR(start_factor=0.1, end_factor=1.0, total_iters=4)"),
        ("linear_decay", 8, lambda o: lrs.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=5),
         "LinearLR(start_factor=1.0, end_factor=0.2, total_iters=5)"),
        ("constant", 6, lambda o: lrs.ConstantLR(o, factor=0.5, total_iters=3), "ConstantLR(factor=0.5, total_iters=3)"),
        ("warmup_cosine", 25,
         lambda o: lrs.SequentialLR(o, [lrs.LinearLR(o, 0.01, 1.0, 5), lrs.CosineAnnealingLR(o, T_max=15)], [5]),
         "SequentialLR([LinearLR(0.01, 1.0, 5), CosineAnnealingLR(T_max=15)], milestones=[5])"),
        ("warmup_step", 14,
         lambda o: lrs.SequentialLR(o, [lrs.LinearLR(o, 0.25, 1.0, 3), lrs.StepLR(o, step_size=4, gamma=0.5)], [3]),
         "SequentialLR([LinearLR(0.25, 1.0, 3), StepLR(step_size=4, gamma=0.5)], milestones=[3])"),
        ("warmup_multistep", 12,
         lambda o: lrs.SequentialLR(o, [lrs.LinearLR(o, 0.5, 1.0, 2), lrs.MultiStepLR(o, [0, 3, 6], 0.1)], [2]),
         "SequentialLR([LinearLR(0.5, 1.0, 2), MultiStepLR(milestones=[0, 3, 6], gamma=0.1)], milestones=[2])"),
        ("three_part", 16,
         lambda o: lrs.SequentialLR(o, [lrs.ConstantLR(o, 0.1, 2), lrs.LinearLR(o, 0.5, 1.0, 3),
                                        lrs.CosineAnnealingLR(o, T_max=6, eta_min=0.005)], [2, 6]),
         "SequentialLR([ConstantLR(0.1, 2), LinearLR(0.5, 1.0, 3), CosineAnnealingLR(T_max=6, eta_min=0.005)], "
         "milestones=[2, 6])"),
    ]
    for name, steps, make, text in cases:
        schedule_case(g, "schedule/" + name, steps, make, text)


# ---------------------------------------------------------------------------
# Gradient clipping
# ---------------------------------------------------------------------------

def clip_case(g, name, grads, max_norm, norm_type):
    params = [torch.zeros(t.shape, requires_grad=True) for t in grads]
    for p, t in zip(params, grads):
        p.grad = t.clone()
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    g.comment("%s: clip_grad_norm_(max_norm=%s, norm_type=%s)" % (name, max_norm, norm_type))
    for i, t in enumerate(grads):
        g.f32("%s/grad/%d" % (name, i), t, exact=True)
    g.f64("%s/max_norm" % name, np.array(max_norm))
    g.f64("%s/norm_type" % name, np.array(norm_type))
    g.f32("%s/total_norm" % name, total, exact=True)
    for i, p in enumerate(params):
        g.f32("%s/clipped/%d" % (name, i), p.grad, exact=True)


def gen_clip(g):
    g.comment("")
    g.comment("== clip_grad_norm_ over three gradients (3,4), (4), (2,2,3); <name>/clipped/<i> is each gradient after.")
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(3, 4, generator=gen), torch.randn(4, generator=gen) * 3, torch.randn(2, 2, 3, generator=gen)]
    clip_case(g, "clip/l2_clipped", grads, 1.0, 2.0)
    clip_case(g, "clip/l2_unclipped", grads, 100.0, 2.0)
    clip_case(g, "clip/inf_clipped", grads, 0.5, math.inf)
    clip_case(g, "clip/l1_clipped", grads, 2.0, 1.0)
    clip_case(g, "clip/l3_clipped", grads, 0.75, 3.0)


def main():
    g = GoldenFile("optim.txt")
    g.comment("Optimizers (Adam, AdamW, SGD with parameter groups), learning-rate schedules and clip_grad_norm_,")
    g.comment("PyTorch %s.  See README.md." % torch.__version__)
    gen_optimizers(g)
    gen_schedules(g)
    gen_clip(g)
    g.write()


if __name__ == "__main__":
    main()
