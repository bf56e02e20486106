"""Predicting images larger than memory: the overlap tiles of `tiling.predict_tiled`, read from a lazy array
(a Zarr or HDF5 chunk, a memory-mapped TIFF page) as they are needed, blended with the same Gaussian window and
the same float64 sums, and handed out region by region as soon as no later tile touches it; plus the Zarr
output they are written to and a progress bar that a log file can read.

Memory: tiles are taken a row band at a time (the tiles that share a top edge), left to right in groups of
`batch_size`. A group holds its own tiles' sums (tile height x the group's width), the columns it shares with
the next group (tile height x overlap) and, for the whole width, the rows the band shares with the next band
(overlap x image width). So the sums grow with the tile, the batch and the image's width times the overlap, not
with the image's area (bench/bigimage.py measures a whole `segexp predict` at two sizes).

The sums are added in the order predict_tiled adds them (the tiles row by row), so the streamed map is the
in-memory one up to the model's own batch-to-batch noise.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from segexp.inference.tiling import PredictBatch, gaussian_window, plan_axis, to_probability_maps

# (rows, cols) of the padded image, as slices -> float32 (h, w, C): the model's input there, reflected at the
# image's borders as np.pad(mode="reflect") pads it
ReadPadded = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (top, left, probabilities (h, w) or (h, w, K) float32) in image coordinates: a finished region of the map
WriteRegion = Callable[[int, int, np.ndarray], None]


def padded_index(length: int, pad_before: int, pad_after: int) -> np.ndarray:
    """Returns, for each position of an axis padded by np.pad(mode="reflect"), the image position it shows."""
    return np.pad(np.arange(length), (pad_before, pad_after), mode="reflect")


def read_reflected(read: Callable[[slice, slice], np.ndarray], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Returns the image at the given row and column positions (as padded_index gives them): the bounding box
    of the positions is read once with `read(rows, cols)`, then picked from."""
    top, left = int(rows.min()), int(cols.min())
    box = read(slice(top, int(rows.max()) + 1), slice(left, int(cols.max()) + 1))
    return box[np.ix_(rows - top, cols - left)]


@dataclass
class Sums:
    """Weighted probability sums and weight sums over a rectangle of the padded image."""

    total: np.ndarray  # (h, w) or (h, w, K) float64
    weight: np.ndarray  # (h, w) float64

    @classmethod
    def zeros(cls, height: int, width: int, classes: tuple[int, ...]) -> "Sums":
        return cls(np.zeros((height, width, *classes)), np.zeros((height, width)))

    def part(self, rows: slice, cols: slice) -> "Sums":
        """Returns a view of a rectangle of these sums."""
        return Sums(self.total[rows, cols], self.weight[rows, cols])

    def add(self, rows: slice, cols: slice, other: "Sums") -> None:
        self.total[rows, cols] += other.total
        self.weight[rows, cols] += other.weight

    def clear(self) -> "Sums":
        self.total.fill(0)
        self.weight.fill(0)
        return self

    def blend_into(self, out: np.ndarray) -> np.ndarray:
        """Returns the weighted mean in `out` (float32, the shape of these sums): predict_tiled's blend of the same
        sums, divided in float64 and rounded once."""
        extra = (np.newaxis,) * (self.total.ndim - 2)
        return np.divide(self.total, self.weight[(..., *extra)], out=out, casting="same_kind")


@dataclass
class Buffers:
    """Every array stream_tiled sums into, allocated once per image and reused for every group of tiles: sums of
    many sizes allocated and freed band after band leave the heap fragmented (glibc keeps it: peak memory grew with
    the number of bands before)."""

    group: Sums  # one group of tiles: tile height x the widest group
    shared_cols: Sums  # the columns a group shares with the next: tile height x the column overlap
    shared_rows: Sums  # the rows a band shares with the next: row overlap x the padded width
    next_rows: Sums  # the same, being summed for the next band
    out: np.ndarray  # float32 blend of a finished region


def stream_tiled(predict_batch: PredictBatch, read: Callable[[slice, slice], np.ndarray], height: int, width: int,
                 write: WriteRegion, tile: int, overlap: int, batch_size: int, multiple: int,
                 advance: Callable[[int], Any] = lambda tiles: None) -> None:
    """Predicts an image of height x width, read region by region with `read(rows, cols)` (float32 (h, w, C),
    as predict_tiled takes it), tile by tile as predict_tiled does, and hands each finished region of the blended
    map to `write` (image coordinates; together they cover the image once; the array is reused once `write`
    returns). `advance(n)` after every n tiles."""
    if tile < 1 or batch_size < 1 or multiple < 1:
        raise ValueError("tile, batch_size and multiple must all be >= 1")
    if height == 0 or width == 0:
        raise ValueError(f"cannot predict an empty image of {height}x{width}")
    rows, cols = plan_axis(height, tile, overlap, multiple), plan_axis(width, tile, overlap, multiple)
    row_index = padded_index(height, rows.pad_before, rows.pad_after)
    col_index = padded_index(width, cols.pad_before, cols.pad_after)
    window = gaussian_window(rows.tile, cols.tile)

    def shared(plan) -> int:  # how far consecutive tiles of an axis overlap
        return plan.tile - (plan.starts[1] - plan.starts[0]) if len(plan.starts) > 1 else 0

    group_width = cols.starts[min(batch_size, len(cols.starts)) - 1] + cols.tile
    buffers: Buffers | None = None  # allocated once the first tiles tell the classes

    def emit(sums: Sums, top: int, left: int) -> None:
        """Writes the part of a padded-coordinate region that lies in the image."""
        r0, c0 = max(top, rows.pad_before), max(left, cols.pad_before)
        r1 = min(top + sums.weight.shape[0], rows.pad_before + height)
        c1 = min(left + sums.weight.shape[1], cols.pad_before + width)
        if r1 > r0 and c1 > c0:
            blended = sums.part(slice(r0 - top, r1 - top), slice(c0 - left, c1 - left)).blend_into(
                buffers.out[:r1 - r0, :c1 - c0])
            write(r0 - rows.pad_before, c0 - cols.pad_before, blended)

    carried_rows = 0  # rows of buffers.shared_rows this band shares with the last one
    for band, top in enumerate(rows.starts):
        finished_rows = rows.starts[band + 1] - top if band + 1 < len(rows.starts) else rows.tile
        carried_cols = 0  # columns of buffers.shared_cols this group shares with the last one
        band_rows = row_index[top:top + rows.tile]
        for first in range(0, len(cols.starts), batch_size):
            lefts = cols.starts[first:first + batch_size]
            tiles = np.stack([read_reflected(read, band_rows, col_index[left:left + cols.tile]) for left in lefts])
            probabilities = to_probability_maps(predict_batch(tiles), (len(lefts), rows.tile, cols.tile))
            if buffers is None:
                classes = probabilities.shape[3:]
                buffers = Buffers(Sums.zeros(rows.tile, group_width, classes),
                                  Sums.zeros(rows.tile, shared(cols), classes),
                                  Sums.zeros(shared(rows), len(col_index), classes),
                                  Sums.zeros(shared(rows), len(col_index), classes),
                                  np.zeros((rows.tile, group_width, *classes), np.float32))
            start, end = lefts[0], lefts[-1] + cols.tile
            group = buffers.group.part(slice(None), slice(0, end - start)).clear()
            # what earlier tiles gave these pixels, added first: the order of predict_tiled's sums
            group.add(slice(None), slice(0, carried_cols),
                      buffers.shared_cols.part(slice(None), slice(0, carried_cols)))
            group.add(slice(0, carried_rows), slice(carried_cols, None),
                      buffers.shared_rows.part(slice(0, carried_rows), slice(start + carried_cols, end)))
            extra = (np.newaxis,) * (probabilities.ndim - 3)
            for left, probability in zip(lefts, probabilities):
                region = (slice(None), slice(left - start, left - start + cols.tile))
                group.total[region] += window[(..., *extra)] * probability
                group.weight[region] += window
            last_group = first + batch_size >= len(cols.starts)
            finished_cols = end - start if last_group else cols.starts[first + batch_size] - start
            emit(group.part(slice(0, finished_rows), slice(0, finished_cols)), top, start)
            if finished_rows < rows.tile:  # each column of the next band's shared rows is set by one group
                buffers.next_rows.part(slice(None), slice(start, start + finished_cols)).clear().add(
                    slice(None), slice(None), group.part(slice(finished_rows, None), slice(0, finished_cols)))
            carried_cols = end - start - finished_cols
            buffers.shared_cols.part(slice(None), slice(0, carried_cols)).clear().add(
                slice(None), slice(None), group.part(slice(None), slice(finished_cols, None)))
            advance(len(lefts))
        carried_rows = rows.tile - finished_rows
        buffers.shared_rows, buffers.next_rows = buffers.next_rows, buffers.shared_rows


def tile_count(height: int, width: int, tile: int, overlap: int, multiple: int) -> int:
    """Returns how many tiles stream_tiled predicts for an image of height x width."""
    rows, cols = plan_axis(height, tile, overlap, multiple), plan_axis(width, tile, overlap, multiple)
    return len(rows.starts) * len(cols.starts)


# --- the Zarr output ------------------------------------------------------------------------------------------


def create_zarr_array(group_path: Path, name: str, shape: tuple[int, ...], dtype: str, chunk: int,
                      stack: bool) -> Any:
    """Returns a new Zarr array `name` of the Zarr group at `group_path` (created when missing), chunked by
    chunk_shape."""
    import zarr

    group = zarr.open_group(str(group_path), mode="a")
    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunk_shape(shape, chunk, stack),
                               overwrite=True)


def chunk_shape(shape: tuple[int, ...], chunk: int, stack: bool = True) -> tuple[int, ...]:
    """Returns the chunks of a (z, y, x[, K]) array (`stack`) or a (y, x[, K]) one: one z, chunk x chunk pixels,
    all K."""
    z = (1,) if stack else ()
    y, x, *classes = shape[len(z):]
    return (*z, min(chunk, y), min(chunk, x), *classes)


# --- progress -------------------------------------------------------------------------------------------------


class LogLines:
    """A file for tqdm that writes each update as one line: a log keeps every update, not one line of
    carriage returns."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


# seconds between a log's progress lines: often enough to see a run is alive, rarely enough to keep the log short
LOG_INTERVAL = 30.0


def progress(total: int, desc: str, unit: str, stream: TextIO | None = None):
    """Returns a tqdm bar: updated in place in a terminal, one line per update at most every LOG_INTERVAL
    seconds when the stream (stderr) is not a terminal."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    if stream.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=stream)
    return tqdm(total=total, desc=desc, unit=unit, file=LogLines(stream), mininterval=LOG_INTERVAL,
                maxinterval=LOG_INTERVAL, ascii=True, ncols=100, dynamic_ncols=False)
