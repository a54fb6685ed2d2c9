"""`shapes`, the dataset gas generates itself: a large figure among small distractors, 8 classes."""

from __future__ import annotations

import numpy as np
import torch

from gas.evaluate.datasets.raw import SPLIT_SEED, RawSplits, RawTest

# Eight classes: which shape the large figure is, and which half of the image holds it.
SHAPE_KINDS = ("circle", "square", "triangle", "cross")
SHAPES_LABELS = tuple(f"{kind}-{side}" for side in ("left", "right") for kind in SHAPE_KINDS)
SHAPES_CLASSES = len(SHAPES_LABELS)
SHAPES_TRAIN, SHAPES_VAL, SHAPES_TEST = 2048, 512, 1024
SHAPES_FIGURE_RADIUS = (0.15, 0.22)  # the figure's size as a fraction of the image side
SHAPES_DISTRACTORS = (0, 2)  # small shapes per scene, inclusive range
SHAPES_DISTRACTOR_RADIUS = (0.035, 0.06)
SHAPES_MIDLINE_MARGIN = 0.06  # the figure's centre stays this far from the vertical midline
SHAPES_NOISE = 0.06  # std of per-pixel Gaussian noise, in [0, 1] intensity
_CIRCLE, _SQUARE, _TRIANGLE, _CROSS = range(4)
# Each kind's geometry is scaled so that all four cover the same area (that of a circle of the drawn
# radius): otherwise the number of bright pixels alone would tell a cross from a circle.
# Areas in units of radius²: circle π, square 1.7² = 2.89, triangle 1.84, cross 2.204 (see `_paint`).
_AREA_SCALE = np.sqrt(np.pi / np.array([np.pi, 2.89, 1.84, 2.204]))
_EXTENT = 1.12  # every kind fits in a disc of this many (scaled) radii around its centre


def load(resolution: int, train_size: int | None, val_size: int | None) -> RawSplits:
    """Generate the `shapes` splits; train, validation and test come from seeds of their own, so never overlap."""
    n_train = train_size or SHAPES_TRAIN
    n_val = val_size or SHAPES_VAL
    train_images, train_labels = draw_shapes(n_train, resolution, seed=SPLIT_SEED)
    val_images, val_labels = draw_shapes(n_val, resolution, seed=SPLIT_SEED + 1)
    return RawSplits(SHAPES_CLASSES, train_images, train_labels, val_images, val_labels)


def load_test(resolution: int, test_size: int | None) -> RawTest:
    """The test split, drawn from a stream of its own (SHAPES_TEST scenes unless `test_size` says)."""
    images, labels = draw_shapes(test_size or SHAPES_TEST, resolution, seed=SPLIT_SEED + 2)
    return RawTest(SHAPES_CLASSES, images, labels)


def draw_shapes(count: int, resolution: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` scenes as uint8 [count, 3, R, R] and their labels (see SHAPES_LABELS), deterministic in `seed`.

    Each scene holds one large figure (a circle, square, triangle or cross of random size, brightness and
    place) and 0-2 small distractor shapes on a random dark background with pixel noise. The label is the
    figure's kind and the half of the image its centre lies in, 8 classes. All kinds cover the same area and
    brightness is drawn independently of the label, so the multiset of pixel values says nothing about it:
    the kind is in how the bright pixels are arranged, the side in where they are. A network must see
    shape and position, while the task stays easy enough to learn in a proxy's few hundred steps.

    Geometry is drawn in unit coordinates and rendered with a one-pixel soft edge, so the same seed gives
    the same scene at every resolution.
    """
    rng = np.random.default_rng(seed)
    slots = 1 + SHAPES_DISTRACTORS[1]
    kinds = rng.integers(0, len(SHAPE_KINDS), size=(count, slots))
    distractors = rng.integers(SHAPES_DISTRACTORS[0], SHAPES_DISTRACTORS[1] + 1, size=count)
    present = np.arange(slots)[None, :] < (1 + distractors)[:, None]
    radius = np.concatenate(
        [
            rng.uniform(*SHAPES_FIGURE_RADIUS, size=(count, 1)),
            rng.uniform(*SHAPES_DISTRACTOR_RADIUS, size=(count, slots - 1)),
        ],
        axis=1,
    )
    scaled = radius * _AREA_SCALE[kinds]  # the geometry's unit length for each object
    centres = _place(rng, scaled * _EXTENT, present)
    labels = kinds[:, 0] + len(SHAPE_KINDS) * (centres[:, 0, 0] > 0.5)

    # Grey levels: bright objects on a dark background, each drawn independently of the label.
    background = rng.uniform(0.0, 0.3, size=(count, 1)).astype(np.float32)
    brightness = rng.uniform(0.6, 1.0, size=(count, slots, 1)).astype(np.float32)
    canvas = np.empty((count, resolution, resolution, 3), dtype=np.float32)  # channels last for patch writes
    canvas[:] = background[:, None, None, :]
    for slot in range(slots):
        _paint(canvas, kinds[:, slot], centres[:, slot], scaled[:, slot], brightness[:, slot], present[:, slot])
    canvas += rng.standard_normal(size=canvas.shape, dtype=np.float32) * np.float32(SHAPES_NOISE)
    images = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))


def _place(rng: np.random.Generator, extent: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Centres [count, slots, 2] inside the image with no two objects touching; clears `present` on misfits.

    Objects are placed one slot at a time, each redrawn until it clears the ones placed before. The figure
    (slot 0) is also redrawn while its centre is near the vertical midline, so its side is unambiguous. A
    distractor that finds no room after a few tries is left out of its scene.
    """
    count, slots = extent.shape
    centres = np.zeros((count, slots, 2))
    for slot in range(slots):
        todo = np.flatnonzero(present[:, slot])
        for _ in range(64):
            if not len(todo):
                break
            margin = extent[todo, slot, None]
            proposal = rng.uniform(margin, 1 - margin, size=(len(todo), 2))
            gaps = np.linalg.norm(proposal[:, None] - centres[todo, :slot], axis=-1)
            needed = 1.2 * (margin + extent[todo, :slot])
            good = ~((gaps < needed) & present[todo, :slot]).any(axis=1)
            if slot == 0:
                good &= np.abs(proposal[:, 0] - 0.5) > SHAPES_MIDLINE_MARGIN
            centres[todo[good], slot] = proposal[good]
            todo = todo[~good]
        if slot == 0 and len(todo):  # the figure always fits on an empty canvas; a loop this long is a bug
            raise RuntimeError("shapes: could not place the figure")
        present[todo, slot] = False
    return centres


def _paint(
    canvas: np.ndarray,
    kind: np.ndarray,
    centre: np.ndarray,
    radius: np.ndarray,
    colour: np.ndarray,
    present: np.ndarray,
) -> None:
    """Blend one object per scene into `canvas` [count, R, R, 3], touching only a patch around each object.

    `radius` is the unit length of each object's geometry; `colour` is [count, 3] or [count, 1] (grey).

    The object's edge is a signed distance (in units of its radius) turned into a one-pixel ramp, which
    antialiases it. Patch pixels beyond the border are clamped onto it; they are outside every object, so
    writing the clamped pixel again leaves it unchanged.
    """
    count, resolution = canvas.shape[0], canvas.shape[1]
    patch = int(np.ceil(2 * _EXTENT * radius.max(initial=0.0) * resolution)) + 3
    corner = np.floor((centre - _EXTENT * radius[:, None]) * resolution).astype(np.int64) - 1  # [count, (x, y)]
    steps = np.arange(patch)
    cols = np.clip(corner[:, 0, None] + steps, 0, resolution - 1)  # [count, patch]
    rows = np.clip(corner[:, 1, None] + steps, 0, resolution - 1)
    scale = radius[:, None] * resolution
    dx = ((cols + 0.5) - centre[:, 0, None] * resolution) / scale
    dy = ((rows + 0.5) - centre[:, 1, None] * resolution) / scale
    dx, dy = dx[:, None, :], dy[:, :, None]  # [count, patch rows, patch cols] by broadcasting
    ax, ay = np.abs(dx), np.abs(dy)
    shape = kind[:, None, None]
    distance = np.select(
        [shape == _CIRCLE, shape == _SQUARE, shape == _TRIANGLE],
        [
            np.sqrt(dx * dx + dy * dy) - 1.0,
            np.maximum(ax, ay) - 0.85,
            # Upward triangle: inside its base and its two slanted sides.
            np.maximum(dy - 0.8, 0.894 * ax - 0.447 * dy - 0.5),
        ],
        np.minimum(np.maximum(ax - 1.0, ay - 0.33), np.maximum(ax - 0.33, ay - 1.0)),  # cross
    )
    alpha = np.clip(0.5 - distance * scale[:, :, None], 0.0, 1.0).astype(np.float32)
    alpha *= present[:, None, None]
    index = np.arange(count)[:, None, None]
    region = canvas[index, rows[:, :, None], cols[:, None, :]]  # [count, patch, patch, 3]
    region += alpha[..., None] * (colour[:, None, None, :] - region)
    canvas[index, rows[:, :, None], cols[:, None, :]] = region
