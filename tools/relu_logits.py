#!/usr/bin/env python3
"""Why a ReLU on the logits hurts (docs/lesson.md §3), measured with numpy.

The SimpleNN of the lesson, 10 -> 5 -> 2, trained with plain SGD and
cross-entropy on a small two-class task (class 1 when x0 + x1 > x2 - x3), 20
times from different random initial weights, once with the lesson's
relu(fc2(...)) and once with the logits left alone.

    /usr/bin/python3 tools/relu_logits.py                 # about 10 s
    /usr/bin/python3 tools/relu_logits.py --one-example   # only the one-example arithmetic
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: one thread, no spinning
import numpy as np  # noqa: E402


def one_example():
    z = np.array([-1.2, 0.4])  # logits, target class 0
    for name, out, grad_mask in (("raw logits", z, np.ones(2)), ("relu(logits)", np.maximum(z, 0), (z > 0) * 1.0)):
        p = np.exp(out - out.max())
        p /= p.sum()
        loss = -np.log(p[0])
        grad = (p - np.array([1.0, 0.0])) * grad_mask + 0.0  # dL/dz through the ReLU (+ 0.0: no -0)
        print(f"  {name:13s} outputs {np.round(out, 3)}  loss {loss:.3f}  dL/dz {np.round(grad, 3)}")
    print(f"  with relu, the loss of this example cannot fall below ln 2 = {np.log(2):.3f} while z0 < 0")


def train(relu_logits, seed, steps=2000, lr=0.1):
    data = np.random.default_rng(7)
    x = data.standard_normal((512, 10))
    y = (x[:, 0] + x[:, 1] > x[:, 2] - x[:, 3]).astype(int)
    rng = np.random.default_rng(seed)
    w1 = rng.uniform(-1, 1, (5, 10)) / np.sqrt(10); b1 = rng.uniform(-1, 1, 5) / np.sqrt(10)
    w2 = rng.uniform(-1, 1, (2, 5)) / np.sqrt(5); b2 = rng.uniform(-1, 1, 2) / np.sqrt(5)
    for _ in range(steps):
        h = np.maximum(x @ w1.T + b1, 0)
        z = h @ w2.T + b2
        out = np.maximum(z, 0) if relu_logits else z
        p = np.exp(out - out.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = p.copy()
        g[np.arange(len(y)), y] -= 1
        g /= len(y)
        if relu_logits:
            g *= z > 0
        gh = (g @ w2) * (h > 0)
        w2 -= lr * g.T @ h; b2 -= lr * g.sum(0)
        w1 -= lr * gh.T @ x; b1 -= lr * gh.sum(0)
    loss = -np.log(p[np.arange(len(y)), y]).mean()
    dead = int(((z <= 0).all(axis=0)).sum())  # logits that are <= 0 on every input: no gradient ever again
    return loss, 100.0 * (out.argmax(1) == y).mean(), dead


if __name__ == "__main__":
    import sys

    print("One example, target class 0:")
    one_example()
    if "--one-example" in sys.argv:
        sys.exit(0)
    print("SimpleNN 10-5-2, 2000 SGD steps (lr 0.1, full batch of 512), 20 initialisations:")
    for relu_logits in (True, False):
        runs = [train(relu_logits, seed) for seed in range(20)]
        loss, acc, dead = (np.array(v) for v in zip(*runs))
        print(f"  {'relu(fc2(h))' if relu_logits else 'fc2(h)':13s} mean loss {loss.mean():.3f}  mean accuracy {acc.mean():.1f}%"
              f"  worst {acc.min():.1f}%  runs with a dead logit {int((dead > 0).sum())} of 20")
