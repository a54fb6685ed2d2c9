"""Datasets: every loader at two resolutions, the archive formats, bad data dirs, and what `shapes` demands."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gas.errors import GasError
from gas.evaluate.datasets import (
    DatasetCheck,
    UnreadableImagesWarning,
    cache_dir,
    check_dataset,
    draw_shapes,
    load_dataset,
    load_test_split,
    resolve_dataset,
)


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
    # scikit-learn ships 1797 digits; a fixed 20% is held out for validation and another 20% for test.
    assert_splits(splits, resolution, 10, train=1797 - 2 * 359, val=359)
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
    # Validation is a tenth of the training batches; test_batch is the test split alone.
    assert_splits(splits, resolution, 10, train=27, val=3)
    test = load_test_split("cifar10", resolution, data_dir=str(cifar_folder.parent))
    assert tuple(test.images.shape) == (5, 3, resolution, resolution)


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
    assert sorted(splits.train_labels.tolist() + splits.val_labels.tolist()) == expected
    test = load_test_split("cifar10", 32, data_dir=str(cifar_folder.parent))
    test_batch = pickle.loads((cifar_folder / "test_batch").read_bytes())
    assert sorted(test.labels.tolist()) == sorted(test_batch[b"labels"])


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


def write_image_tree(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """Real images of random sizes, alternately JPEG and PNG, `counts[name]` in each class folder."""
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            size = (int(rng.integers(20, 50)), int(rng.integers(20, 50)))
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.{'png' if index % 2 else 'jpg'}")
    return root


@pytest.fixture
def image_tree(tmp_path) -> Path:
    root = write_image_tree(tmp_path / "pets", {"cat": 5, "dog": 4, "owl": 3})
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def fresh_worker(monkeypatch, cache: Path) -> None:
    """What a worker on another machine starts with: no dataset in memory or on disk."""
    monkeypatch.setenv("GAS_CACHE_DIR", str(cache))
    load_dataset.__globals__["_load_raw_cached"].cache_clear()


@pytest.mark.parametrize("resolution", [32, 64])
def test_imagefolder_loads_at_resolution(image_tree, resolution):
    splits = load_dataset(f"imagefolder:{image_tree}", resolution)
    assert_splits(splits, resolution, 3)
    test = load_test_split(f"imagefolder:{image_tree}", resolution)
    assert len(splits.train_labels) + len(splits.val_labels) + len(test.labels) == 12
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
    # An empty class folder would silently drop a class; one holding no image files is just as empty.
    (image_tree / "emu").mkdir()
    message = one_line_error(lambda: check_dataset(f"imagefolder:{image_tree}"))
    assert str(image_tree / "emu") in message and "no images" in message
    (image_tree / "emu" / "readme.txt").write_text("photos to follow")
    assert str(image_tree / "emu") in one_line_error(lambda: load_dataset(f"imagefolder:{image_tree}", 32))


def test_check_reports_what_a_clean_tree_holds(image_tree):
    assert check_dataset(f"imagefolder:{image_tree}") == DatasetCheck(num_classes=3, images=12, unreadable=())
    assert check_dataset("digits") == DatasetCheck(num_classes=10)


def test_resolve_dataset_makes_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_dataset("imagefolder:pets", "cifar") == (
        f"imagefolder:{(tmp_path / 'pets').resolve()}",
        str((tmp_path / "cifar").resolve()),
    )
    assert resolve_dataset("imagefolder:~/pets", "~/data") == (
        f"imagefolder:{(tmp_path / 'home' / 'pets').resolve()}",
        str((tmp_path / "home" / "data").resolve()),
    )
    assert resolve_dataset("imagefolder:../x/./pets", None) == (
        f"imagefolder:{(tmp_path.parent / 'x' / 'pets').resolve()}",
        None,
    )
    assert resolve_dataset("shapes", None) == ("shapes", None)
    assert resolve_dataset("cifar10", "") == ("cifar10", "")
    assert "available" in one_line_error(lambda: resolve_dataset("imagenet", None))


def test_relative_imagefolder_loads_from_another_cwd(image_tree, tmp_path, monkeypatch):
    """The driver resolves `imagefolder:pets` where the user typed it; a trial runs somewhere else."""
    monkeypatch.chdir(image_tree.parent)
    name, data_dir = resolve_dataset("imagefolder:pets", None)
    check_dataset(name, data_dir)
    trial_dir = tmp_path / "ray_results" / "trial_0"
    trial_dir.mkdir(parents=True)
    monkeypatch.chdir(trial_dir)
    assert "not a directory" in one_line_error(lambda: check_dataset("imagefolder:pets"))  # the user's bug
    fresh_worker(monkeypatch, tmp_path / "worker-cache")
    splits = load_dataset(name, 32, data_dir)
    assert_splits(splits, 32, 3)
    test = load_test_split(name, 32, data_dir)
    assert len(splits.train_labels) + len(splits.val_labels) + len(test.labels) == 12
    fresh_worker(monkeypatch, tmp_path / "absolute-cache")
    from_absolute = load_dataset(f"imagefolder:{image_tree}", 32)
    assert torch.equal(splits.train_images, from_absolute.train_images)
    assert torch.equal(splits.val_labels, from_absolute.val_labels)


@pytest.fixture
def scraped_tree(tmp_path) -> Path:
    """60 good images and a truncated JPEG, as a download cut short leaves it."""
    root = write_image_tree(tmp_path / "scraped", {"cat": 20, "dog": 20, "owl": 20}, seed=1)
    whole = (root / "cat" / "0.jpg").read_bytes()
    (root / "cat" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    with Image.open(root / "cat" / "cut.jpg") as image:
        image.verify()  # passes: only decoding every pixel finds a truncated JPEG
    return root


def test_an_unreadable_image_is_skipped_the_same_way_everywhere(scraped_tree, tmp_path, monkeypatch):
    name = f"imagefolder:{scraped_tree}"
    with pytest.warns(UnreadableImagesWarning, match=r"skipping 1 of 61 .* cat/cut\.jpg") as caught:
        check = check_dataset(name)
    assert "\n" not in str(caught[0].message)
    assert check == DatasetCheck(num_classes=3, images=60, unreadable=("cat/cut.jpg",)) and check.skipped == 1

    fresh_worker(monkeypatch, tmp_path / "worker-1")
    first = load_dataset(name, 32)
    assert len(first.train_labels) + len(first.val_labels) + len(load_test_split(name, 32).labels) == 60
    fresh_worker(monkeypatch, tmp_path / "worker-2")
    second = load_dataset(name, 32)
    assert torch.equal(first.train_images, second.train_images) and torch.equal(first.val_images, second.val_images)

    # Skipping changes nothing but the file's absence: the splits are those of the tree without it.
    (scraped_tree / "cat" / "cut.jpg").unlink()
    fresh_worker(monkeypatch, tmp_path / "worker-3")
    assert check_dataset(name) == DatasetCheck(num_classes=3, images=60)
    without = load_dataset(name, 32)
    assert torch.equal(first.train_images, without.train_images) and torch.equal(first.val_labels, without.val_labels)


def test_a_file_that_cannot_be_opened_is_skipped(scraped_tree):
    """A file without read permission (as root, who reads any plain file, a link to another process's memory,
    which root may not open either): skipped, then found again once it can be read, never left skipped by a
    cached scan."""
    (scraped_tree / "cat" / "cut.jpg").unlink()
    locked = scraped_tree / "dog" / "3.png"
    kept = locked.read_bytes()
    as_root = os.geteuid() == 0
    if as_root:
        locked.unlink()
        locked.symlink_to("/proc/1/mem")
    else:
        locked.chmod(0)
    try:
        with pytest.warns(UnreadableImagesWarning, match="PermissionError"):
            assert check_dataset(f"imagefolder:{scraped_tree}").unreadable == ("dog/3.png",)
    finally:
        if as_root:
            locked.unlink()
            locked.write_bytes(kept)
        else:
            locked.chmod(0o644)
    assert check_dataset(f"imagefolder:{scraped_tree}").unreadable == ()


def test_many_unreadable_images_are_refused_naming_one(image_tree, scraped_tree):
    # One bad file among 13 is more than the noise a scrape leaves; the message names it.
    (image_tree / "dog" / "9.png").write_bytes(b"garbage")
    message = one_line_error(lambda: check_dataset(f"imagefolder:{image_tree}"))
    assert "1 of 13" in message and "dog/9.png" in message
    assert "dog/9.png" in one_line_error(lambda: load_dataset(f"imagefolder:{image_tree}", 48))
    # A class whose every image fails would vanish, shifting every label after it.
    (scraped_tree / "cat" / "cut.jpg").unlink()
    (scraped_tree / "emu").mkdir()
    (scraped_tree / "emu" / "0.jpg").write_bytes(b"\xff\xd8 not really")
    message = one_line_error(lambda: check_dataset(f"imagefolder:{scraped_tree}"))
    assert str(scraped_tree / "emu") in message and "emu/0.jpg" in message


def test_hidden_files_are_not_images(image_tree):
    (image_tree / "cat" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (image_tree / ".thumbnails").mkdir()
    (image_tree / ".thumbnails" / "0.png").write_bytes(b"")
    assert check_dataset(f"imagefolder:{image_tree}") == DatasetCheck(num_classes=3, images=12)


def test_unknown_dataset_is_one_line():
    assert "available" in one_line_error(lambda: check_dataset("imagenet"))
    assert "imagefolder:PATH" in one_line_error(lambda: check_dataset("imagefolder"))


# ---- the test split ---------------------------------------------------------------------------------


def image_set(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_shapes_test_split_is_disjoint_and_its_own_stream():
    splits = load_dataset("shapes", 32, train_size=256, val_size=128)
    test = load_test_split("shapes", 32, train_size=256, test_size=128)
    assert len(test.labels) == 128 and test.num_classes == 8
    assert not image_set(test.images) & (image_set(splits.train_images) | image_set(splits.val_images))
    # Its own stream: capping the training split does not move the test images.
    assert torch.equal(test.labels, load_test_split("shapes", 32, train_size=64, test_size=128).labels)


def test_digits_partition_is_disjoint_and_covers_every_image():
    from gas.evaluate.datasets import digits

    train, val, test = digits._partition(1797)
    indices = [set(part.tolist()) for part in (train, val, test)]
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])
    assert set().union(*indices) == set(range(1797))
    assert len(load_test_split("digits", 16).labels) == len(test) == 359


def test_imagefolder_test_files_are_held_out_per_class(tmp_path):
    from gas.evaluate.datasets import imagefolder

    root = write_image_tree(tmp_path / "tree", {"a": 10, "b": 6, "c": 2})
    train, val, test = imagefolder._partition(imagefolder.scan(str(root)))
    files = [{file for file, _ in part} for part in (train, val, test)]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    assert sum(len(part) for part in files) == 18
    held_out = {label for _, label in test}
    assert held_out == {0, 1}  # a class of 2 images keeps one for training and one for validation
    assert len(load_test_split(f"imagefolder:{root}", 32).labels) == len(test)


def test_test_split_is_normalised_like_training_and_cached_apart(tmp_path, monkeypatch):
    """The test file is written only when the test split is asked for: a search that never asks leaves none."""
    fresh_worker(monkeypatch, tmp_path / "cache")
    load_dataset("digits", 16, train_size=200)
    assert not list((cache_dir() / "datasets").glob("*-test-*"))
    test = load_test_split("digits", 16, train_size=200)
    assert len(list((cache_dir() / "datasets").glob("digits-test-16px-*.pt"))) == 1
    from gas.evaluate.datasets import digits

    raw = digits.load(16, 200, None).train_images.float() / 255
    mean, std = raw.mean(dim=(0, 2, 3), keepdim=True), raw.std(dim=(0, 2, 3), keepdim=True)
    expected = (digits.load_test(16, None).images.float() / 255 - mean) / std
    assert torch.allclose(test.images, expected, atol=1e-5)
    assert "test_size" in one_line_error(lambda: load_test_split("digits", 16, test_size=0))
