#!/usr/bin/env python3
"""Golden data for the convolutional layers and MobileNetV2 (PyTorch 1.13).

Writes, next to this script:
  cnn_layers.txt          forward and gradients of conv2d, pooling, batch norm
                          and relu6 (tinyqat-golden format, see README.md)
  mobilenet_v2_repr.txt   print(torchvision.models.mobilenet_v2())
  mobilenet_v2_w025.safetensors
                          the state_dict of a reduced-width MobileNetV2
                          (width_mult=0.25, 10 classes) as a plain safetensors
                          file: PyTorch's key names, no metadata, written with
                          struct + numpy
  mobilenet_v2_w025.txt   that model's inputs and eval-mode outputs
  mobilenet_v2_w025_input.npy, mobilenet_v2_w025_output.npy
                          a batch as numpy writes it and PyTorch's output for
                          it, for `tinyqat run` (--npy-only makes just these,
                          from the committed state)

Run from the repository root with Debian's PyTorch:
    /usr/bin/python3 tests/golden/generate_cnn.py
Deterministic: fixed seeds, one thread.
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import GoldenFile  # noqa: E402  (the shared text writer)

torch.set_num_threads(1)


def grad_case(g, case, fn, inputs, names):
    """Stores inputs, out, gout and d sum(out * gout) / d input for each input."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    gout = torch.randn_like(out)
    (out * gout).sum().backward()
    for name, t in zip(names, leaves):
        g.f32("%s/%s" % (case, name), t.detach())
    g.f32(case + "/out", out.detach())
    g.f32(case + "/gout", gout)
    for name, t in zip(names, leaves):
        g.f32("%s/grad/%s" % (case, name), t.grad)


# name: (N, C, H, W, OC, (kh, kw), (sh, sw), (ph, pw), (dh, dw), groups, bias)
CONV_CASES = [
    ("basic", 2, 3, 7, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("stride2", 2, 3, 9, 8, 5, (3, 3), (2, 2), (1, 1), (1, 1), 1, True),
    ("no_padding_odd", 2, 2, 5, 7, 3, (3, 3), (1, 1), (0, 0), (1, 1), 1, False),
    ("dilation2", 2, 2, 9, 9, 3, (3, 3), (1, 1), (2, 2), (2, 2), 1, True),
    ("groups2", 2, 4, 6, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1), 2, True),
    ("depthwise", 2, 4, 7, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1), 4, False),
    ("depthwise_stride2", 1, 6, 9, 9, 6, (3, 3), (2, 2), (1, 1), (1, 1), 6, True),
    ("depthwise_multiplier2", 1, 3, 5, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 3, False),
    ("pointwise", 2, 8, 5, 5, 4, (1, 1), (1, 1), (0, 0), (1, 1), 1, False),
    ("pointwise_stride2", 2, 4, 6, 6, 3, (1, 1), (2, 2), (0, 0), (1, 1), 1, True),
    ("rectangular", 1, 2, 6, 9, 3, (2, 3), (2, 1), (1, 0), (1, 2), 1, True),
    ("batch1", 1, 3, 5, 5, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
]

# name: (N, C, H, W, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
MAX_POOL_CASES = [
    ("k2", 2, 3, 8, 8, (2, 2), (2, 2), (0, 0), (1, 1)),
    ("k2_odd", 1, 2, 7, 5, (2, 2), (2, 2), (0, 0), (1, 1)),
    ("k3s2p1", 2, 2, 9, 8, (3, 3), (2, 2), (1, 1), (1, 1)),
    ("k3s1p1_dilation2", 1, 2, 7, 7, (3, 3), (1, 1), (1, 1), (2, 2)),
]
AVG_POOL_CASES = [
    ("k2", 2, 3, 8, 8, (2, 2), (2, 2), (0, 0), (1, 1)),
    ("k3s2p1", 2, 2, 9, 8, (3, 3), (2, 2), (1, 1), (1, 1)),
    ("k3s1_odd", 1, 2, 7, 5, (3, 3), (1, 1), (0, 0), (1, 1)),
]
# name: (N, C, H, W, OH, OW)
ADAPTIVE_CASES = [
    ("global", 2, 3, 5, 5, 1, 1),
    ("7x5_to_3x2", 1, 2, 7, 5, 3, 2),
    ("9x9_to_4x4", 1, 2, 9, 9, 4, 4),
]


def gen_layers():
    torch.manual_seed(0)
    g = GoldenFile("cnn_layers.txt")
    g.comment("Convolution, pooling, batch norm and relu6 against PyTorch %s (see README.md)." % torch.__version__)
    g.comment("Per case: inputs, out, gout and grad/<input> = d sum(out * gout) / d input.")
    g.comment("conv2d/<case>/params: stride_h stride_w pad_h pad_w dil_h dil_w groups.")
    for (name, n, c, h, w, oc, k, s, p, d, groups, bias) in CONV_CASES:
        case = "conv2d/" + name
        g.i64(case + "/params", np.array([s[0], s[1], p[0], p[1], d[0], d[1], groups]))
        x = torch.randn(n, c, h, w)
        wt = torch.randn(oc, c // groups, k[0], k[1]) * 0.5
        inputs, names = [x, wt], ["x", "weight"]
        if bias:
            inputs.append(torch.randn(oc))
            names.append("bias")

        def fn(*a, s=s, p=p, d=d, groups=groups):
            return F.conv2d(a[0], a[1], a[2] if len(a) > 2 else None, s, p, d, groups)
        grad_case(g, case, fn, inputs, names)

    g.comment("max_pool2d/<case>/params and avg_pool2d: kh kw sh sw ph pw dh dw.")
    for (name, n, c, h, w, k, s, p, d) in MAX_POOL_CASES:
        case = "max_pool2d/" + name
        g.i64(case + "/params", np.array([k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1]]))
        grad_case(g, case, lambda x, k=k, s=s, p=p, d=d: F.max_pool2d(x, k, s, p, d), [torch.randn(n, c, h, w)], ["x"])
    for (name, n, c, h, w, k, s, p, d) in AVG_POOL_CASES:
        case = "avg_pool2d/" + name
        g.i64(case + "/params", np.array([k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1]]))
        grad_case(g, case, lambda x, k=k, s=s, p=p: F.avg_pool2d(x, k, s, p), [torch.randn(n, c, h, w)], ["x"])
    g.comment("adaptive_avg_pool2d/<case>/params: OH OW.")
    for (name, n, c, h, w, oh, ow) in ADAPTIVE_CASES:
        case = "adaptive_avg_pool2d/" + name
        g.i64(case + "/params", np.array([oh, ow]))
        grad_case(g, case, lambda x, oh=oh, ow=ow: F.adaptive_avg_pool2d(x, (oh, ow)), [torch.randn(n, c, h, w)], ["x"])

    # relu6: values kept away from the kinks at 0 and 6.
    x = torch.rand(2, 3, 4, 5) * 12 - 3
    x = torch.where((x.abs() < 0.05) | ((x - 6).abs() < 0.05), torch.full_like(x, 1.0), x)
    grad_case(g, "relu6/basic", F.relu6, [x], ["x"])

    gen_batch_norm(g)
    g.write()


def gen_batch_norm(g):
    g.comment("batch_norm/<case>: BatchNorm2d modules. train: three training steps on x0, x1, x2 (outputs and")
    g.comment("gradients of step 0; running stats after all three). eval: running stats set, then one eval step.")
    for name, shape, affine in (("train", (4, 3, 5, 5), True), ("train_batch1", (1, 3, 4, 4), True),
                                ("train_no_affine", (2, 2, 3, 3), False)):
        case = "batch_norm/" + name
        c = shape[1]
        bn = nn.BatchNorm2d(c, affine=affine)
        if affine:
            with torch.no_grad():
                bn.weight.copy_(torch.rand(c) + 0.5)
                bn.bias.copy_(torch.randn(c))
            g.f32(case + "/weight", bn.weight.detach())
            g.f32(case + "/bias", bn.bias.detach())
        bn.train()
        for step in range(3):
            x = (torch.randn(*shape) * (step + 1) + step).requires_grad_(True)
            out = bn(x)
            if step == 0:
                gout = torch.randn_like(out)
                (out * gout).sum().backward()
                g.f32(case + "/x0", x.detach())
                g.f32(case + "/out", out.detach())
                g.f32(case + "/gout", gout)
                g.f32(case + "/grad/x", x.grad)
                if affine:
                    g.f32(case + "/grad/weight", bn.weight.grad)
                    g.f32(case + "/grad/bias", bn.bias.grad)
            else:
                g.f32("%s/x%d" % (case, step), x.detach())
        g.f32(case + "/running_mean", bn.running_mean)
        g.f32(case + "/running_var", bn.running_var)
        g.i64(case + "/num_batches_tracked", bn.num_batches_tracked)

    case = "batch_norm/eval"
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(3) + 0.5)
        bn.bias.copy_(torch.randn(3))
        bn.running_mean.copy_(torch.randn(3))
        bn.running_var.copy_(torch.rand(3) + 0.5)
    for t, n in ((bn.weight, "weight"), (bn.bias, "bias"), (bn.running_mean, "running_mean"),
                 (bn.running_var, "running_var")):
        g.f32(case + "/" + n, t.detach())
    bn.eval()
    x = torch.randn(2, 3, 4, 4).requires_grad_(True)
    out = bn(x)
    gout = torch.randn_like(out)
    (out * gout).sum().backward()
    g.f32(case + "/x", x.detach())
    g.f32(case + "/out", out.detach())
    g.f32(case + "/gout", gout)
    g.f32(case + "/grad/x", x.grad)
    g.f32(case + "/grad/weight", bn.weight.grad)
    g.f32(case + "/grad/bias", bn.bias.grad)


def save_plain_safetensors(path, tensors):
    """A safetensors file with no metadata, written by hand (header + raw bytes)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        arr = t.detach().cpu().numpy()
        if arr.dtype == np.float32:
            dtype = "F32"
        elif arr.dtype == np.int64:
            dtype = "I64"
        else:
            raise ValueError("unexpected dtype %s for %s" % (arr.dtype, name))
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)  # the data area starts 8-byte aligned
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for b in blobs:
            fh.write(b)
    print("wrote %-30s %8d bytes" % (os.path.basename(path), os.path.getsize(path)))


def gen_mobilenet():
    with open(os.path.join(HERE, "mobilenet_v2_repr.txt"), "w") as fh:
        fh.write(str(torchvision.models.mobilenet_v2()) + "\n")
    print("wrote mobilenet_v2_repr.txt")

    torch.manual_seed(1)
    model = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)
    # Non-trivial batch-norm state: random affine parameters, then running
    # statistics gathered from a few training-mode batches.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.1)
        model.train()
        for _ in range(3):
            model(torch.randn(4, 3, 32, 32))
    model.eval()
    save_plain_safetensors(os.path.join(HERE, "mobilenet_v2_w025.safetensors"), model.state_dict())

    g = GoldenFile("mobilenet_v2_w025.txt")
    g.comment("torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25) in eval mode, state in")
    g.comment("mobilenet_v2_w025.safetensors: inputs and outputs.  PyTorch %s, torchvision %s."
              % (torch.__version__, torchvision.__version__))
    g.i64("parameter_count", np.array(sum(p.numel() for p in model.parameters())))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
    g.f32("input", x)
    g.f32("output", y)
    x2 = torch.randn(1, 3, 45, 37)  # odd sizes: every stride-2 stage rounds
    with torch.no_grad():
        y2 = model(x2)
    g.f32("input_odd", x2)
    g.f32("output_odd", y2)
    g.write()


def load_plain_safetensors(path):
    """The tensors of a safetensors file as numpy arrays (F32 and I64 only)."""
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        data = fh.read()
    dtypes = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8")}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"]).copy()
    return out


def gen_npy():
    """numpy's side of `tinyqat run`: an input batch and PyTorch's output for it,
    as .npy files, from the model state committed in mobilenet_v2_w025.safetensors."""
    model = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)
    state = load_plain_safetensors(os.path.join(HERE, "mobilenet_v2_w025.safetensors"))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.eval()
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    for name, arr in (("mobilenet_v2_w025_input.npy", x), ("mobilenet_v2_w025_output.npy", y)):
        np.save(os.path.join(HERE, name), arr)
        print("wrote %-30s %8d bytes" % (name, os.path.getsize(os.path.join(HERE, name))))


def main():
    print("torch", torch.__version__, "torchvision", torchvision.__version__)
    if sys.argv[1:] == ["--npy-only"]:  # regenerate the .npy pair alone, from the committed state
        gen_npy()
        return
    gen_layers()
    gen_mobilenet()
    gen_npy()


if __name__ == "__main__":
    sys.exit(main())
