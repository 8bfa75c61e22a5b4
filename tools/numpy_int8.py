#!/usr/bin/env python3
"""tinyqat's integer-only inference, rebuilt with numpy alone.

Three companions to the docs, each recomputing what the C++ code does, bit for
bit, from nothing but the model file and the formulas:

    python3 tools/numpy_int8.py eval MODEL.safetensors [--data DIR] [--limit N] [--json] [--outputs FILE]
        Runs a static int8 model (the output of `tinyqat qat` or `tinyqat ptq`)
        on the Fashion-MNIST test images: the same accuracy and the same
        predictions as `tinyqat eval --model MODEL` (docs/quantization.md §7).
    python3 tools/numpy_int8.py walkthrough
        Parts A and B of examples/int8_walkthrough.cpp: the same lines, the
        same digits (docs/walkthrough.md).
    python3 tools/numpy_int8.py histogram MODEL.safetensors
        For every HistogramObserver of a calibrated model (`prepare` + data,
        before `convert`): the range the search picks and its qparams
        (docs/ptq.md eq. H2-H4), as JSON.
    python3 tools/numpy_int8.py uniform
        The search on a uniform histogram, where it ends on a range that scores
        worse than the full one (docs/ptq.md §3).
    python3 tools/numpy_int8.py qparams MIN MAX [--bits 7] [--symmetric]
        Scale and zero point of a range (docs/quantization.md eq. 3-6).

Only numpy and the standard library; tests/test_numpy_companion.cpp runs all
three against the C++ side. Every float step is done in the precision the C++
code uses (float32 where it uses float, float64 where it uses double), in the
same order, so the integers come out the same.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

from fashion_mnist import normalise, read_idx  # beside this file: the loader's input normalisation

F32 = np.float32

# ---- Reading a model file (docs/model_files.md §1-4) ----

DTYPES = {"F32": "<f4", "I32": "<i4", "I64": "<i8", "I8": "i1", "U8": "u1"}


def read_safetensors(path):
    """Returns (metadata dict, {name: numpy array})."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return metadata, tensors


def walk(node, prefix=""):
    """Yields (dotted path, node) for every module of the tree, parents first."""
    yield prefix, node
    for child in node.get("children", []):
        yield from walk(child["module"], f"{prefix}.{child['name']}" if prefix else child["name"])


def load_model(path):
    metadata, tensors = read_safetensors(path)
    if "tinyqat" not in metadata:
        raise SystemExit(f"{path}: not a tinyqat model file (no 'tinyqat' metadata)")
    return json.loads(metadata["tinyqat"])["model"], tensors


def unpack_int4(packed, count):
    """Two 4-bit two's-complement values a byte, low nibble first (model_files.md §4)."""
    nibbles = np.empty(2 * packed.size, dtype=np.int16)
    nibbles[0::2] = packed & 0x0F
    nibbles[1::2] = packed >> 4
    nibbles[nibbles >= 8] -= 16
    return nibbles[:count].astype(np.int8)


# ---- The formulas (docs/quantization.md eq. 2-6, 11-13) ----

EPS = F32(2.0 ** -23)  # eq. 6


def calculate_qparams(lo, hi, quant_min, quant_max, symmetric, unsigned):
    """eq. 3-6 in float32, as quant::calculate_qparams: the scale is floored before z is computed."""
    min_neg, max_pos = min(F32(lo), F32(0)), max(F32(hi), F32(0))  # eq. 3
    if symmetric:  # eq. 5
        amax = max(-min_neg, max_pos)
        scale = max(F32(amax / (F32(quant_max - quant_min) / F32(2))), EPS)
        return scale, (quant_min + quant_max) // 2 if unsigned else 0
    scale = max(F32((max_pos - min_neg) / F32(quant_max - quant_min)), EPS)  # eq. 4, floored first
    zp = F32(quant_min) - np.rint(F32(min_neg / scale))
    return scale, int(min(max(zp, F32(quant_min)), F32(quant_max)))


def quantize(x, scale, zero_point, quant_min, quant_max):
    """eq. 2 as the library computes it: x * (1/s) in float32, ties to even, then + z."""
    inv = F32(1) / F32(scale)
    q = np.rint((x * inv).astype(F32)) + F32(zero_point)
    return np.clip(q, quant_min, quant_max).astype(np.int64)


def quantize_multiplier(M):
    """M = multiplier * 2^-(31 + shift), multiplier in [2^30, 2^31) (int8_kernel.md §2)."""
    fraction, exponent = math.frexp(M)
    q31 = math.floor(fraction * 2.0 ** 31 + 0.5)  # llround: half away from zero
    if q31 == 2 ** 31:
        q31 //= 2
        exponent += 1
    return q31, -exponent


def multiply_by_quantized_multiplier(acc, multiplier, shift):
    """round(acc * M), halves away from zero, saturated to int32; integers only. acc: int64 array."""
    product = acc.astype(np.int64) * np.int64(multiplier)
    t = 31 + shift
    if t >= 63:
        return np.zeros_like(product)
    if t > 0:
        magnitude = np.abs(product)
        rounded = (magnitude + (np.int64(1) << np.int64(t - 1))) >> np.int64(t)
        result = np.where(product < 0, -rounded, rounded)
    else:  # M >= 1: a left shift, saturating
        limit = np.int64(2 ** 31 - 1) >> np.int64(-t) if -t < 32 else 0
        result = np.where(np.abs(product) > limit, np.sign(product) * (2 ** 31), product << np.int64(-t))
    return np.clip(result, -2 ** 31, 2 ** 31 - 1)


class QuantizedLinear:
    """The int8 layer of docs/quantization.md §7, from its config and tensors."""

    def __init__(self, path, node, tensors):
        c = node["config"]
        # The fused activation: "activation" (format version 2), or version 1's bool "fused_relu".
        self.path, self.activation = path, c.get("activation", "relu" if c.get("fused_relu") else "none")
        w = tensors[path + ".weight"]
        if c.get("weight_packing") == "int4x2":
            w = unpack_int4(w, c["out_features"] * c["in_features"]).reshape(c["out_features"], c["in_features"])
        self.weight = w.astype(np.int64)  # (out, in), zero point 0 (symmetric)
        wq = c["weight_qparams"]
        scales = [F32(s) for s in wq["scale"]]
        self.weight_scales = scales if len(scales) == c["out_features"] else scales * c["out_features"]
        self.bias = tensors.get(path + ".bias")
        self.input_qparams = c.get("input_qparams")
        self.output_qparams = c["output_qparams"]

    def forward(self, x, x_qparams):
        """x: float32 (N, in) when x_qparams is None, else u8 values (int64) on x_qparams."""
        if x_qparams is None:
            if self.input_qparams is None:
                raise SystemExit(f"{self.path}: received float input but has no input qparams")
            x_qparams = self.input_qparams
            x = quantize(x, x_qparams["scale"][0], x_qparams["zero_point"][0], x_qparams["quant_min"], x_qparams["quant_max"])
        s_x, z_x = F32(x_qparams["scale"][0]), x_qparams["zero_point"][0]
        oq = self.output_qparams
        s_y, z_y = float(F32(oq["scale"][0])), oq["zero_point"][0]
        # eq. 11: the products are exact in float64 and every partial sum is
        # below 2^53, so BLAS's dgemm gives the exact integer sums.
        acc = ((x - z_x).astype(np.float64) @ self.weight.T.astype(np.float64)).astype(np.int64)
        # eq. 13-14: a fused ReLU raises the lower end to z_y; ReLU6 also lowers the upper end to the code of 6.
        y_min = max(oq["quant_min"], z_y) if self.activation != "none" else oq["quant_min"]
        y_max = oq["quant_max"]
        if self.activation == "relu6":
            y_max = int(min(max(z_y + np.rint(6.0 / s_y), y_min), y_max))
        y = np.empty_like(acc)
        for n in range(self.weight.shape[0]):
            s_acc = float(s_x) * float(self.weight_scales[n])  # in double, as the C++ layer
            if self.bias is not None:  # eq. 12, clamped to the kernel's bound 2^30
                acc[:, n] += int(min(max(np.rint(float(self.bias[n]) / s_acc), -2.0 ** 30), 2.0 ** 30))
            multiplier, shift = quantize_multiplier(s_acc / s_y)  # eq. 13
            y[:, n] = np.clip(z_y + multiply_by_quantized_multiplier(acc[:, n], multiplier, shift), y_min, y_max)
        return y, oq


def int8_forward(model, tensors, images):
    """The whole model: float images in, the last layer's u8 values and qparams out."""
    if model["type"] != "Sequential":
        raise SystemExit(f"expected a Sequential model, got {model['type']}")
    x, qparams = images, None
    for child in model["children"]:
        name, node = child["name"], child["module"]
        kind = node["type"]
        if kind in ("QuantizedLinear", "QuantizedLinearReLU", "QuantizedLinearReLU6"):
            x, qparams = QuantizedLinear(name, node, tensors).forward(x, qparams)
        elif kind == "ReLU":  # on a quantized tensor: max(q, z) (quantization.md §1)
            x = np.maximum(x, qparams["zero_point"][0]) if qparams else np.maximum(x, F32(0))
        elif kind in ("Identity", "Flatten"):
            x = x.reshape(x.shape[0], -1)
        else:
            raise SystemExit(f"{name}: {kind} is not a static int8 module; this companion runs static int8 models only")
    return x, qparams


# ---- Fashion-MNIST test images, normalised as the data loader does ----

def load_test_set(directory, limit):
    images = read_idx(os.path.join(directory, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(directory, "t10k-labels-idx1-ubyte.gz"))
    if limit:
        images, labels = images[:limit], labels[:limit]
    return normalise(images), labels.astype(np.int64)


def command_eval(args):
    model, tensors = load_model(args.model)
    images, labels = load_test_set(args.data, args.limit)
    outputs = np.empty((0,), dtype=np.uint8)
    predictions = []
    chunks = []
    for begin in range(0, len(images), 1000):
        y, _ = int8_forward(model, tensors, images[begin:begin + 1000])
        chunks.append(y.astype(np.uint8))
        predictions.append(np.argmax(y, axis=1))  # the first largest, as kernels::argmax
    outputs = np.concatenate(chunks)
    predictions = np.concatenate(predictions)
    correct = int((predictions == labels).sum())
    accuracy = 100.0 * correct / len(labels)
    if args.outputs:
        outputs.tofile(args.outputs)
    if args.json:
        print(json.dumps({"accuracy": accuracy, "samples": len(labels), "correct": correct}))
    else:
        print(f"{args.model}: test accuracy {accuracy:.2f}% on {len(labels)} samples (numpy, integers only)")


# ---- The walkthrough (examples/int8_walkthrough.cpp, Parts A and B) ----

def command_walkthrough(_args):
    K, N = 4, 3
    W = np.array([0.50, -0.25, 0.10, 0.80, -0.60, 0.30, 0.45, -0.15, 0.20, 0.70, -0.35, 0.05], dtype=F32).reshape(N, K)
    b = np.array([0.10, -0.20, 0.05], dtype=F32)
    x = np.array([1.20, -0.40, 0.90, 2.00], dtype=F32)
    print("=== float reference ===")
    y = []
    for n in range(N):
        s = b[n]
        for k in range(K):
            s = F32(s + F32(x[k] * W[n, k]))  # float32, one rounding per step
        y.append(s)
        print(f"y_float[{n}] = {s:.6f}")
    print("\n=== Part A: offline (float) ===")
    s_x, z_x = calculate_qparams(x.min(), x.max(), 0, 127, symmetric=False, unsigned=True)
    print(f"input min = {x.min():.6f}, max = {x.max():.6f}, range 0..127")
    print("input scale s_x = (max - min) / (qmax - qmin) = %.9g" % s_x)
    print(f"input zero point z_x = qmin - round(min / s_x) = {z_x}")
    s_w = []
    for n in range(N):
        s_w.append(calculate_qparams(W[n].min(), W[n].max(), -128, 127, symmetric=True, unsigned=False)[0])
        print("weight scale s_w[%d] = max|W[%d]| / 127.5 = %.9g" % (n, n, s_w[n]))
    s_y, z_y = calculate_qparams(min(y), max(y), 0, 127, symmetric=False, unsigned=True)
    print("output scale s_y = %.9g, zero point z_y = %d" % (s_y, z_y))
    qW = np.zeros((N, K), dtype=np.int64)
    b_q, M = [], []
    for n in range(N):
        for k in range(K):
            qW[n, k] = quantize(W[n, k:k + 1], s_w[n], 0, -128, 127)[0]
            print(f"qW[{n}][{k}] = round({W[n, k]:.2f} / s_w[{n}]) = {qW[n, k]}")
        s_acc = float(s_x) * float(s_w[n])
        b_q.append(int(np.rint(float(b[n]) / s_acc)))
        print("b_q[%d] = round(b / (s_x s_w)) = round(%.2f / %.9g) = %d" % (n, b[n], s_acc, b_q[n]))
        M.append(quantize_multiplier(s_acc / float(s_y)))
        print("M[%d] = s_x s_w / s_y = %.9g = M0 * 2^-(31+shift): M0 = %d, shift = %d" % (n, s_acc / float(s_y), *M[n]))
        print(f"rowsum[{n}] = {qW[n].sum()}")
    print("\n=== Part B: run time (integers only) ===")
    qx = quantize(x, s_x, z_x, 0, 127)
    for k in range(K):
        print(f"qx[{k}] = round({x[k]:.2f} / s_x) + z_x = {qx[k]}")
    for n in range(N):
        raw = int(qx @ qW[n])
        correction = z_x * int(qW[n].sum())
        acc = raw - correction + b_q[n]
        print(f"raw[{n}] = sum_k qx*qW = {raw}")
        print(f"correction[{n}] = z_x * rowsum = {correction}")
        print(f"acc[{n}] = raw - correction + b_q = {acc}")
        scaled = int(multiply_by_quantized_multiplier(np.array([acc]), *M[n])[0])
        print(f"scaled[{n}] = (acc * M0) >> (31 + shift), rounded = {scaled}")
        print(f"y_q[{n}] = clamp(z_y + scaled, 0, 127) = {min(max(z_y + scaled, 0), 127)}")


# ---- The histogram search (docs/ptq.md eq. H2-H4) ----

def histogram_error(hist, min_val, max_val, start, end, levels):
    """eq. H2-H3, term by term in double as histogram_quantization_error, summed in bin order."""
    bins = len(hist)
    bin_width = (float(max_val) - float(min_val)) / bins
    dst = bin_width * (end - start + 1) / levels
    if dst == 0.0:
        return 0.0
    half = dst / 2
    i = np.nonzero(hist)[0]
    density = hist[i].astype(np.float64) / bin_width
    begin = (i - start) * bin_width
    stop = begin + bin_width
    first = np.clip(np.floor(begin / dst), 0.0, levels - 1).astype(np.int64)
    last = np.clip(np.floor(stop / dst), 0.0, levels - 1).astype(np.int64)
    first_c, last_c = (first + 0.5) * dst, (last + 0.5) * dst

    def sq(a, b):  # the integral of t^2 from a to b
        return (b * b * b - a * a * a) / 3.0

    same = sq(begin - first_c, stop - first_c)
    split = sq(begin - first_c, half) + (last - first - 1) * sq(-half, half) + sq(-half, stop - last_c)
    terms = density * np.where(first == last, same, split)
    return float(np.cumsum(terms)[-1]) if terms.size else 0.0  # cumsum adds in order, as the C++ loop


def histogram_search(hist, min_val, max_val, levels):
    """eq. H4: the greedy search; the first narrower range is kept without comparing it with [min, max]."""
    bins = len(hist)
    min_val, max_val = F32(min_val), F32(max_val)
    if bins == 0 or not max_val > min_val:
        return min_val, max_val
    running = np.cumsum(hist.astype(np.float64))  # summed in double, stored as float
    cumulative, total = running.astype(F32), float(running[-1])
    alpha, beta, start, end = 0.0, 1.0, 0, bins - 1
    best = math.inf
    while alpha < beta:
        next_alpha, next_beta = alpha + 1e-5, beta - 1e-5
        low, high = F32(next_alpha * total), F32(next_beta * total)
        l = start + int(np.searchsorted(cumulative[start:end], low, side="left"))
        r = start + int(np.searchsorted(cumulative[start + 1:end + 1], high, side="right"))
        next_start, next_end = start, end
        if l - start > end - r:
            next_start, alpha = l, next_alpha
        else:
            next_end, beta = r, next_beta
        if (next_start, next_end) == (start, end):
            continue
        error = histogram_error(hist, min_val, max_val, next_start, next_end, levels)
        if error > best:
            break
        best, start, end = error, next_start, next_end
    width = F32(F32(max_val - min_val) / F32(bins))
    return F32(min_val + F32(width * F32(start))), F32(min_val + F32(width * F32(end + 1)))


def command_histogram(args):
    model, tensors = load_model(args.model)
    result = {}
    for path, node in walk(model):
        if node["type"] != "HistogramObserver":
            continue
        c = node["config"]
        spec = c["spec"]
        hist = tensors[path + ".histogram"]
        if not tensors[path + ".min_val"].item() <= tensors[path + ".max_val"].item():
            continue  # saw no data (an input observer whose layer gets the previous layer's u8 output)
        lo, hi = histogram_search(hist, tensors[path + ".min_val"].item(), tensors[path + ".max_val"].item(),
                                  spec["quant_max"] - spec["quant_min"] + 1)
        scale, zp = calculate_qparams(lo, hi, spec["quant_min"], spec["quant_max"],
                                      symmetric="symmetric" in spec["qscheme"], unsigned=spec["dtype"] == "u8")
        result[path] = {"min": float(lo), "max": float(hi), "scale": float(scale), "zero_point": zp}
    print(json.dumps(result, indent=1))


def command_uniform(_args):
    hist = np.ones(2048, dtype=F32)
    full = histogram_error(hist, 0.0, 1.0, 0, 2047, 128)
    lo, hi = histogram_search(hist, 0.0, 1.0, 128)
    end = int(round(float(hi) * 2048)) - 1
    print(f"full range [0, 1]: error {full:.4e}")
    print(f"chosen range [{float(lo):g}, {float(hi):.8f}] (bins 0..{end}): error {histogram_error(hist, 0.0, 1.0, 0, end, 128):.4e}")


def command_qparams(args):
    if args.symmetric:
        scale, zp = calculate_qparams(args.min, args.max, -2 ** (args.bits - 1), 2 ** (args.bits - 1) - 1, True, False)
    else:
        scale, zp = calculate_qparams(args.min, args.max, 0, 2 ** args.bits - 1, False, True)
    print("scale = %.9g, zero_point = %d" % (scale, zp))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("eval", help="int8 inference of a static int8 model file on the test set")
    e.add_argument("model")
    e.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    e.add_argument("--limit", type=int, default=0, help="only the first N test images")
    e.add_argument("--json", action="store_true")
    e.add_argument("--outputs", help="write the last layer's u8 outputs (N x classes bytes) to this file")
    sub.add_parser("walkthrough", help="examples/int8_walkthrough.cpp, Parts A and B")
    h = sub.add_parser("histogram", help="the histogram search of every HistogramObserver in a calibrated model")
    h.add_argument("model")
    sub.add_parser("uniform", help="the search on a uniform histogram (docs/ptq.md §3)")
    q = sub.add_parser("qparams", help="scale and zero point of a range")
    q.add_argument("min", type=float)
    q.add_argument("max", type=float)
    q.add_argument("--bits", type=int, default=7)
    q.add_argument("--symmetric", action="store_true", help="i8 symmetric (weights) instead of u8 affine")
    args = parser.parse_args()
    {"eval": command_eval, "walkthrough": command_walkthrough, "histogram": command_histogram,
     "uniform": command_uniform, "qparams": command_qparams}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
