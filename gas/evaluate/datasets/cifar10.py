"""`cifar10`: the standard python archive under a data dir (cifar-10-batches-py/ or the .tar.gz)."""

from __future__ import annotations

import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from gas.errors import GasError
from gas.evaluate.datasets.raw import SPLIT_SEED, RawSplits, RawTest, resize_uint8, take

CLASSES = 10
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_VAL_FRACTION = 0.1  # of the training batches' images, held out for validation (5,000 of 50,000)
_CIFAR_EXPECTED = f"{CIFAR_DIR}/ (data_batch_1..5, test_batch) or {CIFAR_ARCHIVE}"


def source(data_dir: str | None) -> Path:
    """The batches folder or the archive under `data_dir`, or one line saying what was expected where."""
    if not data_dir:
        raise GasError(f"dataset cifar10 needs --data-dir: a folder holding {_CIFAR_EXPECTED}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise GasError(f"cifar10 data dir {root} does not exist; expected a folder holding {_CIFAR_EXPECTED}")
    for folder in (root / CIFAR_DIR, root):
        if (folder / CIFAR_TEST_BATCH).exists() or (folder / "data_batch_1").exists():
            missing = [name for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH) if not (folder / name).is_file()]
            if missing:
                raise GasError(f"cifar10: {folder} lacks {', '.join(missing)}; expected data_batch_1..5 and test_batch")
            return folder
    if (root / CIFAR_ARCHIVE).is_file():
        return root / CIFAR_ARCHIVE
    raise GasError(f"cifar10: found neither {CIFAR_DIR}/ nor {CIFAR_ARCHIVE} in {root}; expected {_CIFAR_EXPECTED}")


def _unpickle_cifar(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(blob, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as error:  # pickle raises many kinds; the user needs to know which file is bad
        raise GasError(f"cifar10: {where} is not a CIFAR-10 python batch ({type(error).__name__})") from None
    if len(data) != len(labels) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise GasError(f"cifar10: {where} has {len(data)} images but {len(labels)} labels in an unexpected range")
    return data, labels


def _read_cifar_batches(path: Path, names: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if path.is_dir():
        return {name: _unpickle_cifar((path / name).read_bytes(), str(path / name)) for name in names}
    batches = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in names:
                    handle = archive.extractfile(member)
                    assert handle is not None
                    batches[name] = _unpickle_cifar(handle.read(), f"{path}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise GasError(f"cifar10: cannot read {path} as a .tar.gz archive ({error})") from None
    missing = [name for name in names if name not in batches]
    if missing:
        raise GasError(f"cifar10: archive {path} lacks {', '.join(missing)}")
    return batches


def load(resolution: int, data_dir: str | None, train_size: int | None, val_size: int | None) -> RawSplits:
    """Training and validation images from data_batch_1..5 (a share held out by a fixed shuffle).

    test_batch is the test split (`load_test`): nothing a search reads comes from it.
    """
    batches = _read_cifar_batches(source(data_dir), CIFAR_TRAIN_BATCHES)
    images = np.concatenate([batches[name][0] for name in CIFAR_TRAIN_BATCHES])
    labels = np.concatenate([batches[name][1] for name in CIFAR_TRAIN_BATCHES])
    # A fixed shuffle before truncating keeps a capped split class-balanced in expectation.
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_val = round(len(labels) * CIFAR_VAL_FRACTION)
    val_index, train_index = order[:n_val], order[n_val:]
    train_index = train_index[: take(train_size, len(train_index))]
    val_index = val_index[: take(val_size, len(val_index))]
    return RawSplits(
        CLASSES,
        resize_uint8(torch.from_numpy(images[train_index]), resolution),
        torch.from_numpy(labels[train_index]),
        resize_uint8(torch.from_numpy(images[val_index]), resolution),
        torch.from_numpy(labels[val_index]),
    )


def load_test(resolution: int, data_dir: str | None, test_size: int | None) -> RawTest:
    """The archive's test_batch, shuffled by a fixed seed before a cap."""
    images, labels = _read_cifar_batches(source(data_dir), (CIFAR_TEST_BATCH,))[CIFAR_TEST_BATCH]
    index = np.random.default_rng(SPLIT_SEED).permutation(len(labels))[: take(test_size, len(labels))]
    return RawTest(
        CLASSES, resize_uint8(torch.from_numpy(images[index]), resolution), torch.from_numpy(labels[index])
    )


def fingerprint(data_dir: str | None) -> str:
    """The batches' paths, sizes and times, so replacing the archive invalidates the cached copy."""
    path = source(data_dir)
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return ";".join(f"{file.resolve()}:{file.stat().st_size}:{file.stat().st_mtime_ns}" for file in files)
