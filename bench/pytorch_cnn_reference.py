#!/usr/bin/python3
"""The PyTorch counterparts of bench/bench_cnn.cpp, one thread:

  the same CNN (conv 1->32 + BN + ReLU, max-pool, conv 32->64 + BN + ReLU,
  max-pool, Linear 3136->128 + ReLU, Linear 128->10) train step at batch 64,
  SGD lr 0.01 momentum 0.9; and torchvision's mobilenet_v2 forward on one
  1x3x224x224 image in eval mode. Median of repeated samples, wall clock and
  thread CPU time, like bench_util.h.

    /usr/bin/python3 bench/pytorch_cnn_reference.py

Needs Debian's python3-torch and python3-torchvision; the tests never run it.
"""
import statistics
import time

import torch
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


if __name__ == "__main__":
    main()
