#!/usr/bin/python3
"""QAT from an imported model against QAT from a native one.

Trains the README's float MLP 784-256-128-10 in PyTorch with the README's
recipe (batch 64, SGD lr 0.01 momentum 0.9, seed 0, one thread, the same input
normalisation as tinyqat's loader), prints its float test accuracy and writes
it with torch.onnx.export. Then, outside this script:

    ./build/tinyqat import --onnx OUT.onnx --out imported.safetensors
    ./build/tinyqat eval   --model imported.safetensors
    ./build/tinyqat qat    --from imported.safetensors --epochs 1 --qconfig x86 --out imported_qat.safetensors
    ./build/tinyqat eval   --model imported_qat.safetensors

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/pytorch_import_qat.py [--epochs 5] [--out mlp_torch.onnx]

Needs Debian's python3-torch; the tests and the build never run it.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from fashion_mnist import normalise, read_idx  # noqa: E402


class MLP(nn.Module):
    """Children named as tinyqat's MLP, so the imported model reads the same."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(256, 128)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default="mlp_torch.onnx")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train = torch.from_numpy(normalise(read_idx("train-images-idx3-ubyte.gz")))
    y_train = torch.from_numpy(read_idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    x_test = torch.from_numpy(normalise(read_idx("t10k-images-idx3-ubyte.gz")))
    y_test = torch.from_numpy(read_idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train))
        for start in range(0, len(x_train), 64):
            idx = perm[start:start + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
        model.eval()
        print("epoch %d: last loss %.4f, test accuracy %.2f%% (%.0f s)" %
              (epoch + 1, loss.item(), 100 * accuracy(model, x_test, y_test), time.time() - t0), flush=True)
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 784), args.out, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=13)
    print("PyTorch %s float accuracy %.2f%%; wrote %s" %
          (torch.__version__, 100 * accuracy(model, x_test, y_test), args.out))


if __name__ == "__main__":
    sys.exit(main())
