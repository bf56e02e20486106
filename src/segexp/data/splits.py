"""Which slices train, select (choose checkpoints, thresholds) and report (scored once, chosen on by
nothing): contiguous held-out blocks, folds, and the split record a run keeps (numpy only)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segexp.data.sets import SegmentationSet
from segexp.errors import DataError


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
