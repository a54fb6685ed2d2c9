"""`imagefolder:PATH`: one folder per class, read with Pillow; the few files that do not decode are skipped."""

from __future__ import annotations

import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gas.errors import GasError
from gas.evaluate.datasets.cache import cache_dir, cache_key, write_atomically
from gas.evaluate.datasets.raw import SPLIT_SEED, RawSplits, RawTest, take

if TYPE_CHECKING:
    from collections.abc import Iterable

    from PIL.Image import Image as PILImage

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
IMAGEFOLDER_VAL_FRACTION = 0.2
IMAGEFOLDER_TEST_FRACTION = 0.2
# Skipping is for the stray bad file of a scraped set. When a larger share fails the cause is rarely the
# files themselves (permissions on a sub-tree, a codec Pillow lacks, a copy still running), and training on
# what is left would quietly change the task, so the scan refuses instead.
MAX_UNREADABLE_FRACTION = 0.05
_DECODE_THREADS = 8  # Pillow releases the GIL while it decodes, so threads overlap the scan's decoding


@dataclass(frozen=True)
class Scan:
    """An image tree after every file was decoded once."""

    root: Path
    classes: dict[str, list[Path]]  # class name → its files that decode, sorted
    unreadable: dict[str, str]  # path relative to root → why it does not decode, sorted by path

    @property
    def images(self) -> int:
        return sum(len(files) for files in self.classes.values())


def class_files(path: str) -> dict[str, list[Path]]:
    """Class name → sorted image files, or one line saying what the tree should look like.

    Hidden files and folders are left out: a tree copied from macOS holds an AppleDouble `._1.jpg` next to
    every `1.jpg`, and it is no image. A class folder without images is refused rather than dropped, since
    dropping it would change the number of classes without a word.
    """
    root = Path(path).expanduser()
    expected = "one sub-folder per class holding images (e.g. PATH/cat/1.jpg, PATH/dog/2.png)"
    if not root.is_dir():
        raise GasError(f"imagefolder: {root} is not a directory; expected {expected}")
    classes = {}
    try:
        folders = sorted(entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        for folder in folders:
            files = sorted(
                file
                for file in folder.rglob("*")
                if file.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in file.relative_to(folder).parts)
                and file.is_file()
            )
            if not files:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise GasError(
                    f"imagefolder: class folder {folder} holds no images ({suffixes}); add some or remove it"
                )
            classes[folder.name] = files
    except OSError as error:
        raise GasError(f"imagefolder: cannot list {root} ({_reason(error)})") from None
    if len(classes) < 2:
        raise GasError(f"imagefolder: {root} has {len(classes)} class folder(s) with images; expected {expected}")
    return classes


def scan(path: str) -> Scan:
    """The tree's files that decode, by class; one-line GasError where skipping the others cannot help."""
    root = Path(path).expanduser()
    classes = class_files(path)
    files = [file for members in classes.values() for file in members]
    unreadable = _unreadable_files(root, files)
    if len(unreadable) > MAX_UNREADABLE_FRACTION * len(files):
        first, reason = next(iter(unreadable.items()))
        raise GasError(
            f"imagefolder: {len(unreadable)} of {len(files)} image files under {root} do not decode, more than the "
            f"{MAX_UNREADABLE_FRACTION:.0%} skipped as noise; the first is {first} ({reason})"
        )
    readable = {}
    for name, members in classes.items():
        readable[name] = [file for file in members if file.relative_to(root).as_posix() not in unreadable]
        if not readable[name]:
            first, reason = next((file, why) for file, why in unreadable.items() if file.startswith(f"{name}/"))
            raise GasError(f"imagefolder: no image in class folder {root / name} decodes; {first}: {reason}")
    if max(len(members) for members in readable.values()) < 2:
        raise GasError(f"imagefolder: {root} has too few images for a validation split (need 2+ in a class)")
    return Scan(root, readable, unreadable)


def fingerprint(files: Iterable[Path]) -> str:
    """Each file's path, size and change times, and Pillow's version: everything that decides what decodes.

    The ctime is there for permissions: chmod leaves the mtime alone, and a file made readable must
    invalidate both the cached scan and the cached images.
    """
    import PIL

    stamps = []
    for file in files:
        stat = file.stat()
        stamps.append(f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}")
    return f"pillow {PIL.__version__};" + ";".join(stamps)


def _unreadable_files(root: Path, files: list[Path]) -> dict[str, str]:
    """Path relative to `root` → reason, for each of `files` that does not decode, sorted by path.

    The answer is kept on disk under the files' fingerprint: a repeated search on the same tree, and the
    workers on the driver's machine, skip a second pass over every image. Where it is missing (another
    machine, a cleared cache) it is computed again, and decoding the same bytes gives the same answer.
    """
    relative = [file.relative_to(root).as_posix() for file in files]
    # The names are part of the key too: a root of symlinked class folders has the same files under others.
    key = cache_key(f"{fingerprint(files)}|{';'.join(relative)}")
    path = cache_dir() / "datasets" / f"imagefolder-unreadable-{key}.json"
    try:
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and all(isinstance(reason, str) for reason in stored.values()):
            return dict(sorted(stored.items()))
    except (OSError, ValueError):
        pass  # absent or damaged: decode again
    with ThreadPoolExecutor(max_workers=min(_DECODE_THREADS, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(_decode_failure, files))
    unreadable = dict(sorted((name, why) for name, why in zip(relative, reasons, strict=True) if why is not None))
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(unreadable)))
    return unreadable


def _decode(file: Path) -> PILImage:
    """The whole image in RGB. The scan and the loader both decode here, so they agree on what fails."""
    from PIL import Image

    with Image.open(file) as image:
        rgb = image.convert("RGB")  # decodes every pixel: Image.verify would pass a truncated JPEG
    if min(rgb.size) < 1:
        raise ValueError("the image has no pixels")
    return rgb


def _decode_failure(file: Path) -> str | None:
    """None if `file` decodes, else a short reason."""
    try:
        _decode(file)
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return _reason(error)
    return None


def _reason(error: BaseException) -> str:
    """The error as a short single line, for messages that name a file."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:160]


def _read_image(file: Path, resolution: int) -> np.ndarray:
    """RGB uint8 [3, R, R]: shorter side resized to R, then the centre crop."""
    from PIL import Image

    try:
        image = _decode(file)
    except Exception as error:  # the scan decoded this file, and its fingerprint still matches
        raise GasError(f"imagefolder: {file} decoded when scanned but not now ({_reason(error)})") from None
    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def load(path: str, resolution: int, train_size: int | None, val_size: int | None) -> RawSplits:
    """Training and validation images of the tree (see `_partition`), each split shuffled before a cap."""
    found = scan(path)
    train, val, _ = _partition(found)
    rng = np.random.default_rng(SPLIT_SEED)
    train = [train[index] for index in rng.permutation(len(train))[: take(train_size, len(train))]]
    val = [val[index] for index in rng.permutation(len(val))[: take(val_size, len(val))]]
    train_images, train_labels = _stack(train, resolution)
    val_images, val_labels = _stack(val, resolution)
    return RawSplits(len(found.classes), train_images, train_labels, val_images, val_labels)


def load_test(path: str, resolution: int, test_size: int | None) -> RawTest:
    """The tree's test images (see `_partition`), shuffled before a cap."""
    found = scan(path)
    test = _partition(found)[2]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(test))
    test = [test[index] for index in order[: take(test_size, len(test))]]
    images, labels = _stack(test, resolution)
    return RawTest(len(found.classes), images, labels)


Labelled = list[tuple[Path, int]]


def _partition(found: Scan) -> tuple[Labelled, Labelled, Labelled]:
    """(train, validation, test) files with their labels, held out per class by a hash of each file's name.

    A hash, not a shuffle, so a file keeps its split when others are added. Only files that decode take
    part, so a skipped file is simply absent: the splits are those of the same tree without it. Every class
    with 2+ images has one in training and one in validation; the test split takes its share after that.
    """
    train, val, test = [], [], []
    for label, files in enumerate(found.classes.values()):
        ranked = sorted(files, key=lambda file: zlib.crc32(str(file.relative_to(found.root)).encode()))
        n_val = min(max(round(len(ranked) * IMAGEFOLDER_VAL_FRACTION), 1), len(ranked) - 1)
        n_test = min(round(len(ranked) * IMAGEFOLDER_TEST_FRACTION), len(ranked) - 1 - n_val)
        val += [(file, label) for file in ranked[:n_val]]
        test += [(file, label) for file in ranked[n_val : n_val + n_test]]
        train += [(file, label) for file in ranked[n_val + n_test :]]
    return train, val, test


def _stack(items: Labelled, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not items:  # a tree too small to hold a test image in any class
        return torch.zeros((0, 3, resolution, resolution), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    images = np.stack([_read_image(file, resolution) for file, _ in items])
    return torch.from_numpy(images), torch.tensor([label for _, label in items], dtype=torch.int64)
