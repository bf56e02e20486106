"""Image and mask files as arrays: reading, normalizing, channels, binary masks, resizing, pixel digests
(numpy only, no TensorFlow). Every problem with a file is a DataError naming the file and the fix."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from segexp.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
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


def read_image(path: Path, indexed: bool = False) -> np.ndarray:
    """Returns the file's pixels as an array (H, W) or (H, W, C), in the file's own dtype; with `indexed`, a
    palette ("P") image as its indices (an index mask saved with a colour table) rather than its colours."""
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unsupported format {path.suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:  # read whole it would be its first page only, silently
                raise DataError(f"{path}: a stack of {img.n_frames} images where one image per file is read; read it as "
                                "a volume: data=volume data.images=FILE data.masks=FILE (predict: input=FILE)")
            img.load()  # decode now, so a truncated file fails here and not mid-training
            if img.mode == "P" and indexed:
                pass
            elif img.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr"):
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


def raw_pixels(image: np.ndarray, digest: str) -> np.ndarray | None:
    """Returns the pixels a slice had as read - (H, W) or (H, W, 3), uint8 or uint16 - recovered from its
    normalized (H, W, C) float32 image (`to_unit_float` by dtype, then `to_channels`) and proven by its
    `pixel_digest`; None when no such reading gives that digest (percentile normalization, float files)."""
    for dtype in (np.uint8, np.uint16):
        scaled = np.rint(image.astype(np.float64) * np.iinfo(dtype).max).astype(dtype)
        for candidate in (scaled[..., 0], scaled):  # a gray file repeated to C channels, or a colour file as is
            if pixel_digest(candidate) == digest:
                return candidate
    return None


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Returns (H, W, channels): gray is repeated to RGB, RGB is averaged to gray."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return image[..., :3].mean(axis=-1, keepdims=True)
    return np.repeat(image[..., :1], channels, axis=-1)


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Returns an (H, W, C) image area-averaged to size = [height, width], channels kept (cv2 drops a single one)."""
    import cv2

    height, width = int(size[0]), int(size[1])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width, -1)


def resize_labels(labels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Returns (H, W) labels (class indices or int32 object ids) resized to size = [height, width], nearest: every
    value stays one of the labels'."""
    import cv2

    height, width = int(size[0]), int(size[1])
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Returns image (area-averaged) and mask (nearest: class indices stay exact) resized to size = [height, width]."""
    if size is None or tuple(size) == mask.shape:
        return image, mask
    return resize_image(image, size), resize_labels(mask, size)


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


