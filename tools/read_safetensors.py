#!/usr/bin/env python3
"""Reads a safetensors file (a tinyqat model file, or any other) with nothing
but the standard library's json and numpy, and prints what it holds as JSON.

    python3 tools/read_safetensors.py FILE            # summary of every tensor
    python3 tools/read_safetensors.py FILE --values   # ... and all their values

The layout (docs/model_files.md):

    bytes 0..8      N, the header length, unsigned 64-bit little-endian
    bytes 8..8+N    the header: JSON, {"name": {"dtype", "shape", "data_offsets"}, ...,
                    "__metadata__": {"key": "string value", ...}}
    bytes 8+N..     the data area; tensor `name` is the bytes
                    [8+N+begin, 8+N+end) of the file, row-major, little-endian

Output: {"metadata": {...}, "tensors": {"name": {"dtype", "shape", "sum",
"min", "max", "first"[, "values"]}}}. Sums are computed in float64 (int64 for
integer dtypes), so they can be compared with the C++ side exactly.
A tinyqat model's module tree is the JSON string metadata["tinyqat"].
"""
import json
import sys

import numpy as np

DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U8": "u1", "BOOL": "?"}


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} is larger than the file")
    header = json.loads(data[8:8 + n])
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(body):
            raise ValueError(f"{path}: tensor {name}: data_offsets [{begin}, {end}] outside the data area")
        dtype = np.dtype(DTYPES[info["dtype"]])
        # frombuffer maps the file's bytes: no copy, no parsing.
        array = np.frombuffer(body[begin:end], dtype=dtype).reshape(info["shape"])
        tensors[name] = (info["dtype"], array)
    return metadata, tensors


def summary(dtype, a, with_values):
    wide = a.astype(np.float64 if a.dtype.kind == "f" else np.int64)
    out = {"dtype": dtype, "shape": list(a.shape), "sum": wide.sum().item(),
           "min": wide.min().item() if a.size else None, "max": wide.max().item() if a.size else None,
           "first": wide.reshape(-1)[:4].tolist()}
    if with_values:
        out["values"] = wide.reshape(-1).tolist()
    return out


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    with_values = "--values" in argv[2:]
    try:
        metadata, tensors = read(argv[1])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        print(f"read_safetensors: {e}", file=sys.stderr)
        return 1
    result = {"metadata": metadata,
              "tensors": {name: summary(dt, a, with_values) for name, (dt, a) in sorted(tensors.items())}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
