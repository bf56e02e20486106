"""Which slices a checkpoint is scored on, and whether it may be: its run's own slices by role (train, select,
report, found by pixel digest in any copy of the data), the slices of other data it never saw, and the checks
that the data's classes are the ones the checkpoint predicts."""

from __future__ import annotations

from typing import Sequence

from omegaconf import DictConfig

from segexp.data.datasets import load
from segexp.data.sets import SegmentationSet
from segexp.data.splits import resolve_indices, roles_of
from segexp.errors import ConfigError
from segexp.rundir import RunDir


def data_to_score(cfg: DictConfig, run: RunDir | None) -> SegmentationSet:
    """Returns the data to score: `data=...` if given, else the data the checkpoint's run trained on, at
    the labels' own resolution (the predictor resizes its input to the run's data.resize itself)."""
    if cfg.data is not None:
        return load(cfg.data)
    saved = run.saved_config() if run else None
    if saved is None or "data" not in saved:
        raise ConfigError(f"ckpt={cfg.ckpt}: no run config beside the checkpoint to take the data from; "
                          "name the data, e.g. data=isbi2012 or data=folder data.images=DIR data.masks=DIR")
    return load(saved.data, at_labels=True)


def report_set(run: RunDir) -> SegmentationSet:
    """Returns the report slices of the run's own data at the labels' resolution, found by pixel digest."""
    return role_set(run, "report")


def role_set(run: RunDir, role: str, record: dict | None = None) -> SegmentationSet:
    """Returns the slices of the run's own data that had `role` (train, select, report) in `record` (default:
    the run's split.json) at the labels' resolution, found by pixel digest."""
    data = load(run.saved_config().data, at_labels=True)
    roles = roles_of(record or run.read_split(), data.digests)
    return data.subset([i for i, r in enumerate(roles) if r == role])


def choose_slices(data: SegmentationSet, record: dict | None, slices: Sequence[int] | None,
                  allow_seen: bool, ckpt: str, same_data: bool = False) -> tuple[list[int], str]:
    """Returns (positions to score, how they relate to the checkpoint: report | unseen | seen | unknown).

    Raises ConfigError for slices the checkpoint trained or was selected on, or whose history is
    unknown (no split record, or slices without pixel digests), unless allow_seen. With `same_data`
    (the data is the run's own), every slice the record names must still be there, pixel for pixel.
    """
    count = len(data.images)
    if record is not None and data.digests is not None and all_digested(record):
        roles = roles_of(record, data.digests)
    else:
        if slices is None or not allow_seen:
            why = ("no split.json beside the checkpoint" if record is None else
                   "the split record or this data has no pixel digests")
            raise ConfigError(f"ckpt={ckpt}: {why}, so which slices it trained on is unknown; pass its run "
                              "directory, or name slices=[...] with allow_seen=true (logged as eval_unverified_*)")
        return resolve_indices(slices, count, "slices"), "unknown"
    if same_data:
        missing = sorted(set(d for d in digests_of(record)) - set(data.digests))
        if missing:
            raise ConfigError(f"ckpt={ckpt}: {len(missing)} slices of the run's split.json are not in data "
                              f"'{data.name}' any more (files changed?); restore the data or name it with data=...")
    if slices is None:
        report = [i for i, role in enumerate(roles) if role == "report"]
        unseen = [i for i, role in enumerate(roles) if role is None]
        if report:
            return report, "report"
        if unseen:
            return unseen, "unseen"
        raise ConfigError(f"ckpt={ckpt}: the checkpoint trained or was selected on every slice of data "
                          f"'{data.name}'; evaluate it on other data, or name slices=[...] with allow_seen=true")
    indices = resolve_indices(slices, count, "slices")
    seen = [f"{data.names[i]} ({roles[i]})" for i in indices if roles[i] in ("train", "select")]
    if seen and not allow_seen:
        raise ConfigError(f"slices={list(slices)}: {', '.join(seen)} trained or selected the checkpoint {ckpt}; "
                          "leave slices=null for its report slices, or set allow_seen=true to score them anyway "
                          "(logged as eval_seen_*)")
    if seen:
        return indices, "seen"
    return indices, "report" if all(roles[i] == "report" for i in indices) else "unseen"


def digests_of(record: dict) -> list:
    return [entry["digest"] for entries in record["roles"].values() for entry in entries]


def all_digested(record: dict) -> bool:
    """True when every slice of the split record has a pixel digest to be recognised by."""
    return all(digest is not None for digest in digests_of(record))
