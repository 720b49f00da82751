"""Tiny ImageFolder datasets written by the tests: classes that differ in colour, as small PNGs."""
import os

import numpy as np
from PIL import Image

COLORS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def color_dataset(root, n_train=8, n_val=4, size=24, classes=("red", "green", "blue"), noise=40, seed=0):
    """root/{train,val}/<colour>/<i>.png: the class colour plus uniform noise; returns root."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            for i in range(n):
                img = np.array(COLORS[c], dtype=np.int16) + rng.integers(-noise, noise + 1, (size, size, 3))
                write_png(os.path.join(root, split, c, f"{i:03d}.png"), np.clip(img, 0, 255))
    return str(root)
