#!/usr/bin/python3
"""The PyTorch counterparts of bench/bench_cnn.cpp, one thread:

  the same CNN (conv 1->32 + BN + ReLU, max-pool, conv 32->64 + BN + ReLU,
  max-pool, Linear 3136->128 + ReLU, Linear 128->10) train step at batch 64,
  SGD lr 0.01 momentum 0.9; and torchvision's mobilenet_v2 forward on one
  1x3x224x224 image in eval mode. Median of repeated samples, wall clock and
  thread CPU time, like bench_util.h.

    /usr/bin/python3 bench/pytorch_cnn_reference.py

With --int8, the counterpart of bench/bench_cnn_int8.cpp instead: that CNN
trained for 100 SGD steps on Fashion-MNIST, then QAT as tinyqat does it
(QuantStub / DeQuantStub around it, Conv+BN+ReLU and Linear+ReLU fused with
fuse_modules_qat, prepare_qat with the default QAT qconfig of the onednn
engine, 50 steps with BN statistics frozen after half and observers after
80%, convert), and the inference of the float and the int8 model at batch
64 and 1 on test images, the two alternating sample after sample. With
--tinyqat PATH (the bench_cnn_int8 program) the same is measured side by
side in one run, alternating: PyTorch, tinyqat, PyTorch, tinyqat, ...,
PyTorch (--rounds tinyqat runs, default 3). Each tinyqat run is compared
with the mean of the two PyTorch runs that bracket it, and the table gives
the medians over the rounds: on a shared machine the load changes from
minute to minute, and only runs that close together see the same load.
Beside the medians, each round compares the fastest samples (wall clock)
of the two sides: the sample least disturbed by other jobs.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/pytorch_cnn_reference.py --int8 \
        --tinyqat build/bench/bench_cnn_int8 [--rounds 3]

Needs Debian's python3-torch and python3-torchvision; the tests never run it.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_reference import calibrate_inner as _calibrate_inner  # noqa: E402
import torch.nn as nn
import torchvision

torch.set_num_threads(1)
torch.manual_seed(0)


def measure(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        c1, t1 = time.thread_time(), time.perf_counter()
        wall.append(t1 - t0)
        cpu.append(c1 - c0)
    return statistics.median(wall), statistics.median(cpu)


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))


def main():
    print("torch", torch.__version__, "threads", torch.get_num_threads())
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(64, 1, 28, 28)
    y = torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    wall, cpu = measure(step, 21, 5)
    print("cnn train step, batch 64: %.2f ms (thread CPU %.2f ms)" % (wall * 1e3, cpu * 1e3))

    mobilenet = torchvision.models.mobilenet_v2().eval()
    image = torch.randn(1, 3, 224, 224)

    def forward():
        with torch.no_grad():
            mobilenet(image)
    wall, cpu = measure(forward, 15, 3)
    print("mobilenet_v2 forward, 1x3x224x224: %.2f ms (thread CPU %.2f ms)" % (wall * 1e3, cpu * 1e3))


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from fashion_mnist import normalise, read_idx  # noqa: E402  (the loader's normalisation, bit for bit)


def fashion(split):
    """Images (N, 1, 28, 28) normalised as tinyqat's DataLoader, labels (N)."""
    x = normalise(read_idx(split + "-images-idx3-ubyte.gz")).reshape(-1, 1, 28, 28)
    y = read_idx(split + "-labels-idx1-ubyte.gz")
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


def sgd_steps(model, x, y, steps, before_step=None):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for s in range(steps):
        if before_step:
            before_step(s / steps)
        idx = torch.randint(0, x.shape[0], (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


class Quantized(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.body = body
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


def int8_models():
    """(float model, QAT-converted int8 model), both in eval mode."""
    import copy
    import torch.ao.quantization as tq
    torch.backends.quantized.engine = "onednn"
    x, y = fashion("train")
    model = cnn()
    sgd_steps(model, x, y, 100)
    q = Quantized(copy.deepcopy(model)).train()
    tq.fuse_modules_qat(q, [["body.0", "body.1", "body.2"], ["body.4", "body.5", "body.6"], ["body.9", "body.10"]],
                        inplace=True)
    q.qconfig = tq.get_default_qat_qconfig("onednn")
    tq.prepare_qat(q, inplace=True)
    state = {"bn": False, "obs": False}

    def schedule(done):
        if not state["bn"] and done >= 0.5:
            q.apply(torch.nn.intrinsic.qat.freeze_bn_stats)
            state["bn"] = True
        if not state["obs"] and done >= 0.8:
            q.apply(tq.disable_observer)
            state["obs"] = True
    sgd_steps(q, x, y, 50, schedule)
    q.eval()
    tq.convert(q, inplace=True)
    return model.eval(), q


def calibrate_inner(fn, seconds=4e-3):
    """pytorch_reference.py's inner-loop calibration, with a 4 ms target."""
    return _calibrate_inner(fn, seconds)


def pair(a, b, repeats):
    """Alternating samples of a and b, as bench_util.h's measure_pair: medians
    (s per call) of a and b, wall and thread CPU, the fastest sample (wall),
    and the medians of the per-pair ratios a / b."""
    ia, ib = calibrate_inner(a), calibrate_inner(b)
    wa, wb, ca, cb, rw, rc = [], [], [], [], [], []
    for r in range(repeats + 3):
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(ia):
            a()
        t1, c1 = time.perf_counter(), time.thread_time()
        for _ in range(ib):
            b()
        t2, c2 = time.perf_counter(), time.thread_time()
        if r < 3:
            continue
        wa.append((t1 - t0) / ia)
        wb.append((t2 - t1) / ib)
        ca.append((c1 - c0) / ia)
        cb.append((c2 - c1) / ib)
        rw.append(wa[-1] / wb[-1])
        rc.append(ca[-1] / cb[-1])
    m = statistics.median
    return {"float": (m(wa), m(ca), min(wa)), "int8": (m(wb), m(cb), min(wb)), "ratio": (m(rw), m(rc))}


def measure_int8(model, q, test_x, repeats):
    out = {}
    with torch.no_grad():
        for batch in (64, 1):
            x = test_x[:batch].contiguous()
            out[batch] = pair(lambda: model(x), lambda: q(x), repeats)
    return out


def main_int8(argv):
    repeats = 21
    tinyqat = argv[argv.index("--tinyqat") + 1] if "--tinyqat" in argv else None
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3
    print("torch", torch.__version__, "threads", torch.get_num_threads(), "engines",
          torch.backends.quantized.supported_engines, "using onednn")
    print("load average", os.getloadavg())
    model, q = int8_models()
    test_x, test_y = fashion("t10k")
    with torch.no_grad():
        fl = (model(test_x[:2000]).argmax(1) == test_y[:2000]).float().mean().item() * 100
        i8 = (q(test_x[:2000]).argmax(1) == test_y[:2000]).float().mean().item() * 100
    print("accuracy on 2000 test images: float %.2f%%, int8 %.2f%%" % (fl, i8))
    runs = [measure_int8(model, q, test_x, repeats)]
    tq_runs = []
    for r in range(rounds if tinyqat else 0):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        res = subprocess.run([tinyqat, "--json", "--repeats", str(repeats)], env=env, check=True,
                             capture_output=True, text=True)
        tq_runs.append(json.loads(res.stdout))
        runs.append(measure_int8(model, q, test_x, repeats))
        print("round %d of %d done, load average %s" % (r + 1, rounds, os.getloadavg()))
    print("load average", os.getloadavg())
    m = statistics.median

    def pytorch(batch, side, i):
        return m([r[batch][side][i] for r in runs])

    def bracketed(batch, i):
        """PyTorch int8 around each tinyqat run: the mean of the runs just before and after it."""
        return [(runs[k][batch]["int8"][i] + runs[k + 1][batch]["int8"][i]) / 2 for k in range(len(tq_runs))]

    def fastest(batch):
        """The fastest PyTorch int8 sample (wall) of the runs around each tinyqat run."""
        return [min(runs[k][batch]["int8"][2], runs[k + 1][batch]["int8"][2]) for k in range(len(tq_runs))]
    print("\n| batch | PyTorch float | PyTorch int8 | PyTorch int8 speed-up |%s" %
          (" tinyqat float | tinyqat int8 | tinyqat int8 speed-up | tinyqat int8 vs PyTorch int8 |" if tq_runs else ""))
    print("|---|---|---|---|%s" % ("---|---|---|---|" if tq_runs else ""))
    for batch in (64, 1):
        pf, pi = pytorch(batch, "float", 0), pytorch(batch, "int8", 0)
        pfc, pic = pytorch(batch, "float", 1), pytorch(batch, "int8", 1)
        row = "| %d | %.1f us (CPU %.1f) | %.1f us (CPU %.1f) | %.2fx (CPU %.2fx) |" % (
            batch, pf * 1e6, pfc * 1e6, pi * 1e6, pic * 1e6, pytorch(batch, "ratio", 0), pytorch(batch, "ratio", 1))
        if tq_runs:
            t = [o["batch_%d" % batch] for o in tq_runs]
            ti = [x["int8"]["median_s"] for x in t]
            tic = [x["int8"]["cpu_median_s"] for x in t]
            vs = [p / x for p, x in zip(bracketed(batch, 0), ti)]
            vs_cpu = [p / x for p, x in zip(bracketed(batch, 1), tic)]
            row += " %.1f us (CPU %.1f) | %.1f us (CPU %.1f) | %.2fx (CPU %.2fx) | %.2fx (CPU %.2fx) |" % (
                m([x["float"]["median_s"] for x in t]) * 1e6, m([x["float"]["cpu_median_s"] for x in t]) * 1e6,
                m(ti) * 1e6, m(tic) * 1e6, m([x["float_over_int8"] for x in t]),
                m([x["float_over_int8_cpu"] for x in t]), m(vs), m(vs_cpu))
            best = [p / x["int8"]["min_s"] for p, x in zip(fastest(batch), t)]
            row += " rounds: %s wall; %s CPU; fastest samples %s (median %.2fx)" % (
                ", ".join("%.2fx" % v for v in vs), ", ".join("%.2fx" % v for v in vs_cpu),
                ", ".join("%.2fx" % v for v in best), m(best))
        print(row)


if __name__ == "__main__":
    if "--int8" in sys.argv:
        main_int8(sys.argv)
    else:
        main()
