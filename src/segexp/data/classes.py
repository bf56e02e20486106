"""The classes a data set declares (`data.classes`, `data.ignore`) and how its mask files encode them
(numpy only, no TensorFlow); the Classes record itself lives in sets.py, beside the data set that carries it.

Three encodings, one in-memory form (uint8 class indices, IGNORE where a pixel is unlabelled):
- binary (two classes named, no values): masks 0/1 or 0/255 as always, or data.mask_threshold;
- index masks (8 or 16 bit, or a PNG palette image read as its indices): value i is the i-th class,
  or the value a class gives (`{name: nucleus, value: 2}`);
- palette masks (RGB): each class gives its colour (`{name: road, value: [128, 64, 128]}`).
A value or colour no class declares stops the run with the file and the values found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from segexp.data.sets import BINARY, IGNORE, MAX_CLASSES, Classes, Value
from segexp.errors import ConfigError, DataError


def _value(raw: Any, what: str) -> Value:
    if isinstance(raw, bool) or raw is None:
        raise ConfigError(f"{what}: {raw!r} is not a mask value; give an integer (index masks) or [r, g, b]")
    if isinstance(raw, int):
        if raw < 0:
            raise ConfigError(f"{what}: {raw} is negative; mask values are 0 or more")
        return raw
    items = list(raw) if not isinstance(raw, (str, bytes)) and hasattr(raw, "__iter__") else None
    if items is None or len(items) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in items):
        raise ConfigError(f"{what}: {raw!r} is not a mask value; give an integer (index masks) or [r, g, b] in 0..255")
    return tuple(int(c) for c in items)


def parse_classes(classes: Sequence[Any] | None, ignore: Any = None) -> Classes:
    """Returns the Classes of a data node's `classes` (names, or {name, value} entries) and `ignore`;
    ConfigError in one line for anything that cannot describe masks."""
    if classes is None:
        names, values = BINARY.names, None
    else:
        entries = list(classes)
        named = [isinstance(e, str) for e in entries]
        if all(named):
            names, values = tuple(entries), None
        elif not any(named) and all(hasattr(e, "get") and e.get("name") is not None for e in entries):
            names = tuple(str(e["name"]) for e in entries)
            values = tuple(_value(e.get("value"), f"data.classes[{i}].value") for i, e in enumerate(entries))
            kinds = {isinstance(v, tuple) for v in values}
            if len(kinds) > 1:
                raise ConfigError("data.classes: give every class an index value or every class an [r, g, b] colour, "
                                  "not both")
            if len(set(values)) != len(values):
                raise ConfigError(f"data.classes: two classes share a mask value ({list(values)})")
        else:
            raise ConfigError("data.classes: list class names ([background, nucleus, ...]) or give every class "
                              "its mask value ({name: nucleus, value: 2} or {name: road, value: [128, 64, 128]})")
    if len(names) < 2 or len(names) > MAX_CLASSES:
        raise ConfigError(f"data.classes: {len(names)} classes given; list 2 to {MAX_CLASSES} class names")
    if len(set(names)) != len(names) or not all(n and n.replace("_", "").replace("-", "").isalnum() for n in names):
        raise ConfigError(f"data.classes={list(names)}: names must be distinct words (letters, digits, _ or -), "
                          "as they name MLflow metrics")
    spec_ignore = _value(ignore, "data.ignore") if ignore is not None else None
    palette = values is not None and isinstance(values[0], tuple)
    if spec_ignore is not None and isinstance(spec_ignore, tuple) != palette:
        raise ConfigError(f"data.ignore={ignore}: give an [r, g, b] colour for palette masks and an integer for "
                          "index or binary masks")
    if spec_ignore is not None:
        declared = values if values is not None else tuple(range(len(names)))
        if spec_ignore in declared:
            raise ConfigError(f"data.ignore={ignore}: also marks a class; pick a value no class uses (e.g. 255)")
    return Classes(names, values, spec_ignore)


def _shown(values: np.ndarray) -> str:
    items = [str(tuple(int(c) for c in v)) if np.ndim(v) else str(int(v)) for v in values[:8]]
    return ", ".join(items) + (", ..." if len(values) > 8 else "")


def _binary(array: np.ndarray, path: Path, threshold: int | None, ignored: np.ndarray) -> np.ndarray:
    if threshold is not None:
        return (array > threshold).astype(np.uint8)
    values = set(np.unique(array[~ignored]).tolist())
    if values <= {0, 1}:
        return array.astype(np.uint8)
    if values <= {0, 255}:
        return (array == 255).astype(np.uint8)
    raise DataError(f"{path}: mask is not binary (values {_shown(np.array(sorted(values)))}); store masks as 0/255 "
                    "or 0/1, set data.mask_threshold=N to binarize at N, or list more data.classes")


def _colour_keys(array: np.ndarray) -> np.ndarray:
    rgb = array[..., :3].astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def reads_indices(classes: Classes) -> bool:
    """True when a palette ("P") mask file is read as its indices: index-valued classes beyond the binary
    default; binary masks are read by colour, as before classes existed."""
    return not classes.palette and not (classes.binary and classes.values is None)


def decode_mask(array: np.ndarray, path: Path, classes: Classes, threshold: int | None = None) -> np.ndarray:
    """Returns uint8 (H, W) class indices (IGNORE where unlabelled) of a mask file's pixels; DataError naming
    the file and the values found when a value or colour is not declared."""
    if classes.palette:
        if array.ndim != 3:
            raise DataError(f"{path}: mask is single-channel, but data.classes gives [r, g, b] colours; store "
                            "RGB masks or give index values")
        keys, palette = _colour_keys(array), [(r << 16) | (g << 8) | b for r, g, b in classes.values]
        ignore_key = None if classes.ignore is None else _colour_keys(np.array([classes.ignore]))[0]
    elif classes.binary and classes.values is None:  # as before classes existed: the brightest channel
        array = array[..., :3].max(axis=-1) if array.ndim == 3 else array
        keys, palette, ignore_key = array.astype(np.int64), None, classes.ignore
    else:
        if array.ndim == 3:
            if not (array[..., :3] == array[..., :1]).all():
                raise DataError(f"{path}: mask is in colour, but data.classes gives no colours; declare each class's "
                                "[r, g, b] in data.classes (palette masks) or store index masks")
            array = array[..., 0]
        keys, palette, ignore_key = array.astype(np.int64), None, classes.ignore
    ignored = keys == ignore_key if ignore_key is not None else np.zeros(keys.shape, bool)
    if classes.binary and classes.values is None:
        labels = _binary(array, path, threshold, ignored)
    else:
        if threshold is not None:
            raise DataError(f"{path}: data.mask_threshold binarizes masks, but data.classes lists {classes.count} "
                            "classes; leave data.mask_threshold=null")
        palette = palette if palette is not None else list(classes.values or range(classes.count))
        lookup = {value: index for index, value in enumerate(palette)}
        found = np.unique(keys[~ignored])
        unknown = [int(v) for v in found if int(v) not in lookup]
        if unknown:
            shown = (_shown(np.array([((v >> 16) & 255, (v >> 8) & 255, v & 255) for v in unknown]))
                     if classes.palette else _shown(np.array(unknown)))
            raise DataError(f"{path}: mask has {'colours' if classes.palette else 'values'} {shown} that no class "
                            f"declares (data.classes={list(classes.names)}"
                            f"{'' if classes.ignore is None else f', data.ignore={classes.ignore}'}); "
                            "declare them or fix the mask")
        table = np.zeros(int(found.max()) + 1 if found.size else 1, np.uint8)
        for value in found:
            table[int(value)] = lookup[int(value)]
        labels = table[np.where(ignored, 0, keys)]
    labels = labels.astype(np.uint8)
    labels[ignored] = IGNORE
    return labels


def check_instance_ids(dtype: np.dtype, where: str) -> None:
    """Raises DataError unless instance labels are stored as integers (ids up to 2^32 and beyond, never floats)."""
    if not np.issubdtype(dtype, np.integer):
        raise DataError(f"{where}: data.labels=instances needs integer object ids, but the labels are {dtype}; store "
                        "them as integers (e.g. uint32, uint64) or set data.labels=mask for a mask of classes")


def decode_instances(ids: np.ndarray, where: str, ignore: int | None = None) -> np.ndarray:
    """Returns the uint8 (H, W) boundary mask of one slice of instance ids: 0 (membrane) where an id is 0 and on
    both pixels of every 4-neighbour pair whose ids differ, 1 inside objects, IGNORE where the id is `ignore`
    (data.ignore); a pair with an unlabelled pixel draws no boundary. DataError for negative ids."""
    check_instance_ids(ids.dtype, where)
    if np.issubdtype(ids.dtype, np.signedinteger) and ids.min(initial=0) < 0:
        raise DataError(f"{where}: instance ids are negative ({int(ids.min())}); ids are 0 (boundary, background) "
                        "or more - mark unlabelled pixels with an id and set data.ignore to it")
    unlabelled = ids == ignore if ignore is not None else np.zeros(ids.shape, bool)
    boundary = ids == 0
    for axis in (0, 1):
        ahead = [slice(None)] * 2
        behind = [slice(None)] * 2
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        differ = (ids[tuple(ahead)] != ids[tuple(behind)]) & ~unlabelled[tuple(ahead)] & ~unlabelled[tuple(behind)]
        boundary[tuple(ahead)] |= differ
        boundary[tuple(behind)] |= differ
    mask = (~boundary).astype(np.uint8)
    mask[unlabelled] = IGNORE
    return mask


def class_frequencies(masks: Sequence[np.ndarray], count: int) -> np.ndarray:
    """Returns the pixel count of each class over the masks (ignored pixels left out)."""
    total = np.zeros(count, np.int64)
    for mask in masks:
        total += np.bincount(mask[mask != IGNORE].ravel(), minlength=count)[:count]
    return total


def balanced_weights(masks: Sequence[np.ndarray], count: int) -> list[float]:
    """Returns per-class loss weights n / (count * n_c) (scikit-learn's `balanced`): a class of a tenth of
    the pixels weighs ten times one of all of them. A class absent from the masks gets weight 1."""
    frequencies = class_frequencies(masks, count)
    n = frequencies.sum()
    return [float(n / (count * f)) if f else 1.0 for f in frequencies]
