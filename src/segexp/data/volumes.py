"""Stacks and volumes on disk: a multi-page TIFF, a dataset in an HDF5 file, or a Zarr (OME-Zarr) array, read
one z slice at a time (a memory-mapped TIFF where its pages allow it, h5py and zarr slicing), so a volume is
never read whole to be checked. z is the slice axis. Every problem is a DataError naming the file (and key) and
the fix, raised before any pixel is read where the shapes and dtypes already tell."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from segexp.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")  # a Zarr v3 or v2 array or group
MAX_CHANNELS = 4  # a trailing axis of up to this many is channels (RGB(A)); more is a fourth spatial axis


@dataclass
class Volume:
    """A (z, y, x) or (z, y, x, channels) array on disk, read a slice at a time."""

    array: Any  # numpy memmap, h5py.Dataset or zarr.Array, indexed lazily
    where: str  # file, or file:key, for messages
    axes: str  # the array's axes in its own order, e.g. "zyx", "zyxc", or OME-Zarr's "tczyx"
    close: Callable[[], None] = lambda: None

    @property
    def size(self) -> tuple[int, int, int]:
        """Returns (z, y, x); z is 1 for a single image (no z axis)."""
        shape = dict(zip(self.axes, self.array.shape))
        return shape.get("z", 1), shape["y"], shape["x"]

    @property
    def is_stack(self) -> bool:
        """True for a volume of z slices, False for a single image (an array without a z axis)."""
        return "z" in self.axes

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def slice(self, z: int) -> np.ndarray:
        """Returns slice z as (y, x), or (y, x, channels) for more than one channel, in native byte order."""
        return self.region(z, slice(None), slice(None))

    def region(self, z: int, rows: slice, cols: slice) -> np.ndarray:
        """Returns rows and cols of slice z as (y, x), or (y, x, channels) for more than one channel, in native
        byte order: only that region is read (a memory map's pages, the HDF5 or Zarr chunks it touches)."""
        where = {"t": 0, "z": z, "y": rows, "x": cols}
        index = tuple(where.get(a, slice(None)) for a in self.axes)
        kept = [a for a in self.axes if a not in "tz"]
        array = np.asarray(self.array[index])
        array = np.transpose(array, [kept.index(a) for a in "yxc" if a in kept])
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        return array.astype(array.dtype.newbyteorder("="), copy=False)

    def __enter__(self) -> "Volume":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_volume_file(path: Path) -> bool:
    """True for what open_volume reads: an HDF5 file, a Zarr directory, or a TIFF of more than one page."""
    if path.is_dir():
        return any((path / marker).exists() for marker in ZARR_MARKERS)
    if path.suffix.lower() in HDF5_SUFFIXES:
        return True
    return path.suffix.lower() in TIFF_SUFFIXES and tiff_pages(path) > 1


def tiff_pages(path: Path) -> int:
    """Returns how many images (pages) a TIFF holds; 0 when it cannot be read as one."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages)
    except (tifffile.TiffFileError, OSError, ValueError):
        return 0


def open_volume(path: str | Path, key: str | None, what: str, labels: bool = False, single: bool = False) -> Volume:
    """Returns the volume the config key `what` (data.images, data.masks, input) names, with `<what>_key` the
    dataset inside an HDF5 file or Zarr group, checked: its axes are (z, y, x), or (z, y, x, channels) unless it
    holds `labels`; with `single`, also one image without z: (y, x), or (y, x, channels<=4). Use it as a context
    manager: an HDF5 file stays open while its slices are read."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: volume does not exist; check {what}")
    suffix = path.suffix.lower()
    if path.is_dir():
        volume = open_zarr(path, key, what, single)
    elif suffix in HDF5_SUFFIXES:
        volume = open_hdf5(path, key, what, single)
    elif suffix in TIFF_SUFFIXES:
        if key is not None:
            raise DataError(f"{path}: a TIFF stack has no datasets inside, but {what}_key={key}; set {what}_key=null")
        volume = open_tiff(path, single)
    else:
        raise DataError(f"{path}: not a volume ({what}); segexp reads a multi-page TIFF ({', '.join(TIFF_SUFFIXES)}), "
                        f"an HDF5 file ({', '.join(HDF5_SUFFIXES)}) or a Zarr directory")
    try:
        check_axes(volume, labels, what, single)
    except DataError:
        volume.close()
        raise
    return volume


def plain_axes(shape: tuple[int, ...], where: str, single: bool = False) -> str:
    """Returns the axes of an array without axis names: (z, y, x), or (z, y, x, channels) for up to 4 channels;
    with `single`, also one image: (y, x), or (y, x, channels) for a 3-D array of up to 4 along its last axis."""
    if single and len(shape) == 2:
        return "yx"
    if single and len(shape) == 3 and shape[-1] <= MAX_CHANNELS:
        return "yxc"
    if len(shape) == 3:
        return "zyx"
    if len(shape) == 4 and shape[-1] <= MAX_CHANNELS:
        return "zyxc"
    raise DataError(f"{where}: array has {len(shape)} dimensions {tuple(shape)}; a volume is (z, y, x) or "
                    f"(z, y, x, channels<={MAX_CHANNELS}) - for single images use data=folder, else save the array so")


def check_axes(volume: Volume, labels: bool, what: str, single: bool = False) -> None:
    """Raises DataError unless the volume has z (or, `single`, may lack it), y, x (t of size 1, channels only for
    images)."""
    shape = dict(zip(volume.axes, volume.array.shape))
    spatial = {"y", "x"} if single else {"z", "y", "x"}
    if not spatial <= set(shape) or shape.get("t", 1) != 1 or set(volume.axes) - set("tczyx"):
        raise DataError(f"{volume.where}: array has axes {volume.axes} and shape {tuple(volume.array.shape)}; "
                        f"{what} must be {'' if single else 'z, '}y, x (and channels), one time point")
    if labels and shape.get("c", 1) != 1:
        raise DataError(f"{volume.where}: {what} has shape {tuple(volume.array.shape)} with "
                        f"{shape['c']} channels; labels are one value per pixel, (z, y, x)")


def open_tiff(path: Path, single: bool = False) -> Volume:
    """Returns a TIFF stack's pages as z: memory-mapped when stored uncompressed and contiguous, else read
    page by page through tifffile's Zarr view (`single`: as plain_axes)."""
    import tifffile

    try:
        array, close = tifffile.memmap(path, mode="r"), (lambda: None)
    except (ValueError, tifffile.TiffFileError):  # compressed or tiled pages: no memory map
        try:
            import zarr

            store = tifffile.imread(path, aszarr=True)
            array, close = zarr.open(store, mode="r"), store.close
        except (tifffile.TiffFileError, OSError, ValueError) as err:
            raise DataError(f"{path}: cannot be read as a TIFF stack ({err}); replace the file") from err
    except OSError as err:
        raise DataError(f"{path}: cannot be read as a TIFF stack ({err}); replace the file") from err
    return Volume(array, str(path), plain_axes(array.shape, str(path), single), close)


def datasets_in_hdf5(handle) -> list[str]:
    import h5py

    names: list[str] = []
    handle.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names


def open_hdf5(path: Path, key: str | None, what: str, single: bool = False) -> Volume:
    """Returns the dataset `key` of an HDF5 file (the file's only dataset when key is None)."""
    import h5py

    option = f"{what}_key"
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: cannot be read as an HDF5 file ({err}); replace the file") from err
    names = datasets_in_hdf5(handle)
    chosen = key if key is not None else (names[0] if len(names) == 1 else None)
    if chosen is None or not isinstance(handle.get(chosen), h5py.Dataset):
        handle.close()
        listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") or "(none)"
        asked = f"has no dataset '{key}'" if key is not None else f"holds {len(names)} datasets"
        raise DataError(f"{path}: {asked} ({option}); its datasets: {listed} - set {option} to one of them")
    dataset = handle[chosen]
    where = f"{path}:{chosen}"
    return Volume(dataset, where, plain_axes(dataset.shape, where, single), handle.close)


def ome_axes(attributes: dict) -> tuple[str | None, str | None]:
    """Returns (full-resolution array path, axes such as "tczyx") of an OME-Zarr multiscale group, or Nones."""
    multiscales = attributes.get("multiscales") or attributes.get("ome", {}).get("multiscales")
    if not multiscales:
        return None, None
    first = multiscales[0]
    axes = first.get("axes")
    names = "".join((a["name"] if isinstance(a, dict) else str(a))[:1].lower() for a in axes) if axes else None
    return first["datasets"][0]["path"], names


def open_zarr(path: Path, key: str | None, what: str, single: bool = False) -> Volume:
    """Returns a Zarr array: the directory's own, the array `key` of its group, or an OME-Zarr group's full
    resolution (its axes from the group's metadata)."""
    import zarr

    option = f"{what}_key"
    try:
        node = zarr.open(str(path), mode="r")
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(f"{path}: a directory but not a Zarr array or group ({err}); a folder of image files is "
                        "data=folder (predict: input=DIR)") from err
    axes = None
    if isinstance(node, zarr.Group):
        arrays = [name for name, member in node.members(max_depth=None) if isinstance(member, zarr.Array)]
        default, axes = ome_axes(dict(node.attrs))
        chosen = key if key is not None else default if default is not None else (arrays[0] if len(arrays) == 1
                                                                                    else None)
        if chosen is None or chosen not in arrays:
            listed = ", ".join(arrays[:10]) + (", ..." if len(arrays) > 10 else "") or "(none)"
            asked = f"has no array '{key}'" if key is not None else f"holds {len(arrays)} arrays"
            raise DataError(f"{path}: {asked} ({option}); its arrays: {listed} - set {option} to one of them")
        if chosen != default:
            axes = None  # OME axes describe the multiscale images, not another array of the group
        node, where = node[chosen], f"{path}:{chosen}"
    elif key is not None:
        raise DataError(f"{path}: is a Zarr array, not a group, but {option}={key}; set {option}=null")
    else:
        where = str(path)
    if axes is not None and len(axes) != node.ndim:
        axes = None
    return Volume(node, where, axes or plain_axes(node.shape, where, single))
