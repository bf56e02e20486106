"""Reading, validating and splitting segmentation data sets (numpy only, no TensorFlow).

Every loader returns a `SegmentationSet`: float32 images (H, W, C) in [0, 1] and binary
uint8 masks (H, W) with 1 = white. All problems with the files are raised as `DataError`
naming the file and the fix, before any model is built.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from segexp.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MANIFEST = "SHA256SUMS"


@dataclass(frozen=True)
class SegmentationSet:
    images: list[np.ndarray]  # float32 (H, W, C) in [0, 1]
    masks: list[np.ndarray]  # uint8 (H, W) in {0, 1}; 1 = white
    names: list[str]
    foreground: int = 0  # mask value whose Dice/IoU is scored
    name: str = "data"
    digests: list[str] | None = None  # pixel_digest of each image as read, before normalizing or resizing

    @property
    def channels(self) -> int:
        return self.images[0].shape[-1]

    def subset(self, indices: Sequence[int]) -> "SegmentationSet":
        pick = lambda items: [items[i] for i in indices]  # noqa: E731
        digests = pick(self.digests) if self.digests is not None else None
        return SegmentationSet(pick(self.images), pick(self.masks), pick(self.names), self.foreground, self.name,
                               digests)


def pixel_digest(array: np.ndarray) -> str:
    """Returns a sha256 of an image's decoded pixels (values, dtype and shape): the same slice gets the
    same digest whatever its file name, format or folder, so a run's split can be recognised anywhere."""
    array = np.ascontiguousarray(array)
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(header + array.tobytes()).hexdigest()


def combined_digest(digests: Sequence[str] | None) -> str:
    """Returns one sha256 over slice digests, order-independent (the same slices give the same value)."""
    if not digests or None in digests:
        return "(none)"
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def default_isbi_root() -> Path:
    """Returns data/isbi2012 of the checkout this package runs from, else of the cwd."""
    checkout = Path(__file__).resolve().parents[2] / "data" / "isbi2012"
    return checkout if checkout.is_dir() else Path.cwd() / "data" / "isbi2012"


def read_image(path: Path) -> np.ndarray:
    """Returns the file's pixels as an array (H, W) or (H, W, C), in the file's own dtype."""
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unsupported format {path.suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and not mid-training
            if img.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr"):
                img = img.convert("RGB")
            elif img.mode == "1":
                img = img.convert("L")
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"{path}: cannot be read as an image ({err}); replace or remove the file") from err
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def to_unit_float(array: np.ndarray, normalize: str = "dtype") -> np.ndarray:
    """Returns float32 in [0, 1]: by the dtype's range, or by the 1st-99th percentile."""
    x = array.astype(np.float32)
    if normalize == "percentile":
        lo, hi = np.percentile(x, [1, 99])
        return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if np.issubdtype(array.dtype, np.integer):
        return x / np.iinfo(array.dtype).max
    return np.clip(x, 0.0, 1.0)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Returns (H, W, channels): gray is repeated to RGB, RGB is averaged to gray."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return image[..., :3].mean(axis=-1, keepdims=True)
    return np.repeat(image[..., :1], channels, axis=-1)


def to_binary_mask(array: np.ndarray, path: Path, threshold: int | None) -> np.ndarray:
    """Returns uint8 {0, 1}; raises DataError for values other than {0,1} or {0,255} without a threshold."""
    if array.ndim == 3:
        array = array[..., :3].max(axis=-1)
    if threshold is not None:
        return (array > threshold).astype(np.uint8)
    values = np.unique(array)
    if set(values.tolist()) <= {0, 1}:
        return array.astype(np.uint8)
    if set(values.tolist()) <= {0, 255}:
        return (array == 255).astype(np.uint8)
    shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise DataError(
        f"{path}: mask is not binary (values {shown}); store masks as 0/255 or 0/1, "
        "or set data.mask_threshold=N to binarize at N"
    )


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Returns an (H, W, C) image area-averaged to size = [height, width], channels kept (cv2 drops a single one)."""
    import cv2

    height, width = int(size[0]), int(size[1])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width, -1)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Returns image (area-averaged) and mask (nearest, stays binary) resized to size = [height, width]."""
    if size is None or tuple(size) == mask.shape:
        return image, mask
    import cv2

    height, width = int(size[0]), int(size[1])
    return resize_image(image, size), cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


def load_pairs(
    image_paths: Sequence[Path],
    mask_paths: Sequence[Path],
    channels: int | None,
    normalize: str,
    mask_threshold: int | None,
    resize: Sequence[int] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Returns (images, masks, pixel digests of the images as read), validated and optionally resized."""
    images, masks = [], []
    for image_path, mask_path in zip(image_paths, mask_paths):
        raw = read_image(image_path)
        mask = to_binary_mask(read_image(mask_path), mask_path, mask_threshold)
        if raw.shape[:2] != mask.shape:
            raise DataError(
                f"{image_path}: image is {raw.shape[1]}x{raw.shape[0]} but its mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]}; image and mask must have the same size"
            )
        images.append(raw)
        masks.append(mask)
    if channels is None:  # the data decides: RGB if any image has color
        channels = 3 if any(img.ndim == 3 for img in images) else 1
    pairs = [resize_pair(to_channels(to_unit_float(img, normalize), channels), m, resize) for img, m in zip(images, masks)]
    return [p[0] for p in pairs], [p[1] for p in pairs], [pixel_digest(img) for img in images]


def list_images(directory: Path, what: str) -> dict[str, Path]:
    """Returns {stem: path} of the image files in a directory."""
    if not directory.is_dir():
        raise DataError(f"{directory}: {what} directory does not exist; check data.{what}")
    found = {p.stem: p for p in sorted(directory.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not found:
        raise DataError(f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)}) in the {what} directory")
    return found


def natural_key(stem: str) -> tuple:
    """Sort key that puts 2 before 10, so slice order follows the numbering."""
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def match_by_stem(images: dict[str, Path], masks: dict[str, Path]) -> list[str]:
    """Returns the shared stems in slice order; raises DataError listing unmatched files."""
    only_images = sorted(set(images) - set(masks), key=natural_key)
    only_masks = sorted(set(masks) - set(images), key=natural_key)
    if only_images or only_masks:
        parts = []
        if only_images:
            parts.append(f"images without a mask: {', '.join(images[s].name for s in only_images[:10])}")
        if only_masks:
            parts.append(f"masks without an image: {', '.join(masks[s].name for s in only_masks[:10])}")
        raise DataError("; ".join(parts) + " - every image needs a mask with the same file stem")
    return sorted(images, key=natural_key)


def load_folder(
    images: str,
    masks: str,
    channels: int | None = None,
    normalize: str = "dtype",
    foreground: int = 1,
    mask_threshold: int | None = None,
    resize: Sequence[int] | None = None,
    name: str = "folder",
) -> SegmentationSet:
    """Returns the image/mask pairs of two directories, matched by file stem."""
    image_files = list_images(Path(images), "images")
    mask_files = list_images(Path(masks), "masks")
    stems = match_by_stem(image_files, mask_files)
    imgs, msks, digests = load_pairs(
        [image_files[s] for s in stems], [mask_files[s] for s in stems], channels, normalize, mask_threshold, resize
    )
    return SegmentationSet(imgs, msks, stems, foreground, name, digests)


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
) -> SegmentationSet:
    """Returns the 30 labeled ISBI 2012 training slices (train/image, train/label)."""
    base = Path(root) if root else default_isbi_root()
    if not base.is_dir():
        raise DataError(f"{base}: ISBI 2012 data not found; set data.root to the folder holding train/ and test/")
    if verify:
        verify_manifest(base)
    return load_folder(str(base / "train" / "image"), str(base / "train" / "label"), channels, normalize,
                       foreground, mask_threshold, resize, name)


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
) -> SegmentationSet:
    """Returns EM-like Voronoi cells: 1-px dark membranes (mask 0) between bright cells (mask 1)."""
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
    return SegmentationSet(images, masks, [f"synthetic_{i}" for i in range(count)], foreground, name, digests)


def resolve_indices(positions: Sequence[int], count: int, key: str) -> list[int]:
    """Returns the positions made non-negative and sorted; raises DataError if any is out of range or repeated."""
    resolved = [i + count if i < 0 else i for i in positions]
    if any(not 0 <= r < count for r in resolved) or len(set(resolved)) != len(resolved):
        raise DataError(f"{key}={list(positions)} does not fit a data set of {count} images "
                        f"(valid positions 0..{count - 1} or -{count}..-1, each once)")
    return sorted(resolved)


ROLES = ("train", "select", "report")


def split(data: SegmentationSet, select: Sequence[int], report: Sequence[int]) -> dict[str, SegmentationSet]:
    """Returns {"train", "select", "report": SegmentationSet}: the selection and report slices as named
    (split.select, split.report), training every other slice. The three never share a slice."""
    count = len(data.images)
    chosen = {"select": resolve_indices(select, count, "split.select"),
              "report": resolve_indices(report, count, "split.report")}
    shared = sorted(set(chosen["select"]) & set(chosen["report"]))
    if shared:
        raise DataError(f"split.select and split.report share slices {[data.names[i] for i in shared]}; "
                        "a slice that chose the checkpoint cannot report its score - make them disjoint")
    held_out = set(chosen["select"]) | set(chosen["report"])
    train = [i for i in range(count) if i not in held_out]
    if not train:
        raise DataError(f"split.select={list(select)} and split.report={list(report)} hold out all {count} images; "
                        "leave at least one for training")
    return {role: data.subset(indices) for role, indices in (("train", train), *chosen.items())}


SPLIT_KEYS = ("folds", "fold")  # keys of the data group that choose held-out slices, not how to read them


def load(data_cfg, at_labels: bool = False) -> SegmentationSet:
    """Returns the data set a data group node describes (its loader instantiated without the split keys);
    with `at_labels`, data.resize off: the slices as their labels are drawn, the resolution every
    reported score is taken at."""
    from omegaconf import OmegaConf

    from segexp.config import instantiate

    node = OmegaConf.masked_copy(data_cfg, [k for k in data_cfg if k not in SPLIT_KEYS])
    if at_labels:
        node.resize = None
    return instantiate(node, _convert_="all")


def fold_blocks(count: int, folds: int) -> list[list[int]]:
    """Returns `folds` contiguous blocks of positions 0..count-1, sizes differing by at most one."""
    if not 3 <= folds <= count:
        raise DataError(f"data.folds={folds} does not fit a data set of {count} images; use 3..{count} "
                        "(one block reports, the one before it selects, the rest train)")
    return [block.tolist() for block in np.array_split(np.arange(count), folds)]


def held_out(select: Sequence[int], report: Sequence[int], count: int, folds: int | None = None,
             fold: int | None = None) -> tuple[list[int], list[int]]:
    """Returns the (selection, report) positions: split.select and split.report as given or, with
    data.folds=K, fold `fold`'s contiguous block as report and the block before it (cyclically) as
    selection - so fold K-1 of K=6 on 30 slices is the holdout split (select 20-24, report 25-29).
    An empty split.select still selects nothing (trainer.checkpoint=last)."""
    if folds is None:
        return list(select), list(report)
    blocks = fold_blocks(count, folds)
    return (blocks[fold - 1] if len(select) else []), blocks[fold]


def split_record(parts: dict[str, SegmentationSet]) -> dict:
    """Returns what a run folder's split.json holds: per role, each slice's name and pixel digest."""
    return {"data": parts["train"].name,
            "roles": {role: [{"name": name, "digest": digest}
                             for name, digest in zip(part.names, part.digests or [None] * len(part.names))]
                      for role, part in parts.items()}}


def roles_of(record: dict, digests: Sequence[str]) -> list[str | None]:
    """Returns, for each pixel digest, the role ("train", "select", "report") the recorded run gave that
    slice, or None for a slice the run never saw."""
    role_of = {entry["digest"]: role for role, entries in record["roles"].items() for entry in entries}
    return [role_of.get(digest) for digest in digests]


def check_crop_fits(data: SegmentationSet, crop_size: int) -> None:
    """Raises DataError naming the first training image smaller than the crop."""
    for name, image in zip(data.names, data.images):
        if min(image.shape[:2]) < crop_size:
            raise DataError(
                f"{name}: image is {image.shape[1]}x{image.shape[0]}, smaller than trainer.crop_size="
                f"{crop_size}; lower trainer.crop_size to at most {min(image.shape[:2])}"
            )
