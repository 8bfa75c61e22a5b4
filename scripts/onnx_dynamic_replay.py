#!/usr/bin/env python3
"""Where a dynamic int8 MLP's ONNX export and tinyqat differ (docs/onnx.md §5).

Replays a two-layer dynamic model (fc1, relu, fc2, as `tinyqat dynamic`
makes from tests/golden/onnx_mlp.onnx) in float32 numpy from the exported
file's initializers, once with tinyqat's formulas (quantize with x * (1 / s),
epilogue fma(acc, s_x s_w, b): one rounding) and once with the graph's
(QuantizeLinear divides by s; Mul then Add: two roundings), and compares
both with the real outputs of tinyqat (`tinyqat run`) and ONNX Runtime
(tools/onnx/run.js) on the Fashion-MNIST test set, batches of 1000.
Not a test. Needs Debian's python3-numpy and python3-onnx, a build, and
scripts/setup.sh's ONNX Runtime.
  /usr/bin/python3 scripts/onnx_dynamic_replay.py MODEL.safetensors MODEL.onnx
"""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from fashion_mnist import normalise, read_idx  # noqa: E402

f32 = np.float32


def qparams(x):
    lo, hi = f32(min(x.min(), 0)), f32(max(x.max(), 0))
    s = f32(max(f32(f32(hi - lo) / f32(127)), np.finfo(f32).eps))
    return s, f32(0) - np.rint(f32(lo / s))


def layer(x, w, name, tinyqat):
    s, z = qparams(x)
    scaled = (x * f32(f32(1) / s)).astype(f32) if tinyqat else (x / s).astype(f32)
    q = np.clip(np.rint(scaled) + z, 0, 127)
    acc = ((q.astype(np.int64) - int(z)) @ w[name + ".weight_quantized_t"].astype(np.int64)).astype(f32)
    scale, bias = (s * w[name + ".weight_scale"]).astype(f32), w[name + ".bias"]
    if tinyqat:  # fma: the product is exact in double, one rounding to float
        return (acc.astype(np.float64) * scale + bias.astype(np.float64)).astype(f32), q
    return ((acc * scale).astype(f32) + bias).astype(f32), q


def main(model, onnx_path):
    w = {t.name: numpy_helper.to_array(t) for t in onnx.load(onnx_path).graph.initializer}
    images = normalise(read_idx("t10k-images-idx3-ubyte.gz"))
    tmp = tempfile.mkdtemp()
    count = dict(tinyqat=0, runtime=0, codes=0, values=0)
    for b in range(len(images) // 1000):
        x = images[b * 1000:(b + 1) * 1000]
        np.save(os.path.join(tmp, "x.npy"), x)
        subprocess.run([os.path.join(ROOT, "build", "tinyqat"), "run", "--model", model, "--input",
                        os.path.join(tmp, "x.npy"), "--out", os.path.join(tmp, "y.npy")], check=True, capture_output=True)
        y_tq = np.load(os.path.join(tmp, "y.npy"))
        with open(os.path.join(tmp, "x.bin"), "wb") as f:
            f.write(b"TQT1" + struct.pack("<Iqq", 2, *x.shape) + x.astype("<f4").tobytes())
        subprocess.run(["node", os.path.join(ROOT, "tools", "onnx", "run.js"), onnx_path, os.path.join(tmp, "x.bin"),
                        os.path.join(tmp, "y.bin")], check=True)
        y_rt = np.frombuffer(open(os.path.join(tmp, "y.bin"), "rb").read()[24:], "<f4").reshape(y_tq.shape)
        h_tq, _ = layer(x, w, "fc1", True)
        h_rt, _ = layer(x, w, "fc1", False)
        out_tq, q_tq = layer(np.maximum(h_tq, 0), w, "fc2", True)
        out_rt, q_rt = layer(np.maximum(h_rt, 0), w, "fc2", False)
        count["tinyqat"] += int((out_tq != y_tq).sum())
        count["runtime"] += int((out_rt != y_rt).sum())
        count["values"] += int((y_tq != y_rt).sum())
        for i, j in zip(*np.nonzero(q_tq != q_rt)):
            count["codes"] += 1
            s, _ = qparams(np.maximum(h_tq, 0))
            print("image %d, fc2 input %d: fc1 gives %.9g (tinyqat) / %.9g (ONNX Runtime) = %.9g steps; codes %d / %d; "
                  "largest output difference of the image %.3g" % (b * 1000 + i, j, h_tq[i, j], h_rt[i, j],
                                                                   np.float64(h_tq[i, j]) / np.float64(s), q_tq[i, j],
                                                                   q_rt[i, j], np.abs(y_tq[i] - y_rt[i]).max()))
    print("replay with tinyqat's formulas != tinyqat: %(tinyqat)d values; with the graph's formulas != ONNX Runtime: "
          "%(runtime)d values; output values that differ between the runtimes: %(values)d; fc2 input codes that differ: "
          "%(codes)d" % count)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
