"""The data sets a `data` config group names: ISBI 2012, any folder of image/mask pairs, a volume (a stack of
slices and its labels in TIFF, HDF5 or Zarr), and synthetic cells (numpy only, no TensorFlow).

Every loader returns a `SegmentationSet`: float32 images (H, W, C) in [0, 1] and uint8 masks (H, W) of
class indices (binary: 1 = white; classes.IGNORE where unlabelled). All problems with the files are raised
as `DataError` naming the file and the fix, before any model is built.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from segexp.data.classes import check_instance_ids, decode_instances, decode_mask, parse_classes, reads_indices
from segexp.data.images import (
    list_images,
    match_by_stem,
    pixel_digest,
    read_image,
    resize_labels,
    resize_pair,
    to_channels,
    to_unit_float,
)
from segexp.data.sets import Classes, SegmentationSet
from segexp.errors import DataError

MANIFEST = "SHA256SUMS"


def default_isbi_root() -> Path:
    """Returns data/isbi2012 of the checkout this package runs from, else of the cwd."""
    checkout = Path(__file__).resolve().parents[3] / "data" / "isbi2012"
    return checkout if checkout.is_dir() else Path.cwd() / "data" / "isbi2012"


def load_pairs(
    image_paths: Sequence[Path],
    mask_paths: Sequence[Path],
    channels: int | None,
    normalize: str,
    mask_threshold: int | None,
    resize: Sequence[int] | None = None,
    classes: Classes | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Returns (images, masks as class indices, pixel digests of the images as read), validated and optionally
    resized."""
    classes = classes or parse_classes(None)
    images, masks = [], []
    for image_path, mask_path in zip(image_paths, mask_paths):
        raw = read_image(image_path)
        mask = decode_mask(read_image(mask_path, indexed=reads_indices(classes)), mask_path, classes,
                           mask_threshold)
        if raw.shape[:2] != mask.shape:
            raise DataError(
                f"{image_path}: image is {raw.shape[1]}x{raw.shape[0]} but its mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]}; image and mask must have the same size"
            )
        images.append(raw)
        masks.append(mask)
    return (*as_slices(images, masks, channels, normalize, resize), [pixel_digest(img) for img in images])


def as_slices(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], channels: int | None, normalize: str,
              resize: Sequence[int] | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Returns (float32 (H, W, C) images in [0, 1], masks), both at `resize` if given: the in-memory slices of
    images as read (channels None: RGB if any image has colour, else gray)."""
    if channels is None:
        channels = 3 if any(img.ndim == 3 for img in images) else 1
    pairs = [resize_pair(to_channels(to_unit_float(img, normalize), channels), m, resize) for img, m in zip(images, masks)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def load_folder(
    images: str,
    masks: str,
    channels: int | None = None,
    normalize: str = "dtype",
    foreground: int = 1,
    mask_threshold: int | None = None,
    resize: Sequence[int] | None = None,
    name: str = "folder",
    classes: Sequence | None = None,
    ignore=None,
) -> SegmentationSet:
    """Returns the image/mask pairs of two directories, matched by file stem; masks hold the `classes`."""
    spec = parse_classes(classes, ignore)
    image_files = list_images(Path(images), "images")
    mask_files = list_images(Path(masks), "masks")
    stems = match_by_stem(image_files, mask_files)
    imgs, msks, digests = load_pairs(
        [image_files[s] for s in stems], [mask_files[s] for s in stems], channels, normalize, mask_threshold, resize,
        spec)
    return SegmentationSet(imgs, msks, stems, foreground, name, digests, spec)


def load_volume(
    images: str,
    masks: str,
    images_key: str | None = None,
    masks_key: str | None = None,
    labels: str = "mask",
    channels: int | None = None,
    normalize: str = "dtype",
    foreground: int = 0,
    mask_threshold: int | None = None,
    resize: Sequence[int] | None = None,
    name: str = "volume",
    classes: Sequence | None = None,
    ignore=None,
) -> SegmentationSet:
    """Returns the z slices of an image volume and its labels (a multi-page TIFF, an HDF5 dataset or a Zarr
    array each, data.volumes), named by their z index: the same slices, digests and masks a folder of the same
    images as PNGs gives. `labels` says what the label volume holds: `mask`, read as a folder's mask files are
    (binary, or class indices of data.classes), or `instances`, object ids from which the boundary mask is derived
    (classes.decode_instances) and which the affinity target takes as its objects."""
    from segexp.data.affinities import instance_objects
    from segexp.data.volumes import open_volume

    spec = parse_classes(classes, ignore)
    instances = str(labels) == "instances"  # with two classes and no mask_threshold: checks.check_data
    with open_volume(images, images_key, "data.images") as image_volume, \
            open_volume(masks, masks_key, "data.masks", labels=True) as label_volume:
        if image_volume.size != label_volume.size:
            raise DataError(f"{image_volume.where}: images are (z, y, x) = {image_volume.size} but the labels "
                            f"{label_volume.where} are {label_volume.size}; images and labels must have the same size")
        if instances:
            check_instance_ids(label_volume.dtype, label_volume.where)
        raws, slice_masks, objects = [], [], []
        for z in range(image_volume.size[0]):
            raws.append(image_volume.slice(z))
            label, where = label_volume.slice(z), f"{label_volume.where} z={z}"
            if instances:
                slice_masks.append(decode_instances(label, where, spec.ignore))
                objects.append(instance_objects(label, spec.ignore))
            else:
                try:
                    slice_masks.append(decode_mask(label, where, spec, mask_threshold))
                except DataError as err:
                    if spec.palette:
                        raise
                    raise DataError(f"{err}; for object ids set data.labels=instances") from err
    imgs, msks = as_slices(raws, slice_masks, channels, normalize, resize)
    if instances and resize is not None:
        objects = [resize_labels(ids, resize) for ids in objects]
    return SegmentationSet(imgs, msks, [str(z) for z in range(len(raws))], foreground, name,
                           [pixel_digest(raw) for raw in raws], spec, objects if instances else None)


def verify_manifest(root: Path) -> None:
    """Raises DataError unless every file listed in root/SHA256SUMS has its recorded hash."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{manifest}: checksum manifest missing; restore it with `git checkout {manifest}`")
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        expected, relative = line.split(maxsplit=1)
        path = root / relative.lstrip("*")
        if not path.is_file():
            raise DataError(f"{path}: listed in {manifest} but missing; restore it with `git checkout {root}`")
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise DataError(
                f"{path}: sha256 differs from {manifest}; the file was modified - restore it with "
                f"`git checkout {path}` or set data.verify=false to use it anyway"
            )


def load_isbi2012(
    root: str | None = None,
    verify: bool = True,
    channels: int | None = None,
    normalize: str = "dtype",
    foreground: int = 0,
    mask_threshold: int | None = None,
    resize: Sequence[int] | None = None,
    name: str = "isbi2012",
    classes: Sequence | None = None,
    ignore=None,
) -> SegmentationSet:
    """Returns the 30 labeled ISBI 2012 training slices (train/image, train/label)."""
    base = Path(root) if root else default_isbi_root()
    if not base.is_dir():
        raise DataError(f"{base}: ISBI 2012 data not found; set data.root to the folder holding train/ and test/")
    if verify:
        verify_manifest(base)
    return load_folder(str(base / "train" / "image"), str(base / "train" / "label"), channels, normalize,
                       foreground, mask_threshold, resize, name, classes, ignore)


def voronoi_cells(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Returns (size, size) int labels of the nearest of `cells` random seed points."""
    seeds = rng.uniform(0, size, (cells, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    dist = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    return dist.argmin(axis=-1)


def make_synthetic(
    count: int = 12,
    size: int = 128,
    cells: int = 40,
    seed: int = 0,
    channels: int | None = None,
    normalize: str = "dtype",
    foreground: int = 0,
    mask_threshold: int | None = None,
    resize: Sequence[int] | None = None,
    name: str = "synthetic",
    classes: Sequence | None = None,
    ignore=None,
) -> SegmentationSet:
    """Returns EM-like Voronoi cells: 1-px dark membranes (mask 0) between bright cells (mask 1)."""
    spec = parse_classes(classes, ignore)
    if not spec.binary:
        raise DataError(f"data=synthetic draws two classes (membrane, cell), not {spec.count}; use data=shapes "
                        "for several")
    rng = np.random.default_rng(seed)
    images, masks, digests = [], [], []
    for _ in range(count):
        labels = voronoi_cells(size, cells, rng)
        boundary = np.zeros_like(labels, dtype=bool)
        boundary[:-1] |= labels[:-1] != labels[1:]
        boundary[:, :-1] |= labels[:, :-1] != labels[:, 1:]
        mask = (~boundary).astype(np.uint8)
        texture = rng.uniform(0.55, 0.85, cells)[labels]  # each cell its own brightness
        image = np.clip(np.where(boundary, 0.15, texture) + rng.normal(0, 0.05, labels.shape), 0, 1).astype(np.float32)
        digests.append(pixel_digest(image))
        image, mask = resize_pair(to_channels(image, channels or 1), mask, resize)
        images.append(image)
        masks.append(mask)
    return SegmentationSet(images, masks, [f"synthetic_{i}" for i in range(count)], foreground, name, digests, spec)


SHAPE_KINDS = ("disc", "square", "ring", "triangle", "bar")


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, slice, slice] | None:
    """Returns (boolean footprint, rows, columns) of one shape of `kind` at a random place, or None if it
    would not fit."""
    radius = int(rng.integers(max(3, size // 20), max(4, size // 8) + 1))
    if 2 * radius + 2 >= size:
        return None
    cy, cx = (int(v) for v in rng.integers(radius + 1, size - radius - 1, 2))
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    footprint = {
        "disc": yy ** 2 + xx ** 2 <= radius ** 2,
        "square": np.maximum(abs(yy), abs(xx)) <= radius * 0.8,
        "ring": (yy ** 2 + xx ** 2 <= radius ** 2) & (yy ** 2 + xx ** 2 >= (radius * 0.55) ** 2),
        "triangle": (yy >= -radius * 0.8) & (abs(xx) <= (yy + radius * 0.8) * 0.6) & (yy <= radius * 0.8),
        "bar": (abs(yy) <= max(1, radius // 4)) & (abs(xx) <= radius),
    }[kind]
    return footprint, slice(cy - radius, cy + radius + 1), slice(cx - radius, cx + radius + 1)


def make_shapes(
    count: int = 12,
    size: int = 96,
    shapes: int = 12,
    seed: int = 0,
    classes: Sequence | None = ("background", "disc", "square", "ring"),
    ignore=None,
    channels: int | None = None,
    normalize: str = "dtype",
    foreground: int = 1,
    mask_threshold: int | None = None,
    resize: Sequence[int] | None = None,
    name: str = "shapes",
) -> SegmentationSet:
    """Returns K-class data: shapes of up to five kinds (data.classes after the first, background, name them in
    the order disc, square, ring, triangle, bar) on a textured background, each kind its own brightness and
    texture, masks the class index of every pixel; deterministic from `seed`."""
    spec = parse_classes(list(classes) if classes is not None else None, ignore)
    kinds = spec.count - 1
    if not 1 <= kinds <= len(SHAPE_KINDS):
        raise DataError(f"data=shapes draws 1 to {len(SHAPE_KINDS)} kinds of shape ({', '.join(SHAPE_KINDS)}) after "
                        f"the background class; data.classes lists {spec.count} classes")
    rng = np.random.default_rng(seed)
    images, masks, digests = [], [], []
    for _ in range(count):
        yy, xx = np.mgrid[0:size, 0:size] / size
        phase = rng.uniform(0, 2 * np.pi, 2)
        image = 0.35 + 0.08 * np.sin(9 * yy + phase[0]) * np.cos(7 * xx + phase[1])
        mask = np.zeros((size, size), np.uint8)
        for _ in range(shapes):
            kind = int(rng.integers(kinds))
            drawn = draw_shape(SHAPE_KINDS[kind], size, rng)
            if drawn is None:
                continue
            footprint, rows, cols = drawn
            mask[rows, cols][footprint] = kind + 1
            image[rows, cols][footprint] = 0.55 + 0.1 * kind + 0.06 * np.sin(4 * kind * yy[rows, cols])[footprint]
        image = np.clip(image + rng.normal(0, 0.04, image.shape), 0, 1).astype(np.float32)
        digests.append(pixel_digest(image))
        image, mask = resize_pair(to_channels(image, channels or 1), mask, resize)
        images.append(image)
        masks.append(mask)
    return SegmentationSet(images, masks, [f"shapes_{i}" for i in range(count)], foreground, name, digests, spec)


SPLIT_KEYS = ("folds", "fold")  # keys of the data group that choose held-out slices, not how to read them


def load(data_cfg, at_labels: bool = False) -> SegmentationSet:
    """Returns the data set a data group node describes (its loader instantiated without the split keys);
    with `at_labels`, data.resize off: the slices as their labels are drawn, the resolution every
    reported score is taken at."""
    from omegaconf import OmegaConf

    from segexp.config.instantiate import instantiate

    node = OmegaConf.masked_copy(data_cfg, [k for k in data_cfg if k not in SPLIT_KEYS])
    if at_labels:
        node.resize = None
    return instantiate(node, _convert_="all")


