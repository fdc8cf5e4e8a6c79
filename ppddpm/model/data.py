"""Offline image data: scikit-learn's bundled 8x8 digits, or any folder of images.

Everything returned here is float32 in [-1, 1] (MATH.md: "images live in [-1, 1] during
diffusion"), laid out NCHW as ppdiffusers' UNet2DModel expects.
"""
from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from ppddpm.errors import BadValue, NotFound, regular_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
MAX_IMAGE_PIXELS = 4096 * 4096      # an image read here: ≤ 64 MiB decoded (RGBA), checked from its header first
# what PIL raises on a file it cannot decode (truncated data, broken chunks, a bad zlib stream), besides OSError
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
SPLIT_SEED = 0          # the fixed permutation that defines the digits train / held-out split
HELD_OUT_FRACTION = 0.2


def _digits_split(split: str):
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    images = bunch.images.astype(np.float32) / 16.0          # [N, 8, 8] in [0, 1]
    labels = bunch.target.astype(np.int64)
    order = np.random.RandomState(SPLIT_SEED).permutation(len(images))
    n_test = int(round(len(images) * HELD_OUT_FRACTION))
    chosen = {"train": order[n_test:], "test": order[:n_test], "all": order}
    if split not in chosen:
        raise BadValue(f"split must be one of {sorted(chosen)}, got {split!r}")
    idx = np.sort(chosen[split])
    return images[idx], labels[idx]


def resize01(images01: np.ndarray, resolution: int) -> np.ndarray:
    """Bilinear resize of [N, H, W] or [N, C, H, W] images in [0, 1] to `resolution` (PIL)."""
    from PIL import Image

    squeeze = images01.ndim == 3
    x = images01[:, None] if squeeze else images01
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return images01
    out = np.empty(x.shape[:2] + (resolution, resolution), np.float32)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            im = Image.fromarray(x[i, c].astype(np.float32), mode="F")
            out[i, c] = np.asarray(im.resize((resolution, resolution), Image.BILINEAR))
    out = np.clip(out, 0.0, 1.0)
    return out[:, 0] if squeeze else out


def load_digits(split: str = "train", resolution: int = 8, with_labels: bool = False):
    """scikit-learn's 1797 8x8 digits as [N, 1, R, R] float32 in [-1, 1].

    `split` is "train" (80 %), "test" (the held-out 20 % the metrics use as the real-data
    ceiling) or "all"; the split is a fixed permutation, identical on every machine.
    """
    images, labels = _digits_split(split)
    images = resize01(images, resolution)[:, None] * 2.0 - 1.0
    images = images.astype(np.float32)
    return (images, labels) if with_labels else images


def read_image(path, what: str = "image"):
    """The PIL image in the file at `path`, decoded, or one BadValue naming the file: only a regular
    file is opened (a FIFO would block the read), and its size is read from the header (PIL's
    `Image.open` decodes nothing) and refused above MAX_IMAGE_PIXELS before any pixel is decoded —
    a 40000×40000 PNG of a few KB would take 4.8 GB."""
    from PIL import Image

    path = regular_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)     # PIL's own cap (89 Mpx), as one line
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadValue(f"the {what} {path} has more than {MAX_IMAGE_PIXELS} pixels (4096²); give a smaller "
                       f"image") from None
    except UNREADABLE as exc:
        raise BadValue(f"{path} is not an image PIL can read ({type(exc).__name__}); give a PNG, JPEG, …") from None
    width, height = image.size
    if not width * height <= MAX_IMAGE_PIXELS:
        raise BadValue(f"the {what} {path} is {width}×{height} pixels, more than {MAX_IMAGE_PIXELS} (4096²); give "
                       f"a smaller image")
    try:
        image.load()
    except UNREADABLE as exc:
        raise BadValue(f"{path} is not an image PIL can read ({type(exc).__name__}: {exc}); give a PNG, JPEG, "
                       f"…") from None
    return image


def load_image_folder(path, resolution: int, channels: int = 3) -> np.ndarray:
    """Every image under `path` (recursively), centre-cropped to a square, resized to
    `resolution` and returned as [N, channels, R, R] float32 in [-1, 1]. Each file is read by
    `read_image`: a FIFO, an unreadable image or one of more than MAX_IMAGE_PIXELS is one line."""
    from PIL import Image

    root = Path(path)
    if not os.path.isdir(root):                 # False on any OSError (a name too long, …)
        raise NotFound(f"--data {path}: not a directory (give a folder of images, or 'digits')")
    if channels not in (1, 3):
        raise BadValue(f"channels must be 1 or 3, got {channels}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadValue(f"--data {path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    out = []
    for f in files:
        im = read_image(f, "--data image").convert("L" if channels == 1 else "RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im = im.resize((resolution, resolution), Image.BICUBIC)
        a = np.asarray(im, np.float32) / 127.5 - 1.0
        out.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def load_dataset(data: str = "digits", resolution: int = 16, channels: int = 1) -> np.ndarray:
    """`data="digits"` (the offline default, train split) or a folder of images."""
    if data == "digits":
        if channels != 1:
            raise BadValue("the digits are grayscale: use channels=1 with data='digits'")
        return load_digits("train", resolution)
    return load_image_folder(data, resolution, channels)
