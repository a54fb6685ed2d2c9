"""Datasets: every loader at two resolutions, the archive formats, bad data dirs, and what `shapes` demands."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gas.errors import GasError
from gas.evaluate.data import check_dataset, draw_shapes, load_dataset


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Keep the disk cache out of the user's home and shared by this module's tests."""
    monkeypatch.setenv("GAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "gas-cache"))


def assert_splits(splits, resolution: int, num_classes: int, train: int | None = None, val: int | None = None):
    for images, labels in ((splits.train_images, splits.train_labels), (splits.val_images, splits.val_labels)):
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert images.shape[1:] == (3, resolution, resolution)
        assert len(images) == len(labels) > 0
        assert int(labels.min()) >= 0 and int(labels.max()) < num_classes
        assert torch.isfinite(images).all()
    assert splits.num_classes == num_classes
    # Normalised with the training split's own statistics.
    channel_means = splits.train_images.mean(dim=(0, 2, 3))
    assert torch.allclose(channel_means, torch.zeros(3), atol=1e-3)
    if train is not None:
        assert len(splits.train_labels) == train
    if val is not None:
        assert len(splits.val_labels) == val


@pytest.mark.parametrize("resolution", [32, 64])
def test_shapes_loads_at_resolution(resolution):
    splits = load_dataset("shapes", resolution, train_size=96, val_size=40)
    assert_splits(splits, resolution, 8, train=96, val=40)
    assert len(splits.train_labels.unique()) == 8


def test_shapes_is_deterministic_and_resolution_independent():
    first, labels = draw_shapes(16, 32, seed=5)
    again, labels_again = draw_shapes(16, 32, seed=5)
    assert torch.equal(first, again) and torch.equal(labels, labels_again)
    _, labels_large = draw_shapes(16, 64, seed=5)
    assert torch.equal(labels, labels_large)  # the same scenes, drawn with more pixels
    other, _ = draw_shapes(16, 32, seed=6)
    assert not torch.equal(first, other)


def test_shapes_train_and_validation_differ():
    splits = load_dataset("shapes", 32, train_size=64, val_size=64)
    assert not torch.equal(splits.train_images, splits.val_images)


def test_shapes_cannot_be_solved_from_a_bag_of_pixels():
    """The same classifier that learns from the pixel layout stays near chance on what a layout-blind model sees.

    A bag of pixels is summarised by its sorted grey values (quantiles): any permutation-invariant
    function of the pixels is a function of them. The colour histogram is the other classic shortcut.
    """
    from sklearn.ensemble import RandomForestClassifier

    train_images, train_labels = draw_shapes(1500, 32, seed=11)
    val_images, val_labels = draw_shapes(500, 32, seed=12)

    def grey(images):
        return images.float().mean(dim=1).flatten(1).numpy() / 255

    def pixel_quantiles(images):
        return np.quantile(grey(images), np.linspace(0, 1, 65), axis=1).T

    def colour_histogram(images):
        flat = images.flatten(2).numpy()
        return np.stack(
            [
                np.concatenate([np.bincount(image[channel] // 16, minlength=16) for channel in range(3)])
                for image in flat
            ]
        )

    def accuracy(features) -> float:
        forest = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1)
        forest.fit(features(train_images), train_labels.numpy())
        return forest.score(features(val_images), val_labels.numpy())

    chance = 1 / 8
    assert accuracy(pixel_quantiles) < chance + 0.07
    assert accuracy(colour_histogram) < chance + 0.09
    assert accuracy(grey) > 4 * chance  # where the pixels are is what carries the label


@pytest.mark.parametrize("resolution", [32, 64])
def test_digits_loads_at_resolution(resolution):
    splits = load_dataset("digits", resolution)
    # scikit-learn ships 1797 digits; a fixed 20% is held out.
    assert_splits(splits, resolution, 10, train=1797 - 359, val=359)
    # Grey digits are copied into three equal channels before normalisation.
    assert torch.allclose(splits.train_images[:, 0], splits.train_images[:, 1], atol=1e-5)


def test_digits_split_sizes_can_be_capped():
    splits = load_dataset("digits", 32, train_size=100, val_size=50)
    assert_splits(splits, 32, 10, train=100, val=50)


# ---- cifar10 ----------------------------------------------------------------------------------------


def write_cifar_batch(path: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {
        b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
        b"labels": [int(label) for label in rng.integers(0, 10, size=count)],
        b"batch_label": b"tiny",
    }
    path.write_bytes(pickle.dumps(batch))


@pytest.fixture
def cifar_folder(tmp_path) -> Path:
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for index in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{index}", 6, seed=index)
    write_cifar_batch(folder / "test_batch", 5, seed=0)
    return folder


@pytest.mark.parametrize("resolution", [32, 64])
def test_cifar10_from_batches_folder(cifar_folder, resolution):
    splits = load_dataset("cifar10", resolution, data_dir=str(cifar_folder.parent))
    assert_splits(splits, resolution, 10, train=30, val=5)


def test_cifar10_from_archive_matches_folder(cifar_folder, tmp_path):
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(cifar_folder, arcname="cifar-10-batches-py")
    from_archive = load_dataset("cifar10", 32, data_dir=str(archive_dir))
    from_folder = load_dataset("cifar10", 32, data_dir=str(cifar_folder.parent))
    assert torch.equal(from_archive.train_images, from_folder.train_images)
    assert torch.equal(from_archive.val_labels, from_folder.val_labels)


def test_cifar10_reads_every_label(cifar_folder):
    splits = load_dataset("cifar10", 32, data_dir=str(cifar_folder.parent))
    batches = [pickle.loads((cifar_folder / f"data_batch_{i}").read_bytes()) for i in range(1, 6)]
    expected = sorted(label for batch in batches for label in batch[b"labels"])
    assert sorted(splits.train_labels.tolist()) == expected


def one_line_error(call) -> str:
    with pytest.raises(GasError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_cifar10_missing_dir_is_one_line(tmp_path):
    assert "does not exist" in one_line_error(lambda: check_dataset("cifar10", str(tmp_path / "nowhere")))
    message = one_line_error(lambda: check_dataset("cifar10", str(tmp_path)))
    assert "cifar-10-batches-py" in message and "cifar-10-python.tar.gz" in message and str(tmp_path) in message
    assert "--data-dir" in one_line_error(lambda: check_dataset("cifar10", None))


def test_cifar10_malformed_is_one_line(cifar_folder):
    (cifar_folder / "data_batch_3").unlink()
    assert "data_batch_3" in one_line_error(lambda: check_dataset("cifar10", str(cifar_folder.parent)))
    (cifar_folder / "data_batch_3").write_bytes(b"not a pickle")
    message = one_line_error(lambda: load_dataset("cifar10", 32, data_dir=str(cifar_folder.parent)))
    assert "data_batch_3" in message


def test_cifar10_broken_archive_is_one_line(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"truncated")
    assert "cannot read" in one_line_error(lambda: load_dataset("cifar10", 32, data_dir=str(tmp_path)))


# ---- imagefolder ------------------------------------------------------------------------------------


@pytest.fixture
def image_tree(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    for name, count in (("cat", 5), ("dog", 4), ("owl", 3)):
        (root / name).mkdir(parents=True)
        for index in range(count):
            size = (int(rng.integers(20, 50)), int(rng.integers(20, 50)))
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.{'png' if index % 2 else 'jpg'}")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("resolution", [32, 64])
def test_imagefolder_loads_at_resolution(image_tree, resolution):
    splits = load_dataset(f"imagefolder:{image_tree}", resolution)
    assert_splits(splits, resolution, 3)
    assert len(splits.train_labels) + len(splits.val_labels) == 12
    # Every class with 2+ images has at least one image in each split.
    assert set(splits.val_labels.tolist()) == {0, 1, 2} == set(splits.train_labels.tolist())


def test_imagefolder_split_is_deterministic(image_tree):
    first = load_dataset(f"imagefolder:{image_tree}", 32)
    load_dataset.__globals__["_load_raw_cached"].cache_clear()
    again = load_dataset(f"imagefolder:{image_tree}", 32)
    assert torch.equal(first.val_images, again.val_images)


def test_imagefolder_errors_are_one_line(image_tree, tmp_path):
    assert "not a directory" in one_line_error(lambda: check_dataset(f"imagefolder:{tmp_path / 'none'}"))
    (tmp_path / "flat").mkdir()
    assert "class folder" in one_line_error(lambda: check_dataset(f"imagefolder:{tmp_path / 'flat'}"))
    (image_tree / "dog" / "9.png").write_bytes(b"garbage")
    assert "9.png" in one_line_error(lambda: load_dataset(f"imagefolder:{image_tree}", 48))


def test_unknown_dataset_is_one_line():
    assert "available" in one_line_error(lambda: check_dataset("imagenet"))
    assert "imagefolder:PATH" in one_line_error(lambda: check_dataset("imagefolder"))
