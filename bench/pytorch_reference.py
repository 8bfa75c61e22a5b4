#!/usr/bin/python3
"""The PyTorch counterparts of `tinyqat bench` sections (a), (b), (c) and (d).

Same shapes, models, batches and recipe as bench/suite.cpp, timed the same
way (alternating samples, median of per-pair ratios), one thread:

  (a) one quantized Linear (u8 x s8 -> requantized u8, ReLU fused) vs the
      float Linear, at M=1 and M=64 784->256 and M=1024 1024->1024, on every
      quantized engine this PyTorch has (x86 / fbgemm, onednn)
  (b) MLP 784-256-128-10 forward, static int8 (fused Linear+ReLU, default
      qconfig of the best quantized engine this PyTorch has) and dynamic int8
      (quantize_dynamic) vs float
  (c) its train step at batch 64, SGD momentum 0.9: QAT (prepare_qat) vs float
  (d) SimpleNN 10-5-2 train step at batch 1, float and QAT, microseconds

    /usr/bin/python3 bench/pytorch_reference.py [--json]

Needs Debian's python3-torch; the tests and the build never run it.
"""
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.ao.quantization as tq
import torch.nn.intrinsic.quantized as nniq

torch.set_num_threads(1)
torch.manual_seed(0)
ENGINES = torch.backends.quantized.supported_engines
ENGINE = next(e for e in ("x86", "fbgemm", "onednn", "qnnpack") if e in ENGINES)
torch.backends.quantized.engine = ENGINE


def calibrate_inner(fn, seconds=2e-3):
    fn()
    inner = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        dt = time.perf_counter() - t0
        if dt >= seconds or inner >= 1 << 20:
            return inner
        inner = max(inner + 1, int(inner * seconds / max(dt, 1e-9) * 1.1))


def pair(a, b, repeats, inner_a=None, inner_b=None):
    """Alternating samples of a and b: (median s/call of a, of b, median of per-pair b/a)."""
    inner_a = inner_a or calibrate_inner(a)
    inner_b = inner_b or calibrate_inner(b)
    ta, tb, ratios = [], [], []
    for r in range(repeats + 3):
        t0 = time.perf_counter()
        for _ in range(inner_a):
            a()
        t1 = time.perf_counter()
        for _ in range(inner_b):
            b()
        t2 = time.perf_counter()
        if r < 3:
            continue  # warm-up
        ta.append((t1 - t0) / inner_a)
        tb.append((t2 - t1) / inner_b)
        ratios.append(tb[-1] / ta[-1])
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def mlp(fused_stubs=False):
    torch.manual_seed(0)
    layers = [nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)]
    if not fused_stubs:
        return nn.Sequential(*layers)
    return nn.Sequential(tq.QuantStub(), *layers, tq.DeQuantStub())


def fuse(model):
    # Indices of the Linear+ReLU pairs after the QuantStub at index 0.
    return tq.fuse_modules(model, [["1", "2"], ["3", "4"]], inplace=False)


def section_a():
    rows = []
    for engine in [e for e in ("x86", "fbgemm", "onednn") if e in ENGINES]:
        torch.backends.quantized.engine = engine
        for m, k, n in ((1, 784, 256), (64, 784, 256), (1024, 1024, 1024)):
            torch.manual_seed(0)
            linear = nn.Linear(k, n).eval()
            w_q = torch.quantize_per_channel(linear.weight.detach(), linear.weight.detach().abs().amax(1) / 127.5,
                                             torch.zeros(n, dtype=torch.long), 0, torch.qint8)
            qlinear = nniq.LinearReLU(k, n)
            qlinear.set_weight_bias(w_q, linear.bias.detach())
            qlinear.scale, qlinear.zero_point = 0.05, 0
            x = torch.rand(m, k)
            x_q = torch.quantize_per_tensor(x, 1.0 / 127, 0, torch.quint8)
            with torch.no_grad():
                t_int8, t_float, ratio = pair(lambda: qlinear(x_q), lambda: linear(x), 11 if m * k * n > 1e8 else 31)
            rows.append({"engine": engine, "M": m, "K": k, "N": n, "float_us": t_float * 1e6, "int8_us": t_int8 * 1e6,
                         "speedup": ratio})
    torch.backends.quantized.engine = ENGINE
    return rows


def section_b():
    float_model = mlp().eval()
    q = fuse(mlp(fused_stubs=True).eval())
    q.qconfig = tq.get_default_qconfig(ENGINE)
    tq.prepare(q, inplace=True)
    with torch.no_grad():
        for _ in range(4):
            q(torch.rand(64, 784))
    tq.convert(q, inplace=True)
    dynamic = tq.quantize_dynamic(mlp().eval(), {nn.Linear}, dtype=torch.qint8)
    rows = []
    with torch.no_grad():
        for batch in (1, 64, 1000):
            x = torch.rand(batch, 784)
            t_int8, t_float, ratio = pair(lambda: q(x), lambda: float_model(x), 31)
            t_dyn, t_float2, ratio_dyn = pair(lambda: dynamic(x), lambda: float_model(x), 31)
            rows.append({"batch": batch, "float_us": t_float * 1e6, "int8_us": t_int8 * 1e6, "speedup": ratio,
                         "dynamic_us": t_dyn * 1e6, "dynamic_speedup": ratio_dyn})
    return rows


def train_step(model, x, y, momentum):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def section_c():
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    float_step = train_step(mlp().train(), x, y, 0.9)
    qat = fuse(mlp(fused_stubs=True).train())
    qat.qconfig = tq.get_default_qat_qconfig(ENGINE)
    tq.prepare_qat(qat, inplace=True)
    qat_step = train_step(qat, x, y, 0.9)
    t_float, t_qat, ratio = pair(float_step, qat_step, 101, 1, 1)
    return {"batch": 64, "float_step_us": t_float * 1e6, "qat_step_us": t_qat * 1e6, "qat_over_float": ratio}


class SimpleNN(nn.Module):
    def __init__(self, stubs):
        super().__init__()
        self.quant = tq.QuantStub() if stubs else nn.Identity()
        self.fc1, self.relu1 = nn.Linear(10, 5), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(5, 2), nn.ReLU()
        self.dequant = tq.DeQuantStub() if stubs else nn.Identity()

    def forward(self, x):
        return self.dequant(self.relu2(self.fc2(self.relu1(self.fc1(self.quant(x))))))


def section_d():
    x, y = torch.randn(1, 10), torch.tensor([1])
    torch.manual_seed(0)
    float_step = train_step(SimpleNN(False).train(), x, y, 0.0)
    torch.manual_seed(0)
    qat = SimpleNN(True).train()
    qat.qconfig = tq.get_default_qat_qconfig(ENGINE)
    tq.prepare_qat(qat, inplace=True)
    qat_step = train_step(qat, x, y, 0.0)
    t_float, t_qat, ratio = pair(float_step, qat_step, 201)
    return {"float_step_us": t_float * 1e6, "qat_step_us": t_qat * 1e6, "qat_over_float": ratio}


def main():
    out = {"torch": torch.__version__, "engine": ENGINE, "threads": torch.get_num_threads(),
           "linear": section_a(), "mlp_inference": section_b(), "mlp_train_step": section_c(), "simple_nn": section_d()}
    if "--json" in sys.argv[1:]:
        print(json.dumps(out))
        return
    print(f"PyTorch {out['torch']}, quantized engine {ENGINE}, {out['threads']} thread")
    print("(a) one Linear, quantized (u8 x s8 -> u8, ReLU fused) vs float")
    for r in out["linear"]:
        print(f"    {r['engine']:7s} M={r['M']:5d} {r['K']:4d}->{r['N']:<4d}: float {r['float_us']:9.1f} us, "
              f"int8 {r['int8_us']:9.1f} us, int8 speedup {r['speedup']:.2f}x")
    print("(b) MLP 784-256-128-10 forward, static and dynamic int8 vs float")
    for r in out["mlp_inference"]:
        print(f"    batch {r['batch']:5d}: float {r['float_us']:9.1f} us, int8 {r['int8_us']:9.1f} us "
              f"({r['speedup']:.2f}x), dynamic {r['dynamic_us']:9.1f} us ({r['dynamic_speedup']:.2f}x)")
    c = out["mlp_train_step"]
    print(f"(c) train step, batch 64: float {c['float_step_us']:.1f} us, QAT {c['qat_step_us']:.1f} us, "
          f"QAT / float {c['qat_over_float']:.2f}")
    d = out["simple_nn"]
    print(f"(d) SimpleNN step, batch 1: float {d['float_step_us']:.1f} us, QAT {d['qat_step_us']:.1f} us")


if __name__ == "__main__":
    main()
