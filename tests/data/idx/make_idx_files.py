#!/usr/bin/env python3
"""Writes the small IDX files that tests/test_idx.cpp reads (run from anywhere).

Written with Python's struct and gzip modules, independently of tinyqat's own
writer, so the test checks the C++ reader against a second implementation.
The first 8 Fashion-MNIST test images / labels come from the Debian package
dataset-fashion-mnist (Fashion-MNIST is MIT-licensed, (c) Zalando SE).
These files also make a seed corpus for fuzzing the reader.
"""
import gzip
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FASHION = "/usr/share/datasets/fashion-mnist"


def idx(type_byte, dims, payload):
    return struct.pack(">BBBB", 0, 0, type_byte, len(dims)) + struct.pack(">%dI" % len(dims), *dims) + payload


def write(name, data, compress):
    # mtime=0: the same bytes on every run.
    blob = gzip.compress(data, mtime=0) if compress else data
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(blob)


images = gzip.open(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")).read()
labels = gzip.open(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")).read()
first8 = idx(0x08, [8, 28, 28], images[16:16 + 8 * 784])
write("t10k-8-images-idx3-ubyte", first8, False)
write("t10k-8-images-idx3-ubyte.gz", first8, True)
write("t10k-8-labels-idx1-ubyte.gz", idx(0x08, [8], labels[8:16]), True)
write("i32-2x3.idx", idx(0x0C, [2, 3], struct.pack(">6i", 0, 1, -1, 2**31 - 1, -2**31, 0x01020304)), False)
write("f32-4.idx.gz", idx(0x0D, [4], struct.pack(">4f", 0.0, -1.5, 3.25, 1e-3)), True)
