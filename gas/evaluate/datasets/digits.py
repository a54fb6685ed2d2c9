"""`digits`: scikit-learn's bundled 8x8 handwritten digits, upsampled, grey copied to 3 channels."""

from __future__ import annotations

import numpy as np
import torch

from gas.evaluate.datasets.raw import SPLIT_SEED, RawSplits, RawTest, resize_uint8, take

CLASSES = 10
# Shares of the 1,797 images held out, by a fixed shuffle; training gets the rest.
DIGITS_VAL_FRACTION = 0.2
DIGITS_TEST_FRACTION = 0.2


def load(resolution: int, train_size: int | None, val_size: int | None) -> RawSplits:
    images, labels = _images()
    train_index, val_index, _ = _partition(len(labels))
    train_index = train_index[: take(train_size, len(train_index))]
    val_index = val_index[: take(val_size, len(val_index))]
    return RawSplits(
        CLASSES,
        resize_uint8(images[train_index], resolution),
        labels[train_index],
        resize_uint8(images[val_index], resolution),
        labels[val_index],
    )


def load_test(resolution: int, test_size: int | None) -> RawTest:
    images, labels = _images()
    test_index = _partition(len(labels))[2]
    test_index = test_index[: take(test_size, len(test_index))]
    return RawTest(CLASSES, resize_uint8(images[test_index], resolution), labels[test_index])


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values are 0..16; scale to uint8 and copy the grey channel to RGB so every model takes 3 channels.
    images = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8))[:, None].expand(-1, 3, -1, -1)
    return images, torch.from_numpy(digits.target.astype(np.int64))


def _partition(count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, validation, test) indices: disjoint, the same on every machine."""
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(count))
    n_val, n_test = round(count * DIGITS_VAL_FRACTION), round(count * DIGITS_TEST_FRACTION)
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]
