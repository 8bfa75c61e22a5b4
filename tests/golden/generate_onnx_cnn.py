#!/usr/bin/env python3
"""ONNX import fixture: a small CNN trained and exported by PyTorch.

Writes, next to this script:
  onnx_cnn.onnx     torch.onnx.export (opset 13) of a CNN for 28x28 images with the CNN
                    operators the importer reads: Conv (stride, padding,
                    dilation, groups), BatchNormalization, Relu, Clip (ReLU6),
                    MaxPool, AveragePool, GlobalAveragePool, Flatten, Gemm;
                    trained for a short pass over the Fashion-MNIST train set
                    with tinyqat's input normalisation;
  onnx_cnn.txt      (tinyqat-golden format) 16 Fashion-MNIST test images,
                    normalised, (16, 1, 28, 28), and PyTorch's outputs.
Run from the repository root with PyTorch 1.13: /usr/bin/python3 tests/golden/generate_onnx_cnn.py
Deterministic: fixed seed, one thread.
"""
import os
import sys

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate_onnx import export_with_outputs, normalise, read_idx, train_briefly  # noqa: E402


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)                                  # 14x14
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)  # depthwise
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU6()
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2)  # 7x7
        self.relu3 = nn.ReLU()
        self.bn3 = nn.BatchNorm2d(16)  # after a ReLU: not folded into a Conv
        self.pool2 = nn.AvgPool2d(2)                                  # 3x3
        self.conv4 = nn.Conv2d(16, 32, 1)
        self.relu4 = nn.ReLU()
        self.pool3 = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.pool2(self.bn3(self.relu3(self.conv3(x))))
        x = self.pool3(self.relu4(self.conv4(x)))
        return self.fc(self.flatten(x))


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train = torch.from_numpy(normalise(read_idx("train-images-idx3-ubyte.gz"))).reshape(-1, 1, 28, 28)
    y_train = torch.from_numpy(read_idx("train-labels-idx1-ubyte.gz").astype("int64"))
    x_test = normalise(read_idx("t10k-images-idx3-ubyte.gz")).reshape(-1, 1, 28, 28)
    model = CNN()
    loss = train_briefly(model, x_train, y_train, 200)
    # PyTorch folds bn1 and bn2 into their convolutions; bn3 (after a ReLU)
    # stays a BatchNormalization node. A padded AvgPool2d would be written as
    # Pad + AveragePool, which the importer does not read: the pool here has
    # no padding.
    size = export_with_outputs(model, "onnx_cnn", (1, 1, 28, 28), x_test[:16], [
        "A small CNN trained briefly by PyTorch %s and exported as onnx_cnn.onnx." % torch.__version__,
        "inputs: the first 16 Fashion-MNIST test images, normalised, (16, 1, 28, 28); outputs: PyTorch's logits."])
    print("wrote onnx_cnn.onnx %d bytes; last training loss %.3f" % (size, loss))


if __name__ == "__main__":
    sys.exit(main())
