#!/usr/bin/env python3
"""Golden data for the QAT convolution with BatchNorm (PyTorch 1.13).

Writes qat_conv.txt next to this script (tinyqat-golden format, README.md):
for ConvBn2d, ConvBnReLU2d and ConvBnReLU62d in training mode (BN folding
simulated: the weight scaled by gamma / sqrt(running_var + eps) before its
fake quant, the output scaled back, BatchNorm with batch statistics), one
forward and backward from a fake-quantized input, with

  weight fake quant:     per-channel symmetric i8 -128..127, min/max observer
  activation fake quant: per-tensor affine u8 0..255, min/max observer

Stored per case: input x (before its fake quant), conv weight / bias, BN
gamma / beta / running statistics before, the upstream gradient gout; the
output, the gradients of x, weight, bias, gamma and beta, and the running
statistics after the step.

Run from the repository root with Debian's PyTorch:
    /usr/bin/python3 tests/golden/generate_qat_conv.py
Deterministic: fixed seeds, one thread.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.intrinsic.qat as nniqat
from torch.ao.quantization import FakeQuantize, MinMaxObserver, PerChannelMinMaxObserver, QConfig

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import GoldenFile  # noqa: E402  (the shared text writer)

torch.set_num_threads(1)


def qconfig():
    act = FakeQuantize.with_args(observer=MinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                                 qscheme=torch.per_tensor_affine)
    weight = FakeQuantize.with_args(observer=PerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfig(activation=act, weight=weight)


# name: (class, N, C, H, W, OC, kernel, stride, padding, groups, bias, zero_gamma_channel)
CASES = [
    ("convbn", nniqat.ConvBn2d, 2, 3, 6, 5, 4, 3, 1, 1, 1, False, None),
    ("convbn_bias", nniqat.ConvBn2d, 2, 3, 6, 6, 4, 3, 2, 1, 1, True, None),
    ("convbnrelu", nniqat.ConvBnReLU2d, 2, 2, 5, 5, 3, 3, 1, 1, 1, True, None),
    ("convbnrelu6_depthwise", nniqat.ConvBn2d, 1, 4, 6, 6, 4, 3, 1, 1, 4, False, None),
]
# A BN weight of exactly 0 is left out: PyTorch 1.13 divides by it and the
# output is NaN. The C++ tests check that tinyqat gives beta there instead.


def gen(g):
    for (name, cls, n, c, h, w, oc, k, s, p, groups, bias, zero_gamma) in CASES:
        torch.manual_seed(len(name))
        relu6 = name.startswith("convbnrelu6")
        conv = nn.Conv2d(c, oc, k, stride=s, padding=p, groups=groups, bias=bias)
        bn = nn.BatchNorm2d(oc)
        with torch.no_grad():
            bn.weight.copy_(torch.rand(oc) + 0.5)
            bn.bias.copy_(torch.randn(oc) * 0.2)
            bn.running_mean.copy_(torch.randn(oc) * 0.1)
            bn.running_var.copy_(torch.rand(oc) + 0.5)
            if zero_gamma is not None:
                bn.weight[zero_gamma] = 0.0
        qc = qconfig()
        m = cls(c, oc, k, stride=s, padding=p, groups=groups, bias=bias, qconfig=qc)
        with torch.no_grad():
            m.weight.copy_(conv.weight)
            if bias:
                m.bias.copy_(conv.bias)
            m.bn.weight.copy_(bn.weight)
            m.bn.bias.copy_(bn.bias)
            m.bn.running_mean.copy_(bn.running_mean)
            m.bn.running_var.copy_(bn.running_var)
        m.train()
        x = torch.randn(n, c, h, w)
        g.f32(name + "/x", x)
        g.f32(name + "/weight", m.weight.detach())
        if bias:
            g.f32(name + "/bias", m.bias.detach())
        g.f32(name + "/gamma", m.bn.weight.detach())
        g.f32(name + "/beta", m.bn.bias.detach())
        g.f32(name + "/running_mean", m.bn.running_mean)
        g.f32(name + "/running_var", m.bn.running_var)
        input_fq = qc.activation()
        xq = x.clone().requires_grad_(True)
        y = m(input_fq(xq))
        if relu6:  # PyTorch has no ConvBnReLU6 module: ConvBn2d's output through relu6
            y = torch.nn.functional.relu6(y)
        out_fq = qc.activation()
        y = out_fq(y)
        gout = torch.randn_like(y)
        (y * gout).sum().backward()
        g.f32(name + "/gout", gout)
        g.f32(name + "/out", y.detach())
        g.f32(name + "/grad/x", xq.grad)
        g.f32(name + "/grad/weight", m.weight.grad)
        if bias:
            g.f32(name + "/grad/bias", m.bias.grad)
        g.f32(name + "/grad/gamma", m.bn.weight.grad)
        g.f32(name + "/grad/beta", m.bn.bias.grad)
        g.f32(name + "/running_mean_after", m.bn.running_mean)
        g.f32(name + "/running_var_after", m.bn.running_var)


def main():
    print("torch", torch.__version__)
    g = GoldenFile("qat_conv.txt")
    g.comment("QAT ConvBn2d / ConvBnReLU2d in training mode, PyTorch %s: see generate_qat_conv.py." % torch.__version__)
    gen(g)
    g.write()


if __name__ == "__main__":
    sys.exit(main())
