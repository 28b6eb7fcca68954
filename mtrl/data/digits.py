"""Two-digit classification from scikit-learn's bundled 8x8 digits: an offline stand-in for
MultiMNIST (Sabour et al. 2017; the multi-task version of Sener and Koltun 2018).

Each sample places two 8x8 digits side by side (8x16) or overlapping (8x(8+shift)); task 0 is the left
digit, task 1 the right digit (10-way each). Source images are split into disjoint train and test
pools before pairing, so test samples contain only unseen digit images. scikit-learn is imported
lazily (it ships the data; nothing is downloaded).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor


@lru_cache(maxsize=1)
def _load() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(np.asarray(digits.images, dtype=np.float32) / 16.0)
    labels = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
    return images, labels


def load_digit_images() -> tuple[Tensor, Tensor]:
    """scikit-learn's 1797 digits as ``images (1797, 8, 8)`` float32 in [0, 1] and ``labels``."""
    images, labels = _load()
    return images.clone(), labels.clone()


def compose(left: Tensor, right: Tensor, shift: int = 8) -> Tensor:
    """Combine ``(N, 8, 8)`` left and right images into ``(N, 1, 8, 8 + shift)``: the right digit
    starts ``shift`` columns after the left one; overlapping pixels take the maximum."""
    # 0 would overlay the digits exactly: left and right become indistinguishable
    if not 1 <= shift <= 8:
        raise ValueError(f"shift={shift!r} must lie in [1, 8] (8 = side by side)")
    n, h, w = left.shape
    canvas_l = left.new_zeros(n, h, w + shift)
    canvas_r = left.new_zeros(n, h, w + shift)
    canvas_l[:, :, :w] = left
    canvas_r[:, :, shift : shift + w] = right
    return torch.maximum(canvas_l, canvas_r).unsqueeze(1)


def make_two_digits(
    n_train: int = 5_000,
    n_test: int = 1_000,
    seed: int = 0,
    shift: int = 8,
    test_fraction: float = 0.25,
) -> dict[str, Tensor]:
    """Build the two-digit data set (deterministic given ``seed``).

    Returns ``x_train (N, 1, 8, 8 + shift)`` float32 in [0, 1], ``y_train (N, 2)`` long (left,
    right labels), ``src_train (N, 2)`` indices of the source images in
    ``sklearn.datasets.load_digits()``, and the same ``*_test`` keys for the test split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} must lie in (0, 1)")
    images, labels = load_digit_images()
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(images.shape[0], generator=gen)
    n_test_src = round(test_fraction * images.shape[0])
    pools = {"test": perm[:n_test_src], "train": perm[n_test_src:]}
    # one stream per split, so the test set is the same whatever n_train (budget studies)
    gens = {
        "train": gen,
        "test": torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=gen))),
    }
    out: dict[str, Tensor] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        pool = pools[split]
        src = pool[torch.randint(len(pool), (n, 2), generator=gens[split])]
        out[f"x_{split}"] = compose(images[src[:, 0]], images[src[:, 1]], shift)
        out[f"y_{split}"] = labels[src]
        out[f"src_{split}"] = src
    return out
