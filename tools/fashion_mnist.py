"""Fashion-MNIST for the Python companions: the IDX reader and the input
normalisation of tinyqat's data loader (src/io/data_loader.cpp), in numpy.

    from fashion_mnist import read_idx, normalise
    images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    x = normalise(images)          # (N, 784) float32, bit for bit the loader's values
"""
import gzip
import os

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = np.float32(0.2860), np.float32(0.3530)  # kFashionMnistMean / kFashionMnistStd


def read_idx(path):
    """An IDX file (gzip-compressed) as a uint8 array of its shape. A bare name
    is looked up in the Debian dataset's folder."""
    if not os.path.dirname(path):
        path = os.path.join(DATA, path)
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def normalise(images):
    """(v / 255 - mean) / std computed in double and rounded once to float, as
    the loader does; one row of 784 values per image."""
    lut = ((np.arange(256, dtype=np.float64) / 255.0 - np.float64(MEAN)) / np.float64(STD)).astype(np.float32)
    return lut[images.reshape(len(images), -1)]
