#!/usr/bin/env python3
"""Golden reference data for tinyqat's C++ tests, produced with PyTorch 1.13.

Run from the repository root:

    /usr/bin/python3 tests/golden/generate.py

The script writes four text files next to itself (autograd_ops.txt, mlp.txt,
quant_core.txt, quant_ptq.txt).  CI does not have torch: the C++ tests read the
committed files.  README.md in this directory documents every tensor name.

File format ("tinyqat-golden v1"):

    # tinyqat-golden 1
    # comment lines start with '#'
    tensor <name> <dtype> <ndim> <d0> <d1> ...
    <values, whitespace separated, row-major, possibly over several lines>

dtype is f32, f64 or i64.  A scalar has ndim 0 and exactly one value.
f32 values are printed so that strtof() (or strtod() followed by a cast to
float) recovers the identical float; f64 values use %.17g.

Besides writing the data, the script re-derives many results with small
numpy formulas and asserts they agree bit for bit with PyTorch.  Those
formulas are the ones documented in README.md, so if an assertion here fires
the README would be wrong.
"""

import collections
import copy
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.ao.quantization as tq
import torch.ao.nn.quantized as nnq
import torch.nn.intrinsic.quantized as nniq  # torch.ao.nn.intrinsic.quantized does not exist in 1.13

HERE = os.path.dirname(os.path.abspath(__file__))

# The observers print a deprecation warning for reduce_range; it is noise here.
warnings.filterwarnings("ignore")
torch.set_num_threads(1)  # keep reductions in one fixed order

F32 = np.float32


# ---------------------------------------------------------------------------
# Writing and reading the text format
# ---------------------------------------------------------------------------

def _to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _fmt_f32(v):
    v = F32(v)
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    text = str(v)  # shortest decimal that round-trips as float32
    # Also require that going through a double gives the same float; fall
    # back to 9 significant digits (always safe) otherwise.
    if F32(text) != v or F32(float(text)) != v:
        text = "%.9g" % float(v)
    return text


def _fmt_f64(v):
    v = float(v)
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return "%.17g" % v


VALUES_PER_LINE = 8


class GoldenFile:
    """Collects tensors for one output file and writes them at the end."""

    def __init__(self, filename):
        self.filename = filename
        self.path = os.path.join(HERE, filename)
        self.lines = ["# tinyqat-golden 1"]
        self.tensors = collections.OrderedDict()  # name -> (dtype, ndarray)

    def comment(self, text=""):
        for line in str(text).splitlines() or [""]:
            self.lines.append(("# " + line).rstrip())

    def _add(self, name, dtype, arr, fmt):
        assert name not in self.tensors, "duplicate tensor name " + name
        assert " " not in name and name, name
        self.tensors[name] = (dtype, arr)
        header = "tensor %s %s %d" % (name, dtype, arr.ndim)
        if arr.ndim:
            header += " " + " ".join(str(d) for d in arr.shape)
        self.lines.append(header)
        if arr.ndim == 0:
            self.lines.append(fmt(arr.item()))
            return
        flat = arr.reshape(-1, arr.shape[-1]) if arr.shape[-1] else arr.reshape(-1, 0)
        for row in flat:
            for i in range(0, len(row), VALUES_PER_LINE):
                self.lines.append(" ".join(fmt(v) for v in row[i:i + VALUES_PER_LINE]))

    def f32(self, name, value, exact=False):
        src = _to_numpy(value)
        arr = src.astype(np.float32)
        if exact:  # the source must already hold float32-representable values
            assert np.array_equal(arr.astype(src.dtype), src, equal_nan=True), name
        self._add(name, "f32", arr, _fmt_f32)

    def f64(self, name, value):
        self._add(name, "f64", _to_numpy(value).astype(np.float64), _fmt_f64)

    def i64(self, name, value):
        src = _to_numpy(value)
        arr = src.astype(np.int64)
        assert np.array_equal(arr, src), name + " is not integral"
        self._add(name, "i64", arr, lambda v: str(int(v)))

    def write(self):
        with open(self.path, "w") as fh:
            fh.write("\n".join(self.lines) + "\n")
        # Read the file back and check that every value survives the trip.
        parsed = read_golden(self.path)
        assert list(parsed) == list(self.tensors), self.filename
        for name, (dtype, arr) in self.tensors.items():
            pdtype, parr = parsed[name]
            assert pdtype == dtype and parr.shape == arr.shape, name
            if dtype == "f32":
                same = (parr.view(np.uint32) == arr.view(np.uint32)) | (np.isnan(parr) & np.isnan(arr))
                assert same.all(), name
            else:
                assert np.array_equal(parr, arr, equal_nan=(dtype == "f64")), name
        print("wrote %-16s %4d tensors %8d bytes" % (self.filename, len(self.tensors), os.path.getsize(self.path)))


def read_golden(path):
    """Minimal reader for the format (the C++ side has its own)."""
    tokens = []
    with open(path) as fh:
        first = fh.readline().strip()
        assert first == "# tinyqat-golden 1", first
        for line in fh:
            if not line.startswith("#"):
                tokens.extend(line.split())
    out = collections.OrderedDict()
    pos = 0
    conv = {"f32": np.float32, "f64": np.float64, "i64": np.int64}
    while pos < len(tokens):
        assert tokens[pos] == "tensor", tokens[pos]
        name, dtype, ndim = tokens[pos + 1], tokens[pos + 2], int(tokens[pos + 3])
        shape = tuple(int(t) for t in tokens[pos + 4:pos + 4 + ndim])
        pos += 4 + ndim
        count = int(np.prod(shape)) if ndim else 1
        vals = tokens[pos:pos + count]
        pos += count
        if dtype == "i64":
            arr = np.array([int(v) for v in vals], dtype=np.int64)
        else:
            arr = np.array([conv[dtype](v) for v in vals], dtype=conv[dtype])
        out[name] = (dtype, arr.reshape(shape))
    return out


# ---------------------------------------------------------------------------
# Reference formulas (numpy, float32) that README.md documents
# ---------------------------------------------------------------------------

def np_fake_quant(x, scale, zero_point, qmin, qmax):
    """PyTorch's CPU fake-quant: q = z + nearbyint(x * (1.0f/s)) in float32."""
    x = np.asarray(x, dtype=np.float32)
    s = F32(scale)
    inv = F32(1.0) / s
    q = np.rint(x * inv).astype(np.float64) + np.asarray(zero_point, dtype=np.float64)
    inside = (q >= qmin) & (q <= qmax)
    qc = np.clip(q, qmin, qmax)
    out = ((qc - zero_point).astype(np.float32) * s).astype(np.float32)
    return out, qc.astype(np.int64), inside


def np_observer_qparams(mn, mx, qmin, qmax, symmetric, unsigned_dtype, custom_range=True):
    """torch.ao.quantization observer _calculate_qparams, in float32."""
    eps = F32(np.finfo(np.float32).eps)
    mn_neg = min(F32(mn), F32(0))
    mx_pos = max(F32(mx), F32(0))
    if symmetric:
        amax = max(-mn_neg, mx_pos)
        scale = max(F32(amax / F32((qmax - qmin) / 2.0)), eps)
        if unsigned_dtype:
            zp = (qmin + qmax) // 2 if custom_range else 128
        else:
            zp = 0
    else:
        scale = max(F32(F32(mx_pos - mn_neg) / F32(qmax - qmin)), eps)
        zp = qmin - int(np.rint(F32(mn_neg / scale)))
        zp = min(max(zp, qmin), qmax)
    return F32(scale), zp


SMALL_SCALE_THRESHOLD = F32(6.1e-5)


def np_choose_qparams(mn, mx, qmin, qmax, preserve_sparsity=False, reduce_range=False):
    """Port of ATen's C++ quant_utils::ChooseQuantizationParams (1.13).

    This is NOT the observer formula.  PyTorch uses it in
    torch.fused_moving_avg_obs_fake_quant (the default QAT fake-quant),
    torch._choose_qparams_per_tensor and the dynamic quantized Linear.
    """
    mn, mx = F32(mn), F32(mx)
    if reduce_range:
        qmin, qmax = qmin // 2, qmax // 2
    if mn < 0 and mx > 0 and preserve_sparsity:
        sym_qmin = -((qmax - qmin) // 2 + 1)
        sym_qmax = (qmax - qmin) // 2
        max_scale = max(abs(float(mn) / sym_qmin), abs(float(mx) / sym_qmax))
        mn, mx = F32(max_scale * sym_qmin), F32(max_scale * sym_qmax)
    mn, mx = min(mn, F32(0)), max(mx, F32(0))
    scale = (float(mx) - float(mn)) / (qmax - qmin)  # double
    if F32(scale) == 0 or np.isinf(F32(1) / F32(scale)):
        scale = 0.1
    if scale < SMALL_SCALE_THRESHOLD:
        original = F32(scale)
        scale = float(SMALL_SCALE_THRESHOLD)
        if mn == 0:
            mx = F32(SMALL_SCALE_THRESHOLD * F32(qmax - qmin))
        elif mx == 0:
            mn = F32(-SMALL_SCALE_THRESHOLD * F32(qmax - qmin))
        else:
            amp = F32(SMALL_SCALE_THRESHOLD / original)
            mn, mx = F32(mn * amp), F32(mx * amp)
    zp_from_min = qmin - float(mn) / scale
    zp_from_max = qmax - float(mx) / scale
    err_min = abs(qmin) - abs(float(mn) / scale)
    err_max = abs(qmax) - abs(float(mx) / scale)
    zp0 = zp_from_min if err_min < err_max else zp_from_max
    if mn < 0 and mx > 0 and preserve_sparsity:
        zp0 = (qmin + qmax) / 2.0
    if zp0 < qmin:
        zp = qmin
    elif zp0 > qmax:
        zp = qmax
    else:
        zp = int(np.rint(zp0))
    return F32(scale), zp


def range_tag(qmin, qmax):
    return "%d_%d" % (qmin, qmax)


# The quantization ranges used throughout quant_core.txt.
RANGES = [(0, 127), (0, 255), (-128, 127), (-64, 63), (0, 15), (-8, 7), (0, 3), (-2, 1)]


def dtype_for(qmin):
    return torch.quint8 if qmin >= 0 else torch.qint8


# ---------------------------------------------------------------------------
# autograd_ops.txt
# ---------------------------------------------------------------------------

def grad_case(g, case, fn, inputs, gout=None):
    """Run fn on fresh leaf copies of `inputs`, backprop `gout`, write everything.

    inputs: list of (argname, tensor).  float tensors get gradients, int64
    tensors (targets) are passed through and written as i64.
    gout: upstream gradient; random normal of the output's shape if None.
    """
    leaves = []
    for _, t in inputs:
        if t.dtype == torch.int64:
            leaves.append(t.clone())
        else:
            leaves.append(t.detach().clone().float().requires_grad_(True))
    out = fn(*leaves)
    if gout is None:
        gout = torch.randn(out.shape)
    out.backward(gout)  # same as backprop of (out * gout).sum()
    for (argname, _), leaf in zip(inputs, leaves):
        if leaf.dtype == torch.int64:
            g.i64("%s/%s" % (case, argname), leaf)
        else:
            g.f32("%s/%s" % (case, argname), leaf)
    g.f32(case + "/out", out)
    g.f32(case + "/gout", gout)
    for (argname, _), leaf in zip(inputs, leaves):
        if leaf.dtype != torch.int64:
            g.f32("%s/grad/%s" % (case, argname), leaf.grad)


def away_from_zero(t, margin):
    """Push values away from 0 so that relu/abs kinks are never hit."""
    return torch.where(t >= 0, t + margin, t - margin)


def gen_autograd_ops():
    torch.manual_seed(1234)
    g = GoldenFile("autograd_ops.txt")
    g.comment("Forward and backward of single ops (PyTorch %s)." % torch.__version__)
    g.comment("Per case: inputs <case>/<arg>, output <case>/out, upstream gradient <case>/gout,")
    g.comment("input gradients <case>/grad/<arg> = d(sum(out * gout)) / d<arg>.  See README.md.")

    # --- binary elementwise ops with broadcasting -------------------------
    # Shapes: same (3,4)+(3,4); row (3,4)+(4,); col (3,4)+(3,1);
    # outer (3,1)+(1,4) -> (3,4); scalar (3,4)+() [0-d tensor].
    shapes = [("same", (3, 4), (3, 4)), ("row", (3, 4), (4,)), ("col", (3, 4), (3, 1)),
              ("outer", (3, 1), (1, 4)), ("scalar", (3, 4), ())]
    ops = [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul), ("div", torch.div)]
    for opname, fn in ops:
        for tag, sa, sb in shapes:
            a = torch.randn(sa)
            if opname == "div":
                # divisor magnitude in [0.5, 2], random sign: far from 0
                b = (torch.rand(sb) * 1.5 + 0.5) * torch.where(torch.rand(sb) < 0.5, -1.0, 1.0)
            else:
                b = torch.randn(sb)
            grad_case(g, "%s/%s" % (opname, tag), fn, [("a", a), ("b", b)])

    # --- unary elementwise ops ------------------------------------------------
    grad_case(g, "neg", torch.neg, [("x", torch.randn(3, 4))])
    grad_case(g, "exp", torch.exp, [("x", torch.randn(3, 4))])
    grad_case(g, "log", torch.log, [("x", torch.rand(3, 4) * 3.0 + 0.1)])  # x in [0.1, 3.1)
    grad_case(g, "relu", torch.relu, [("x", away_from_zero(torch.randn(3, 4), 0.05))])
    grad_case(g, "sigmoid", torch.sigmoid, [("x", torch.randn(3, 4) * 2)])
    grad_case(g, "tanh", torch.tanh, [("x", torch.randn(3, 4) * 2)])

    # --- reductions -------------------------------------------------------------
    x = torch.randn(3, 4)
    grad_case(g, "sum/all", lambda t: t.sum(), [("x", x)])
    grad_case(g, "sum/dim0", lambda t: t.sum(0), [("x", x)])
    grad_case(g, "sum/dim0_keepdim", lambda t: t.sum(0, keepdim=True), [("x", x)])
    grad_case(g, "sum/dim1", lambda t: t.sum(1), [("x", x)])
    grad_case(g, "sum/dim1_keepdim", lambda t: t.sum(1, keepdim=True), [("x", x)])
    x = torch.randn(3, 4)
    grad_case(g, "mean/all", lambda t: t.mean(), [("x", x)])
    grad_case(g, "mean/dim0", lambda t: t.mean(0), [("x", x)])
    grad_case(g, "mean/dim1", lambda t: t.mean(1), [("x", x)])
    grad_case(g, "mean/dim1_keepdim", lambda t: t.mean(1, keepdim=True), [("x", x)])

    # --- matmul / linear ----------------------------------------------------------
    grad_case(g, "matmul/plain", torch.matmul, [("a", torch.randn(3, 4)), ("b", torch.randn(4, 5))])
    # a is stored (4,3); out = a^T @ b
    grad_case(g, "matmul/at_b", lambda a, b: a.t() @ b, [("a", torch.randn(4, 3)), ("b", torch.randn(4, 5))])
    # b is stored (5,4); out = a @ b^T
    grad_case(g, "matmul/a_bt", lambda a, b: a @ b.t(), [("a", torch.randn(3, 4)), ("b", torch.randn(5, 4))])
    # both transposed: a (4,3), b (5,4); out = a^T @ b^T
    grad_case(g, "matmul/at_bt", lambda a, b: a.t() @ b.t(), [("a", torch.randn(4, 3)), ("b", torch.randn(5, 4))])
    grad_case(g, "linear/bias", F.linear,
              [("x", torch.randn(3, 4)), ("weight", torch.randn(5, 4)), ("bias", torch.randn(5))])
    grad_case(g, "linear/nobias", F.linear, [("x", torch.randn(3, 4)), ("weight", torch.randn(5, 4))])

    # --- shape ops -------------------------------------------------------------------
    grad_case(g, "transpose/2d", lambda t: t.t(), [("x", torch.randn(3, 4))])
    grad_case(g, "transpose/3d_0_2", lambda t: t.transpose(0, 2), [("x", torch.randn(2, 3, 4))])
    grad_case(g, "reshape/2x6", lambda t: t.reshape(2, 6), [("x", torch.randn(3, 4))])
    grad_case(g, "reshape/flat", lambda t: t.reshape(12), [("x", torch.randn(3, 4))])
    grad_case(g, "reshape/3d_to_2d", lambda t: t.reshape(6, 4), [("x", torch.randn(2, 3, 4))])

    # --- softmax family ------------------------------------------------------------------
    grad_case(g, "softmax/dim1", lambda t: torch.softmax(t, 1), [("x", torch.randn(3, 5))])
    grad_case(g, "log_softmax/dim1", lambda t: torch.log_softmax(t, 1), [("x", torch.randn(3, 5))])
    # large logits (around +-100): a naive exp() would overflow
    grad_case(g, "log_softmax/large", lambda t: torch.log_softmax(t, 1),
              [("x", torch.randn(3, 5) * 20 + torch.tensor([[100.0], [-100.0], [0.0]]))])
    grad_case(g, "softmax/large", lambda t: torch.softmax(t, 1),
              [("x", torch.randn(3, 5) * 20 + torch.tensor([[100.0], [-100.0], [0.0]]))])

    # --- losses (scalar losses use gout = 1) ------------------------------------------------
    logits = torch.randn(4, 5)
    target = torch.tensor([1, 0, 4, 2], dtype=torch.int64)
    grad_case(g, "cross_entropy/mean", lambda z, t: F.cross_entropy(z, t),
              [("logits", logits), ("target", target)], gout=torch.tensor(1.0))
    grad_case(g, "cross_entropy/sum", lambda z, t: F.cross_entropy(z, t, reduction="sum"),
              [("logits", logits), ("target", target)], gout=torch.tensor(1.0))
    grad_case(g, "cross_entropy/none", lambda z, t: F.cross_entropy(z, t, reduction="none"),
              [("logits", logits), ("target", target)])
    grad_case(g, "mse_loss/mean", F.mse_loss,
              [("pred", torch.randn(3, 4)), ("target", torch.randn(3, 4))], gout=torch.tensor(1.0))

    # --- max / argmax -----------------------------------------------------------------------
    x = torch.randn(3, 5)
    grad_case(g, "max/dim1", lambda t: t.max(1).values, [("x", x)])
    g.i64("max/dim1/indices", x.max(1).indices)
    g.i64("argmax/dim1/out", x.argmax(1))  # same x as max/dim1
    # ties: PyTorch returns the FIRST maximal index, and max's gradient goes only there
    xt = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, -5.0, -1.0, -7.0]])
    grad_case(g, "max/ties", lambda t: t.max(1).values, [("x", xt)], gout=torch.tensor([1.0, 2.0, 3.0]))
    g.i64("max/ties/indices", xt.max(1).indices)
    g.i64("argmax/ties/out", xt.argmax(1))

    # --- composite: a tensor used twice, gradients must accumulate ----------------------------
    grad_case(g, "composite/reuse", lambda a, b: a * a + torch.exp(a) * b,
              [("a", torch.randn(3, 4)), ("b", torch.randn(3, 4))])
    g.write()


# ---------------------------------------------------------------------------
# mlp.txt
# ---------------------------------------------------------------------------

LAYERS = ("fc1", "fc2", "fc3")


def make_mlp():
    return nn.Sequential(collections.OrderedDict([
        ("fc1", nn.Linear(6, 8)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(8, 5)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(5, 3)),
    ]))


def write_params(g, prefix, model, grads=False):
    for layer in LAYERS:
        mod = getattr(model, layer)
        for pname in ("weight", "bias"):
            p = getattr(mod, pname)
            g.f32("%s/%s/%s" % (prefix, layer, pname), p.grad if grads else p)


SGD_SETTINGS = [
    ("plain", dict(lr=0.1)),
    ("momentum", dict(lr=0.1, momentum=0.9)),
    ("nesterov", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("damp_wd", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
]


def gen_mlp():
    g = GoldenFile("mlp.txt")
    g.comment("MLP Linear(6,8)-ReLU-Linear(8,5)-ReLU-Linear(5,3), PyTorch default init, seed 0.")
    torch.manual_seed(0)
    model = make_mlp()
    x = torch.randn(4, 6)
    target = torch.tensor([0, 2, 1, 2], dtype=torch.int64)
    write_params(g, "init", model)
    g.f32("input/x", x)
    g.i64("input/target", target)

    # forward with intermediate activations, loss, and all gradients
    xg = x.clone().requires_grad_(True)
    h1 = model.fc1(xg)
    a1 = torch.relu(h1)
    h2 = model.fc2(a1)
    a2 = torch.relu(h2)
    logits = model.fc3(a2)
    loss = F.cross_entropy(logits, target)
    loss.backward()
    g.f32("fwd/fc1", h1)
    g.f32("fwd/relu1", a1)
    g.f32("fwd/fc2", h2)
    g.f32("fwd/relu2", a2)
    g.f32("logits", logits)
    g.f32("loss", loss)
    write_params(g, "grad", model, grads=True)
    g.f32("grad/x", xg.grad)

    # SGD trajectories: each starts from the same initial weights
    for tag, hp in SGD_SETTINGS:
        g.comment("sgd/%s: torch.optim.SGD(%s)" % (tag, ", ".join("%s=%s" % kv for kv in hp.items())))
        m = copy.deepcopy(model)
        m.zero_grad(set_to_none=True)
        opt = torch.optim.SGD(m.parameters(), **hp)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            step_loss = F.cross_entropy(m(x), target)
            losses.append(step_loss.item())
            step_loss.backward()
            opt.step()
        g.f32("sgd/%s/loss" % tag, torch.tensor(losses))
        write_params(g, "sgd/%s/final" % tag, m)
        with torch.no_grad():
            g.f32("sgd/%s/loss_after" % tag, F.cross_entropy(m(x), target))
    g.write()


# ---------------------------------------------------------------------------
# quant_core.txt
# ---------------------------------------------------------------------------

def qparam_pairs():
    """(min, max) pairs fed to the observers (as float32)."""
    pairs = [
        (-1.0, 1.0), (0.0, 1.0), (-1.0, 0.0),
        (0.5, 2.0),              # min > 0: widened to (0, 2)
        (-3.0, -1.0),            # max < 0: widened to (-3, 0)
        (0.0, 0.0),              # empty range -> scale = eps
        (-1e-10, 1e-10), (0.0, 1e-10), (-1e-10, 0.0), (2e-10, 3e-10),  # tiny ranges
        (-1e6, 1e6), (-1e4, 3.0), (-2.0, 1e5), (-1e20, 1e20),           # big ranges
        (-0.3, 5.7), (-2.5, 0.1), (-6.3, 6.2), (-1.23, 4.56), (-0.1, 100.0),  # asymmetric
    ]
    # Exact .5 ties in min/scale for ranges of width W (scale becomes exactly 1):
    # min/scale = -0.5, -1.5, -2.5 -> round half to even -> 0, -2, -2.
    for width in (255, 127, 15, 3):
        for m in (0.5, 1.5, 2.5):
            pairs.append((-m, width - m))
    rng = np.random.RandomState(7)
    for _ in range(8):
        a, b = sorted(rng.standard_normal(2) * 3)
        pairs.append((a, b))
    return np.array(pairs, dtype=np.float32)


def gen_qparams(g):
    pairs = qparam_pairs()
    g.comment("")
    g.comment("== qparams: MinMaxObserver(dtype, qscheme, quant_min, quant_max) after observing")
    g.comment("   torch.tensor([min, max]) (float32).  dtype = quint8 if quant_min >= 0 else qint8.")
    g.f32("qparams/minmax", pairs)
    g.f32("qparams/eps", np.finfo(np.float32).eps)
    for scheme_name, scheme in (("per_tensor_affine", torch.per_tensor_affine),
                                ("per_tensor_symmetric", torch.per_tensor_symmetric)):
        for qmin, qmax in RANGES:
            scales, zps = [], []
            for mn, mx in pairs:
                obs = tq.MinMaxObserver(dtype=dtype_for(qmin), qscheme=scheme,
                                        quant_min=qmin, quant_max=qmax, reduce_range=False)
                assert (obs.quant_min, obs.quant_max) == (qmin, qmax)
                obs(torch.tensor([mn, mx], dtype=torch.float32))
                s, z = obs.calculate_qparams()
                ref_s, ref_z = np_observer_qparams(mn, mx, qmin, qmax, scheme == torch.per_tensor_symmetric, qmin >= 0)
                assert F32(s.item()) == ref_s and int(z.item()) == ref_z, (scheme_name, qmin, qmax, mn, mx)
                scales.append(s.item())
                zps.append(int(z.item()))
            base = "qparams/%s/%s" % (scheme_name, range_tag(qmin, qmax))
            g.f32(base + "/scale", scales, exact=True)
            g.i64(base + "/zero_point", zps)
    # quint8 symmetric WITHOUT quant_min/quant_max (no custom range): zero point is 128, not 127
    scales, zps = [], []
    for mn, mx in pairs:
        obs = tq.MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric)
        obs(torch.tensor([mn, mx], dtype=torch.float32))
        s, z = obs.calculate_qparams()
        ref_s, ref_z = np_observer_qparams(mn, mx, 0, 255, True, True, custom_range=False)
        assert F32(s.item()) == ref_s and int(z.item()) == ref_z
        scales.append(s.item())
        zps.append(int(z.item()))
    g.f32("qparams/per_tensor_symmetric/quint8_default/scale", scales, exact=True)
    g.i64("qparams/per_tensor_symmetric/quint8_default/zero_point", zps)

    # Per-channel observers.
    g.comment("")
    g.comment("== qparams_pc: PerChannelMinMaxObserver(ch_axis, dtype, qscheme, quant_min, quant_max)")
    x0 = torch.tensor([
        [-1.0, 0.5, 2.0, -0.25, 0.75, 1.5],     # mixed signs
        [0.5, 1.0, 3.0, 0.25, 2.0, 0.1],        # all positive
        [-4.0, -0.5, -1.0, -2.0, -0.3, -0.1],   # all negative
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],         # all zero
        [-1e-9, 2e-9, 0.0, 1e-9, -3e-9, 0.0],   # tiny
    ])
    x1 = torch.randn(3, 5) * torch.tensor([0.1, 1.0, 5.0, 0.5, 2.0])  # ch_axis=1: 5 channels
    x1[:, 3] = x1[:, 3].abs() + 0.1   # channel 3 all positive
    for axis_tag, x, axis in (("axis0", x0, 0), ("axis1", x1, 1)):
        g.f32("qparams_pc/%s/x" % axis_tag, x)
        for scheme_name, scheme in (("per_channel_affine", torch.per_channel_affine),
                                    ("per_channel_symmetric", torch.per_channel_symmetric)):
            for qmin, qmax in ((-128, 127), (0, 255), (0, 15), (-8, 7)):
                obs = tq.PerChannelMinMaxObserver(ch_axis=axis, dtype=dtype_for(qmin), qscheme=scheme,
                                                  quant_min=qmin, quant_max=qmax, reduce_range=False)
                obs(x)
                s, z = obs.calculate_qparams()
                mins = x.amin(dim=1 - axis).numpy()
                maxs = x.amax(dim=1 - axis).numpy()
                for c in range(len(mins)):
                    rs, rz = np_observer_qparams(mins[c], maxs[c], qmin, qmax,
                                                 scheme == torch.per_channel_symmetric, qmin >= 0)
                    assert F32(s[c].item()) == rs and int(z[c]) == rz, (axis_tag, scheme_name, qmin, c)
                base = "qparams_pc/%s/%s/%s" % (axis_tag, scheme_name, range_tag(qmin, qmax))
                g.f32(base + "/scale", s)
                g.i64(base + "/zero_point", z)


def fq_inputs(scale, zp, qmin, qmax, rng, n_random=12):
    """Float32 test inputs for fake quant with the given qparams.

    - values whose x/scale is exactly (or, for non power-of-two scales, nearly)
      k + 0.5: ties of the rounding, around the zero point and at both ends;
    - the exact representable ends, one step outside, far outside;
    - 0 and random values over the range plus a margin.
    """
    s = float(F32(scale))
    vals = []
    lo, hi = qmin - zp, qmax - zp  # x/scale range that is not clamped
    for k in sorted(set([lo - 2, lo - 1, lo, lo + 1, -3, -2, -1, 0, 1, 2, hi - 1, hi])):
        vals.append((k + 0.5) * s)
    vals += [lo * s, hi * s, (lo - 1) * s, (hi + 1) * s, (lo - 40) * s, (hi + 40) * s, 0.0, 1e4, -1e4]
    vals += list(rng.uniform((lo - 4) * s, (hi + 4) * s, n_random))
    return np.array(vals, dtype=np.float32)


def near_tie_inputs(scale, qmin, qmax, zp, count=16):
    """Float32 x inside the range where nearbyint(x/s) != nearbyint(x*(1/s))."""
    s = F32(scale)
    inv = F32(1) / s
    found = []
    for k in range(qmin - zp, qmax - zp):
        base = F32((k + 0.5) * float(s))
        for cand in (np.nextafter(base, F32(-np.inf)), base, np.nextafter(base, F32(np.inf))):
            cand = F32(cand)
            if np.rint(cand / s) != np.rint(cand * inv):
                found.append(cand)
    assert len(found) >= count, (scale, len(found))
    idx = np.linspace(0, len(found) - 1, count).round().astype(int)
    return np.array([found[i] for i in idx], dtype=np.float32)


def gen_fake_quant(g):
    rng = np.random.RandomState(11)
    g.comment("")
    g.comment("== fq_tensor: torch.fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)")
    g.comment("   backward: grad_x = gout * (quant_min <= z + nearbyint(x*(1/s)) <= quant_max)")
    cases = [
        ("u7_s0.5", 0, 127, 0.5, 11),
        ("u8_s0.5", 0, 255, 0.5, 128),
        ("i8_s0.5", -128, 127, 0.5, 0),
        ("u4_s0.5", 0, 15, 0.5, 3),
        ("u7_s0.1", 0, 127, 0.1, 64),
        ("u8_s0.1", 0, 255, 0.1, 37),
        ("i8_s0.1", -128, 127, 0.1, -5),
        ("u4_s0.1", 0, 15, 0.1, 3),
        ("i8_s3", -128, 127, 3.0, 1),       # non power-of-two scale, odd zero point
        ("i8_s0.7_neartie", -128, 127, 0.7, 0),
    ]
    disagreements = {}
    for tag, qmin, qmax, scale, zp in cases:
        s = F32(scale)
        if tag.endswith("neartie"):
            x = near_tie_inputs(scale, qmin, qmax, zp)
        else:
            x = fq_inputs(scale, zp, qmin, qmax, rng)
        xt = torch.tensor(x, requires_grad=True)
        out = torch.fake_quantize_per_tensor_affine(xt, float(s), zp, qmin, qmax)
        gout = torch.randn(out.shape)
        out.backward(gout)
        ref_out, ref_q, inside = np_fake_quant(x, s, zp, qmin, qmax)
        assert np.array_equal(out.detach().numpy(), ref_out), tag
        assert np.array_equal(xt.grad.numpy(), np.where(inside, gout.numpy(), 0).astype(np.float32)), tag
        # how many entries a division-based implementation would get wrong
        q_div = np.clip(np.rint(x / s) + zp, qmin, qmax)
        disagreements[tag] = int((q_div != ref_q).sum())
        base = "fq_tensor/" + tag
        g.f32(base + "/x", x)
        g.f32(base + "/scale", s)
        g.i64(base + "/zero_point", zp)
        g.i64(base + "/quant_min", qmin)
        g.i64(base + "/quant_max", qmax)
        g.f32(base + "/out", out)
        g.i64(base + "/q", ref_q)
        g.f32(base + "/gout", gout)
        g.f32(base + "/grad_x", xt.grad)
    g.comment("entries where clamp(nearbyint(x/s)+z) (division) differs from PyTorch's x*(1/s): %s"
              % ", ".join("%s=%d" % kv for kv in disagreements.items()))

    g.comment("")
    g.comment("== fq_channel: torch.fake_quantize_per_channel_affine(x, scale, zero_point(int32), axis, qmin, qmax)")
    pc_cases = [
        ("axis0_i8", 0, -128, 127, [0.5, 0.1, 3.0], [0, -5, 1]),
        ("axis0_u8", 0, 0, 255, [0.5, 0.1, 0.25], [128, 37, 0]),
        ("axis1_u4", 1, 0, 15, [0.5, 0.1, 0.2], [3, 0, 15]),
    ]
    for tag, axis, qmin, qmax, scales, zps in pc_cases:
        cols = []
        for s, z in zip(scales, zps):
            full = fq_inputs(s, z, qmin, qmax, rng, n_random=4)
            pick = rng.choice(len(full), 12, replace=False)
            cols.append(full[np.sort(pick)])
        x = np.stack(cols, axis=0)  # (C, 12)
        if axis == 1:
            x = np.ascontiguousarray(x.T)  # (12, C)
        s_t = torch.tensor(scales, dtype=torch.float32)
        z_t = torch.tensor(zps, dtype=torch.int32)
        xt = torch.tensor(x, requires_grad=True)
        out = torch.fake_quantize_per_channel_affine(xt, s_t, z_t, axis, qmin, qmax)
        gout = torch.randn(out.shape)
        out.backward(gout)
        ref_out = np.empty_like(x)
        ref_q = np.empty(x.shape, dtype=np.int64)
        inside = np.empty(x.shape, dtype=bool)
        for c, (s, z) in enumerate(zip(scales, zps)):
            sl = (c, slice(None)) if axis == 0 else (slice(None), c)
            ref_out[sl], ref_q[sl], inside[sl] = np_fake_quant(x[sl], F32(s), z, qmin, qmax)
        assert np.array_equal(out.detach().numpy(), ref_out), tag
        assert np.array_equal(xt.grad.numpy(), np.where(inside, gout.numpy(), 0).astype(np.float32)), tag
        base = "fq_channel/" + tag
        g.f32(base + "/x", x)
        g.i64(base + "/axis", axis)
        g.f32(base + "/scale", s_t)
        g.i64(base + "/zero_point", z_t)
        g.i64(base + "/quant_min", qmin)
        g.i64(base + "/quant_max", qmax)
        g.f32(base + "/out", out)
        g.i64(base + "/q", ref_q)
        g.f32(base + "/gout", gout)
        g.f32(base + "/grad_x", xt.grad)


# six batches with different spreads and offsets, shared by the moving-average cases
MA_SPREADS = [1.0, 3.0, 0.5, 10.0, 2.0, 0.1]
MA_OFFSETS = [0.0, 0.5, -1.0, 2.0, 0.0, 1.0]


def ma_batches():
    torch.manual_seed(99)
    return [torch.randn(4, 8) * sp + off for sp, off in zip(MA_SPREADS, MA_OFFSETS)]


def gen_moving_average(g):
    batches = ma_batches()
    c = F32(0.01)

    g.comment("")
    g.comment("== ma_tensor: MovingAverageMinMaxObserver(averaging_constant=0.01, dtype=quint8,")
    g.comment("   qscheme=per_tensor_affine, quant_min=0, quant_max=127); state after each batch")
    obs = tq.MovingAverageMinMaxObserver(averaging_constant=0.01, dtype=torch.quint8,
                                         qscheme=torch.per_tensor_affine, quant_min=0, quant_max=127)
    ref_min = ref_max = None
    for i, x in enumerate(batches):
        obs(x)
        s, z = obs.calculate_qparams()
        bmin, bmax = F32(x.min().item()), F32(x.max().item())
        if ref_min is None:
            ref_min, ref_max = bmin, bmax
        else:
            ref_min = F32(ref_min + F32(c * F32(bmin - ref_min)))
            ref_max = F32(ref_max + F32(c * F32(bmax - ref_max)))
        assert F32(obs.min_val.item()) == ref_min and F32(obs.max_val.item()) == ref_max, i
        base = "ma_tensor/batch%d" % i
        g.f32(base + "/x", x)
        g.f32(base + "/min_val", obs.min_val)
        g.f32(base + "/max_val", obs.max_val)
        g.f32(base + "/scale", s[0])
        g.i64(base + "/zero_point", z[0])

    g.comment("")
    g.comment("== ma_channel: MovingAveragePerChannelMinMaxObserver(averaging_constant=0.01, dtype=qint8,")
    g.comment("   qscheme=per_channel_symmetric, quant_min=-128, quant_max=127, ch_axis=0); same batches (4,8)")
    obs = tq.MovingAveragePerChannelMinMaxObserver(averaging_constant=0.01, dtype=torch.qint8,
                                                   qscheme=torch.per_channel_symmetric,
                                                   quant_min=-128, quant_max=127, ch_axis=0)
    for i, x in enumerate(batches):
        obs(x)
        s, z = obs.calculate_qparams()
        base = "ma_channel/batch%d" % i
        g.f32(base + "/x", x)
        g.f32(base + "/min_val", obs.min_val)
        g.f32(base + "/max_val", obs.max_val)
        g.f32(base + "/scale", s)
        g.i64(base + "/zero_point", z)


def describe_fake_quant(fq):
    obs = fq.activation_post_process
    lines = ["  %s" % type(fq).__name__,
             "    observer      = %s" % type(obs).__name__,
             "    dtype         = %s" % fq.dtype,
             "    qscheme       = %s" % fq.qscheme,
             "    quant_min/max = %d / %d" % (fq.quant_min, fq.quant_max),
             "    reduce_range  = %s (observer attribute; quant_min/max above are already the effective range)" % obs.reduce_range,
             "    averaging_constant = %r" % obs.averaging_constant,
             "    eps           = %r" % obs.eps.item()]
    if hasattr(obs, "ch_axis"):
        lines.append("    ch_axis       = %d" % obs.ch_axis)
    return lines


def gen_qat_qconfig(g):
    qconfig = tq.get_default_qat_qconfig("fbgemm")
    act, wt = qconfig.activation(), qconfig.weight()
    g.comment("")
    g.comment("== get_default_qat_qconfig('fbgemm') in PyTorch %s:" % torch.__version__)
    g.comment(repr(qconfig))
    g.comment("activation fake-quant:")
    for line in describe_fake_quant(act):
        g.comment(line)
    g.comment("weight fake-quant:")
    for line in describe_fake_quant(wt):
        g.comment(line)
    print("\n".join(["default QAT qconfig (fbgemm):", "activation:"] + describe_fake_quant(act)
                    + ["weight:"] + describe_fake_quant(wt)))

    # The fused fake-quant module does NOT use the observer's Python formula for
    # its qparams: torch.fused_moving_avg_obs_fake_quant calls the C++
    # ChooseQuantizationParams (see np_choose_qparams).  Record what it does.
    g.comment("")
    g.comment("== fused_act: the fbgemm QAT activation fake-quant (FusedMovingAvgObsFakeQuantize, 0..127)")
    g.comment("   run in train mode over the ma_tensor batches; after each batch: its scale/zero_point")
    g.comment("   (used for that batch's output) and what its observer's calculate_qparams() says.")
    batches = ma_batches()
    for i, x in enumerate(batches):
        out = act(x)
        obs = act.activation_post_process
        ref_s, ref_z = np_choose_qparams(obs.min_val.item(), obs.max_val.item(), 0, 127)
        assert F32(act.scale.item()) == ref_s and int(act.zero_point.item()) == ref_z, i
        ref_out, _, _ = np_fake_quant(x.numpy(), ref_s, ref_z, 0, 127)
        assert np.array_equal(out.detach().numpy(), ref_out), i
        os_, oz = obs.calculate_qparams()
        base = "fused_act/batch%d" % i
        g.f32(base + "/min_val", obs.min_val)
        g.f32(base + "/max_val", obs.max_val)
        g.f32(base + "/scale", act.scale[0])
        g.i64(base + "/zero_point", act.zero_point[0])
        g.f32(base + "/out", out)
        g.f32(base + "/observer_scale", os_[0])
        g.i64(base + "/observer_zero_point", oz[0])

    g.comment("")
    g.comment("== fused_weight: the fbgemm QAT weight fake-quant (per-channel symmetric qint8, ch_axis 0)")
    g.comment("   on one (4,8) tensor; its scale differs from the observer's calculate_qparams().")
    torch.manual_seed(5)
    w = torch.randn(4, 8) * torch.tensor([[0.1], [1.0], [0.5], [2.0]])
    w[2] = w[2].abs() + 0.05  # an all-positive channel
    out = wt(w)
    obs = wt.activation_post_process
    for c in range(4):
        rs, rz = np_choose_qparams(obs.min_val[c].item(), obs.max_val[c].item(), -128, 127, preserve_sparsity=True)
        assert F32(wt.scale[c].item()) == rs and int(wt.zero_point[c]) == rz, c
    os_, oz = obs.calculate_qparams()
    g.f32("fused_weight/x", w)
    g.f32("fused_weight/scale", wt.scale)
    g.i64("fused_weight/zero_point", wt.zero_point)
    g.f32("fused_weight/out", out)
    g.f32("fused_weight/observer_scale", os_)
    g.i64("fused_weight/observer_zero_point", oz)


def gen_quant_core():
    g = GoldenFile("quant_core.txt")
    g.comment("Quantization core: observer qparams, fake quant forward/backward, moving-average")
    g.comment("observers, default fbgemm QAT qconfig.  PyTorch %s.  See README.md." % torch.__version__)
    torch.manual_seed(4321)
    gen_qparams(g)
    gen_fake_quant(g)
    gen_moving_average(g)
    gen_qat_qconfig(g)
    g.write()


# ---------------------------------------------------------------------------
# quant_ptq.txt
# ---------------------------------------------------------------------------

def gen_histogram(g):
    preset = tq.get_default_qconfig("fbgemm")
    g.comment("")
    g.comment("== hist: HistogramObserver over 4 batches of 64 values (batches 1 and 3 have outliers)")
    g.comment("   get_default_qconfig('fbgemm') = %r" % (preset,))
    torch.manual_seed(2024)
    batches = [torch.randn(64) for _ in range(4)]
    batches[1][5] = 25.0
    batches[3][3] = -18.0
    batches[3][40] = 30.0
    for i, b in enumerate(batches):
        g.f32("hist/batch%d" % i, b)
    observers = [
        ("fbgemm", preset.activation()),  # HistogramObserver(reduce_range=True): quint8, 0..127
        ("full", tq.HistogramObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=False)),
    ]
    for tag, obs in observers:
        g.comment("   hist/%s: %s dtype=%s qscheme=%s reduce_range=%s quant_min=%d quant_max=%d bins=%d upsample_rate=%d"
                  % (tag, type(obs).__name__, obs.dtype, obs.qscheme, obs.reduce_range,
                     obs.quant_min, obs.quant_max, obs.bins, obs.upsample_rate))
        for i, b in enumerate(batches):
            obs(b)
            g.f32("hist/%s/after%d/min_val" % (tag, i), obs.min_val)
            g.f32("hist/%s/after%d/max_val" % (tag, i), obs.max_val)
        new_min, new_max = obs._non_linear_param_search()
        s, z = obs.calculate_qparams()
        g.i64("hist/%s/quant_min" % tag, obs.quant_min)
        g.i64("hist/%s/quant_max" % tag, obs.quant_max)
        g.i64("hist/%s/bins" % tag, obs.bins)
        g.i64("hist/%s/upsample_rate" % tag, obs.upsample_rate)
        g.f32("hist/%s/min_val" % tag, obs.min_val)
        g.f32("hist/%s/max_val" % tag, obs.max_val)
        g.f32("hist/%s/histogram" % tag, obs.histogram)
        g.f32("hist/%s/search_min" % tag, new_min)
        g.f32("hist/%s/search_max" % tag, new_max)
        g.f32("hist/%s/scale" % tag, s[0])
        g.i64("hist/%s/zero_point" % tag, z[0])
        # the final qparams are the observer formula applied to the searched range
        rs, rz = np_observer_qparams(new_min.item(), new_max.item(), obs.quant_min, obs.quant_max, False, True)
        assert F32(s.item()) == rs and int(z.item()) == rz, tag


def weight_qparams(qweight):
    if qweight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return (torch.tensor(qweight.q_scale(), dtype=torch.float64),
                torch.tensor(qweight.q_zero_point()))
    return qweight.q_per_channel_scales(), qweight.q_per_channel_zero_points()


def gen_dynamic_linear(g):
    g.comment("")
    g.comment("== dynamic: torch.ao.quantization.quantize_dynamic on nn.Linear(16, 8)")
    g.comment("   (DynamicQuantizedLinear; its forward always passes reduce_range=True to the kernel).")
    g.comment("   This PyTorch build has no FBGEMM; engines available: %s" % torch.backends.quantized.supported_engines)
    torch.manual_seed(77)
    lin = nn.Linear(16, 8)
    x = torch.randn(5, 16) * 2.0 + 0.5
    g.f32("dynamic/weight", lin.weight)
    g.f32("dynamic/bias", lin.bias)
    g.f32("dynamic/x", x)
    xn = x.numpy()
    for qtag, qconfig in (("per_tensor", tq.default_dynamic_qconfig),
                          ("per_channel", tq.per_channel_dynamic_qconfig)):
        g.comment("   dynamic/%s: weight observer %r" % (qtag, qconfig.weight()))
        weight_written = False
        for engine in ("onednn", "qnnpack"):
            torch.backends.quantized.engine = engine
            model = tq.quantize_dynamic(nn.Sequential(copy.deepcopy(lin)), {nn.Linear: qconfig}, dtype=torch.qint8)
            qw = model[0].weight()
            wq = qw.int_repr().numpy().astype(np.int64)
            ws, wz = weight_qparams(qw)
            if not weight_written:
                g.f32("dynamic/%s/weight_scale" % qtag, ws, exact=True)
                g.i64("dynamic/%s/weight_zero_point" % qtag, wz)
                g.i64("dynamic/%s/weight_int" % qtag, wq)
                weight_written = (ws, wz, wq)
            else:  # weight quantization does not depend on the engine
                assert torch.equal(ws, weight_written[0]) and np.array_equal(wq, weight_written[2])
            y = model(x).detach().numpy()
            # Work out which activation qparams the kernel used by re-computing
            # the output for both candidate ranges.
            ws_f = np.broadcast_to(ws.numpy().astype(np.float32), (8,))
            best = None
            for rr in (True, False):
                s, z = np_choose_qparams(xn.min(), xn.max(), 0, 255, reduce_range=rr)
                qmax = 127 if rr else 255
                xq = np.clip(np.rint(xn * (F32(1) / s)) + z, 0, qmax).astype(np.int64)
                acc = (xq - z) @ wq.T
                emu = acc.astype(np.float32) * (s * ws_f)[None, :] + lin.bias.detach().numpy()[None, :]
                err = float(np.abs(emu - y).max())
                if best is None or err < best[0]:
                    best = (err, rr, s, z, qmax, xq, acc)
            err, rr, s, z, qmax, xq, acc = best
            assert err < 1e-5, (engine, qtag, err)
            base = "dynamic/%s/%s" % (qtag, engine)
            g.comment("   %s: activation reduce_range=%s -> range 0..%d, scale=%r zero_point=%d (max |emulation - out| = %.3g)"
                      % (base, rr, qmax, float(s), z, err))
            g.f32(base + "/out", y)
            g.f32(base + "/act_scale", s)
            g.i64(base + "/act_zero_point", z)
            g.i64(base + "/act_quant_min", 0)
            g.i64(base + "/act_quant_max", qmax)
            g.i64(base + "/x_int", xq)
            g.i64(base + "/acc", acc)
    torch.backends.quantized.engine = "onednn"


def gen_static_linear(g):
    g.comment("")
    g.comment("== static: torch.ao.nn.quantized.Linear(16, 8) and torch.nn.intrinsic.quantized.LinearReLU")
    g.comment("   quint8 input (per-tensor), qint8 weight per-channel symmetric (PerChannelMinMaxObserver")
    g.comment("   as in get_default_qconfig('fbgemm')), float bias, quint8 output with given scale/zero point.")
    torch.manual_seed(31)
    w = torch.randn(8, 16) * 0.3
    w[3] *= 0.05  # a channel with a much smaller range
    b = torch.randn(8) * 0.5
    x = torch.randn(5, 16)
    x_scale, x_zp = 0.05, 60
    wobs = tq.PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    wobs(w)
    ws, wz = wobs.calculate_qparams()
    qw = torch.quantize_per_channel(w, ws.double(), wz, 0, torch.qint8)
    qx = torch.quantize_per_tensor(x, x_scale, x_zp, torch.quint8)
    xq = qx.int_repr().numpy().astype(np.int64)
    # the input quantization is nearbyint(x * (1/s)) + z, clamped to 0..255
    assert np.array_equal(xq, np.clip(np.rint(x.numpy() * (F32(1) / F32(x_scale))) + x_zp, 0, 255))
    wq = qw.int_repr().numpy().astype(np.int64)
    acc = (xq - x_zp) @ wq.T
    g.f32("static/x_float", x)
    g.f32("static/x_scale", F32(x_scale))
    g.i64("static/x_zero_point", x_zp)
    g.i64("static/x_int", xq)
    g.f32("static/weight_float", w)
    g.f32("static/weight_scale", qw.q_per_channel_scales(), exact=True)
    g.i64("static/weight_zero_point", qw.q_per_channel_zero_points())
    g.i64("static/weight_int", wq)
    g.f32("static/bias", b)
    g.i64("static/acc", acc)
    sx = np.float64(F32(x_scale))
    sw = qw.q_per_channel_scales().numpy()
    configs = [
        ("linear", nnq.Linear, 0.08, 70),
        ("linear_relu", nniq.LinearReLU, 0.08, 70),
        ("linear_sat", nnq.Linear, 0.01, 128),       # small output scale: many outputs clamp to 0/255
        ("linear_relu_sat", nniq.LinearReLU, 0.01, 128),
    ]
    for tag, cls, y_scale, y_zp in configs:
        real = (acc * (sx * sw)[None, :] + b.double().numpy()[None, :]) / np.float64(F32(y_scale)) + y_zp
        results = {}
        for engine in ("onednn", "qnnpack"):
            torch.backends.quantized.engine = engine
            m = cls(16, 8)
            m.set_weight_bias(qw, b)
            m.scale, m.zero_point = y_scale, y_zp
            results[engine] = m(qx).int_repr().numpy().astype(np.int64)
        ref = np.clip(np.rint(real), 0, 255)
        if cls is nniq.LinearReLU:
            ref = np.maximum(ref, y_zp)
        for engine, out in results.items():
            n_diff = int((out != ref).sum())
            g.comment("   static/%s: %s output ints differing from clamp(rint(out_real)): %d (max |diff| %d)"
                      % (tag, engine, n_diff, int(np.abs(out - ref).max())))
        base = "static/" + tag
        g.f32(base + "/y_scale", F32(y_scale))
        g.i64(base + "/y_zero_point", y_zp)
        g.f64(base + "/out_real", real)
        if np.array_equal(results["onednn"], results["qnnpack"]):
            g.i64(base + "/out_int", results["onednn"])
        else:
            g.i64(base + "/out_int", results["onednn"])
            g.i64(base + "/out_int_qnnpack", results["qnnpack"])
    torch.backends.quantized.engine = "onednn"


def gen_quant_ptq():
    g = GoldenFile("quant_ptq.txt")
    g.comment("Post-training quantization: HistogramObserver, dynamic and static quantized Linear.")
    g.comment("PyTorch %s.  See README.md." % torch.__version__)
    gen_histogram(g)
    gen_dynamic_linear(g)
    gen_static_linear(g)
    g.write()


# ---------------------------------------------------------------------------
# lsq.txt: learnable fake quant (LSQ)
# ---------------------------------------------------------------------------

def np_lsq(x, gout, scale, zero_point, qmin, qmax, grad_factor, axis=None, pytorch=True):
    """Forward and per-element gradients of the learnable fake quant, float32.

    scale, zero_point: (C) float32 (C = 1 per tensor); axis: None per tensor.
    pytorch=False is tinyqat's formula, the derivative of the forward it computed:
        z = clamp(rint(zero_point)); r = rint(x * (1/s)); q = z + r
    pytorch=True is what PyTorch 1.13's CPU backward kernels compute (this
    Debian build contracts a*b+c into one fused multiply-add), which differs
    from the forward in three places:
      - per tensor, the backward's zero point is int(clamp(zero_point + 0.5))
        (truncation toward zero), not the forward's rint;
      - z is added before rounding, q = rint(z + x * (1/s)): exact ties round
        differently from the forward when z is odd;
      - z + x * (1/s) is one fused multiply-add (one rounding), so values
        within an ulp of a tie can round differently from the forward's
        rint(x * (1/s)).
    Then, with gf = float32(grad_factor) and r*s - x rounded once (an FMA in
    PyTorch; exact in float64 here, then rounded to float32):
        inside  (qmin <= q <= qmax): dx = g, ds = ((g * (r*s - x)) * (1/s)) * gf, dz = 0,  r = q - z
        below / above:               dx = 0, ds = (g * (qmin - z or qmax - z)) * gf,  dz = ((g * -1) * s) * gf
    Returns out, dx, ds_elem, dz_elem (all x's shape).
    """
    x = np.asarray(x, dtype=np.float32)
    g = np.asarray(gout, dtype=np.float32)
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    s = np.asarray(scale, dtype=np.float32).reshape(shape)
    zf = np.asarray(zero_point, dtype=np.float32).reshape(shape)
    inv = (F32(1) / s).astype(np.float32)
    z_fwd = np.clip(np.rint(zf), qmin, qmax).astype(np.float32)
    r_fwd = np.rint(x * inv)
    out = ((np.clip(r_fwd + z_fwd, qmin, qmax) - z_fwd) * s).astype(np.float32)
    if pytorch:
        if axis is None:
            z = np.trunc(np.clip(zf + F32(0.5), qmin, qmax)).astype(np.float32)
        else:
            z = z_fwd
        q = np.rint((z.astype(np.float64) + x.astype(np.float64) * inv.astype(np.float64)).astype(np.float32))
    else:
        z = z_fwd
        q = r_fwd + z
    gf = F32(grad_factor)
    inside = (q >= qmin) & (q <= qmax)
    r = (np.clip(q, qmin, qmax) - z).astype(np.float64)
    diff = (r * s.astype(np.float64) - x.astype(np.float64)).astype(np.float32)  # exact, then one rounding
    ds_in = ((g * diff) * inv) * gf
    ds_out = (g * np.where(q < qmin, F32(qmin) - z, F32(qmax) - z)) * gf
    dz_out = ((g * F32(-1)) * s) * gf
    dx = np.where(inside, g, F32(0)).astype(np.float32)
    ds = np.where(inside, ds_in, ds_out).astype(np.float32)
    dz = np.where(inside, F32(0), dz_out).astype(np.float32)
    return out, dx, ds, dz


def channel_sums(v, axis):
    """float64 sums of a per-element gradient over everything but `axis`."""
    v = v.astype(np.float64)
    if axis is None:
        return v.sum().reshape(1)
    return v.sum(axis=tuple(d for d in range(v.ndim) if d != axis))


def lsq_grad_factor(numel, quant_max):
    """_LearnableFakeQuantize with use_grad_scaling=True."""
    return 1.0 / (numel * quant_max) ** 0.5


def lsq_op_case(g, base, x, scales, zero_points, qmin, qmax, axis):
    """Runs one learnable fake-quant op case through torch and the numpy references."""
    x = np.asarray(x, dtype=np.float32)
    gf = lsq_grad_factor(x.size, qmax)
    xt = torch.tensor(x, requires_grad=True)
    st = torch.tensor(scales, dtype=torch.float32, requires_grad=True)
    zt = torch.tensor(zero_points, dtype=torch.float32, requires_grad=True)
    if axis is None:
        out = torch._fake_quantize_learnable_per_tensor_affine(xt, st, zt, qmin, qmax, gf)
    else:
        out = torch._fake_quantize_learnable_per_channel_affine(xt, st, zt, axis, qmin, qmax, gf)
    gout = torch.randn(out.shape)
    out.backward(gout)
    gn = gout.numpy()
    ref_out, dx, ds, dz = np_lsq(x, gn, scales, zero_points, qmin, qmax, gf, axis, pytorch=True)
    # The numpy port of PyTorch's kernels is exact element by element; the
    # sums agree to float32 rounding (torch sums in float32, here in float64).
    assert np.array_equal(out.detach().numpy(), ref_out), base
    assert np.array_equal(xt.grad.numpy(), dx), base
    for got, elem in ((st.grad.numpy(), ds), (zt.grad.numpy(), dz)):
        want = channel_sums(elem, axis)
        tol = 1e-6 * channel_sums(np.abs(elem), axis) + 1e-12
        assert (np.abs(got - want) <= tol).all(), (base, got, want)
    _, tdx, tds, tdz = np_lsq(x, gn, scales, zero_points, qmin, qmax, gf, axis, pytorch=False)
    differ = (tdx != dx) | (tds != ds) | (tdz != dz)
    g.f32(base + "/x", x)
    g.f32(base + "/scale", st.detach())
    g.f32(base + "/zero_point", zt.detach())
    g.i64(base + "/quant_min", qmin)
    g.i64(base + "/quant_max", qmax)
    if axis is not None:
        g.i64(base + "/axis", axis)
    g.f64(base + "/grad_factor", gf)
    g.f32(base + "/gout", gout)
    g.f32(base + "/out", out)
    g.f32(base + "/grad_x", xt.grad)
    g.f32(base + "/grad_scale", st.grad)
    g.f32(base + "/grad_zero_point", zt.grad)
    if differ.any():
        g.comment("   %s: PyTorch's backward differs from the derivative of its forward at %d of %d elements"
                  % (base, int(differ.sum()), x.size))
        g.f32(base + "/tinyqat/grad_x", tdx)
        g.f32(base + "/tinyqat/grad_scale", channel_sums(tds, axis))
        g.f32(base + "/tinyqat/grad_zero_point", channel_sums(tdz, axis))


def gen_lsq_ops(g):
    rng = np.random.RandomState(13)
    torch.manual_seed(13)  # the upstream gradients
    g.comment("")
    g.comment("== lsq_tensor: torch._fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, qmin, qmax,")
    g.comment("   grad_factor) with grad_factor = 1/sqrt(numel(x) * qmax) (_LearnableFakeQuantize, use_grad_scaling)")
    # (tag, qmin, qmax, scale, zero_point (float))
    cases = [
        ("u4_s0.5_z2.3", 0, 15, 0.5, 2.3),      # z rounds to 2: .5 ties of x/s stay ties of z + x/s
        ("u4_s0.1_z0", 0, 15, 0.1, 0.0),        # post-ReLU activations
        ("i4_s0.3_z0", -8, 7, 0.3, 0.0),        # 4-bit symmetric weights
        ("u8_s0.05_z128.4", 0, 255, 0.05, 128.4),
        ("i8_s0.02_z0", -128, 127, 0.02, 0.0),
        ("u7_s0.5_z63.6", 0, 127, 0.5, 63.6),   # z rounds up to 64
        ("u2_s0.7_z2", 0, 3, 0.7, 2.0),
        ("quirk_odd_z_ties", 0, 15, 0.5, 3.0),   # ties: rint(3 + k.5) != 3 + rint(k.5)
        ("quirk_negative_z", -8, 7, 0.25, -3.0), # backward uses int(-3 + 0.5) = -2
        ("quirk_half_z", 0, 15, 0.5, 2.5),       # forward rint(2.5) = 2, backward int(3.0) = 3
    ]
    for tag, qmin, qmax, scale, zp in cases:
        z_int = int(min(max(np.rint(F32(zp)), qmin), qmax))
        x = fq_inputs(scale, z_int, qmin, qmax, rng)
        lsq_op_case(g, "lsq_tensor/" + tag, x, [scale], [zp], qmin, qmax, None)

    g.comment("")
    g.comment("== lsq_channel: torch._fake_quantize_learnable_per_channel_affine(x, scale, zero_point, axis, qmin,")
    g.comment("   qmax, grad_factor), grad_factor = 1/sqrt(numel(x) * qmax) (numel of the whole tensor)")
    # (tag, axis, qmin, qmax, scales, zero points)
    pc_cases = [
        ("axis0_i4", 0, -8, 7, [0.5, 0.1, 0.3], [0.0, 0.0, 0.0]),
        ("axis0_u8", 0, 0, 255, [0.5, 0.1, 0.25], [128.3, 37.8, 0.0]),
        ("axis1_u4", 1, 0, 15, [0.5, 0.1, 0.2], [2.2, 0.0, 14.0]),
        ("axis1_3d_i8", 1, -128, 127, [0.02, 0.05, 0.1], [0.0, 0.0, 0.0]),
        ("quirk_axis0_odd_z_ties", 0, 0, 15, [0.5, 0.25], [3.0, 5.0]),
    ]
    for tag, axis, qmin, qmax, scales, zps in pc_cases:
        cols = []
        for s, z in zip(scales, zps):
            z_int = int(min(max(np.rint(F32(z)), qmin), qmax))
            full = fq_inputs(s, z_int, qmin, qmax, rng, n_random=4)
            pick = rng.choice(len(full), 12, replace=False)
            cols.append(full[np.sort(pick)])
        x = np.stack(cols, axis=0)  # (C, 12)
        if tag.endswith("3d_i8"):
            x = np.ascontiguousarray(x.reshape(3, 3, 4).transpose(1, 0, 2))  # (3, C, 4)
        elif axis == 1:
            x = np.ascontiguousarray(x.T)  # (12, C)
        lsq_op_case(g, "lsq_channel/" + tag, x, scales, zps, qmin, qmax, axis)


def gen_lsq_modules(g):
    from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize

    g.comment("")
    g.comment("== lsq_module/act: _LearnableFakeQuantize(MovingAverageMinMaxObserver, quint8, per_tensor_affine,")
    g.comment("   quant_min=0, quant_max=15, use_grad_scaling=True). Batch 0: static estimate (the observer sets")
    g.comment("   scale / zero_point) with learning on; then learning only. Each batch: y = fq(x),")
    g.comment("   loss = sum(y * gout), backward, torch.optim.SGD([scale, zero_point], lr=0.05).step().")
    torch.manual_seed(17)
    fq = _LearnableFakeQuantize(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=15,
                                use_grad_scaling=True, dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    fq.train()
    fq.toggle_qparam_learning(True).toggle_fake_quant(True).toggle_observer_update(True)
    opt = torch.optim.SGD([fq.scale, fq.zero_point], lr=0.05)
    g.f64("lsq_module/act/lr", 0.05)
    for i in range(4):
        x = torch.randn(8, 16) * 2.0 + 0.5
        gout = torch.randn(8, 16)
        opt.zero_grad()
        y = fq(x)
        if i == 0:
            obs = fq.activation_post_process
            rs, rz = np_observer_qparams(obs.min_val.item(), obs.max_val.item(), 0, 15, False, True)
            assert F32(fq.scale.item()) == rs and fq.zero_point.item() == rz
            fq.toggle_observer_update(False)
        (y * gout).sum().backward()
        base = "lsq_module/act/batch%d" % i
        g.f32(base + "/x", x)
        g.f32(base + "/gout", gout)
        g.f32(base + "/scale_used", fq.scale.detach())
        g.f32(base + "/zero_point_used", fq.zero_point.detach())
        g.f32(base + "/out", y)
        g.f32(base + "/grad_scale", fq.scale.grad)
        g.f32(base + "/grad_zero_point", fq.zero_point.grad)
        opt.step()
        g.f32(base + "/scale_after", fq.scale.detach())
        g.f32(base + "/zero_point_after", fq.zero_point.detach())
    s, z = fq.calculate_qparams()
    g.f32("lsq_module/act/final_scale", s)
    g.i64("lsq_module/act/final_zero_point", z)

    g.comment("")
    g.comment("== lsq_module/weight: _LearnableFakeQuantize(MovingAveragePerChannelMinMaxObserver, qint8,")
    g.comment("   per_channel_symmetric, ch_axis=0, quant_min=-8, quant_max=7, channel_len=4, use_grad_scaling=True)")
    g.comment("   on a fixed weight (4,16); scale initialised with LSQ's 2*mean(|w_c|)/sqrt(7) (in float64, then")
    g.comment("   float32), then learning only: 3 steps of y = fq(w), loss = sum(y * gout), SGD([scale], lr=0.01).")
    torch.manual_seed(18)
    w = torch.randn(4, 16) * torch.tensor([[0.1], [0.5], [1.0], [0.05]])
    fq = _LearnableFakeQuantize(observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-8, quant_max=7,
                                channel_len=4, use_grad_scaling=True, dtype=torch.qint8,
                                qscheme=torch.per_channel_symmetric, ch_axis=0)
    fq.train()
    init = np.array([F32(2.0 * np.abs(w[c].numpy().astype(np.float64)).mean() / np.sqrt(7.0)) for c in range(4)],
                    dtype=np.float32)
    fq.scale.data.copy_(torch.tensor(init))
    fq.enable_param_learning()
    opt = torch.optim.SGD([fq.scale], lr=0.01)
    g.f32("lsq_module/weight/w", w)
    g.f32("lsq_module/weight/init_scale", init)
    g.f64("lsq_module/weight/lr", 0.01)
    for i in range(3):
        gout = torch.randn(4, 16)
        opt.zero_grad()
        y = fq(w)
        (y * gout).sum().backward()
        base = "lsq_module/weight/step%d" % i
        g.f32(base + "/gout", gout)
        g.f32(base + "/out", y)
        g.f32(base + "/grad_scale", fq.scale.grad)
        opt.step()
        g.f32(base + "/scale_after", fq.scale.detach())


def gen_lsq():
    g = GoldenFile("lsq.txt")
    g.comment("Learnable fake quant (LSQ, torch.ao.quantization._LearnableFakeQuantize and its ops):")
    g.comment("forward, gradients of x, scale and zero point; module trajectories.  PyTorch %s.  See README.md."
              % torch.__version__)
    gen_lsq_ops(g)
    gen_lsq_modules(g)
    g.write()


def main():
    print("torch", torch.__version__, "numpy", np.__version__)
    # Optional arguments name the files to write (e.g. "lsq.txt"); default: all.
    # Every generator seeds its own random numbers, so one file comes out the
    # same whether it is written alone or with the others.
    only = set(sys.argv[1:])
    for filename, generate in (("autograd_ops.txt", gen_autograd_ops), ("mlp.txt", gen_mlp),
                               ("quant_core.txt", gen_quant_core), ("quant_ptq.txt", gen_quant_ptq),
                               ("lsq.txt", gen_lsq)):
        if not only or filename in only:
            generate()


if __name__ == "__main__":
    sys.exit(main())
