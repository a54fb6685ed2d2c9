"""`digits`: scikit-learn's bundled 8x8 handwritten digits, upsampled, grey copied to 3 channels."""

from __future__ import annotations

import numpy as np
import torch

from gas.evaluate.datasets.raw import SPLIT_SEED, RawSplits, resize_uint8, take

CLASSES = 10
DIGITS_VAL_FRACTION = 0.2


def load(resolution: int, train_size: int | None, val_size: int | None) -> RawSplits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values are 0..16; scale to uint8 and copy the grey channel to RGB so every model takes 3 channels.
    images = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8))[:, None].expand(-1, 3, -1, -1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(labels)))
    n_val = round(len(labels) * DIGITS_VAL_FRACTION)
    val_index, train_index = order[:n_val], order[n_val:]
    train_index = train_index[: take(train_size, len(train_index))]
    val_index = val_index[: take(val_size, len(val_index))]
    return RawSplits(
        CLASSES,
        resize_uint8(images[train_index], resolution),
        labels[train_index],
        resize_uint8(images[val_index], resolution),
        labels[val_index],
    )
