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
import os
import sys

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import GoldenFile  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
from fashion_mnist import normalise, read_idx  # noqa: E402


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 32)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(self.relu1(self.fc1(x)))


def train_briefly(model, x_train, y_train, steps):
    """SGD lr 0.05 momentum 0.9 over `steps` batches of 64 of a seeded permutation;
    returns the last loss. The model is left in eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    perm = torch.randperm(len(x_train))
    for step in range(steps):
        idx = perm[step * 64:(step + 1) * 64]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        loss.backward()
        opt.step()
    model.eval()
    return loss.item()


def export_with_outputs(model, stem, example_shape, inputs, description):
    """Writes STEM.onnx (batch dimension dynamic) and STEM.txt holding the inputs
    and PyTorch's outputs on them."""
    path = os.path.join(HERE, stem + ".onnx")
    torch.onnx.export(model, torch.zeros(*example_shape), path, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=13)
    inputs = torch.from_numpy(inputs.copy())
    with torch.no_grad():
        outputs = model(inputs)
    g = GoldenFile(stem + ".txt")
    for line in description:
        g.comment(line)
    g.f32("inputs", inputs, exact=True)
    g.f32("outputs", outputs)
    g.write()
    return os.path.getsize(path)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train = torch.from_numpy(normalise(read_idx("train-images-idx3-ubyte.gz")))
    y_train = torch.from_numpy(read_idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    x_test = normalise(read_idx("t10k-images-idx3-ubyte.gz"))
    model = MLP()
    loss = train_briefly(model, x_train, y_train, 300)  # about a third of an epoch
    size = export_with_outputs(model, "onnx_mlp", (1, 784), x_test[:16], [
        "A 784-32-10 MLP trained briefly by PyTorch %s and exported as onnx_mlp.onnx." % torch.__version__,
        "inputs: the first 16 Fashion-MNIST test images, normalised; outputs: PyTorch's logits."])
    print("wrote onnx_mlp.onnx %d bytes; last training loss %.3f" % (size, loss))


if __name__ == "__main__":
    sys.exit(main())
