#!/usr/bin/env python3
"""ONNX import fixture: a small MLP trained and exported by PyTorch.

Writes, next to this script:
  onnx_mlp.onnx     torch.onnx.export of a 784-32-10 MLP (children fc1, relu1,
                    fc2), trained for one short pass over the Fashion-MNIST
                    train set with the same input normalisation as tinyqat
                    ((x / 255 - 0.2860) / 0.3530);
  onnx_mlp.txt      (tinyqat-golden format) 16 Fashion-MNIST test inputs,
                    normalised, and PyTorch's outputs on them.
Run from the repository root with PyTorch 1.13: /usr/bin/python3 tests/golden/generate_onnx.py
Deterministic: fixed seed, one thread.
"""
import gzip
import os
import sys

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import GoldenFile  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def normalise(images):
    # As tinyqat's loader: computed in double, rounded once to float.
    lut = ((np.arange(256, dtype=np.float64) / 255.0 - np.float64(np.float32(MEAN))) /
           np.float64(np.float32(STD))).astype(np.float32)
    return lut[images.reshape(len(images), -1)]


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 32)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(self.relu1(self.fc1(x)))


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train = torch.from_numpy(normalise(read_idx("train-images-idx3-ubyte.gz")))
    y_train = torch.from_numpy(read_idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    x_test = normalise(read_idx("t10k-images-idx3-ubyte.gz"))
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    perm = torch.randperm(len(x_train))
    for step in range(300):  # 300 batches of 64: about a third of an epoch
        idx = perm[step * 64:(step + 1) * 64]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        loss.backward()
        opt.step()
    model.eval()
    path = os.path.join(HERE, "onnx_mlp.onnx")
    torch.onnx.export(model, torch.zeros(1, 784), path, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=13)
    inputs = torch.from_numpy(x_test[:16].copy())
    with torch.no_grad():
        outputs = model(inputs)
    g = GoldenFile("onnx_mlp.txt")
    g.comment("A 784-32-10 MLP trained briefly by PyTorch %s and exported as onnx_mlp.onnx." % torch.__version__)
    g.comment("inputs: the first 16 Fashion-MNIST test images, normalised; outputs: PyTorch's logits.")
    g.f32("inputs", inputs, exact=True)
    g.f32("outputs", outputs)
    g.write()
    print("wrote onnx_mlp.onnx %d bytes; last training loss %.3f" % (os.path.getsize(path), loss.item()))


if __name__ == "__main__":
    sys.exit(main())
