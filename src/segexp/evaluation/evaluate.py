"""`segexp evaluate`: scores a checkpoint on slices it never saw (ISBI V_rand/V_info and pixel scores).

Which slices: by default the training run's report slices (its split.json names them by pixel
digest, so they are found in any copy of the data), or, on other data, every slice the checkpoint
never trained or was selected on. Slices it did see are refused unless `allow_seen=true`, and
their scores are then logged under `eval_seen_*`, never beside the clean `eval_*` ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from omegaconf import DictConfig

from segexp.config.instantiate import instantiate
from segexp.data.classes import parse_classes
from segexp.data.datasets import load
from segexp.data.images import to_channels
from segexp.data.sets import Classes, SegmentationSet
from segexp.data.splits import resolve_indices, roles_of
from segexp.errors import ConfigError
from segexp.evaluation import stage as stages
from segexp.evaluation.metrics import class_scores, confusion_matrix, evaluate_slices
from segexp.evaluation.predictor import load_source
from segexp.evaluation.visualize import confusion_figure, prediction_panel, write_png
from segexp.reports import markdown_table
from segexp.rundir import ModelSource, RunDir
from segexp.tracking.references import resolve_model_source
from segexp.tracking.tags import CHECKPOINT

# how the scored slices relate to the checkpoint -> the prefix of their MLflow keys
KEY_PREFIX = {"report": "eval_", "unseen": "eval_", "seen": "eval_seen_", "unknown": "eval_unverified_"}


def metrics_table(metrics: dict[str, float]) -> str:
    """Returns a two-column markdown table of the metrics."""
    return markdown_table(["metric", "value"], [(name, f"{value:.4f}") for name, value in metrics.items()])


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


def run_stage(node: DictConfig | None, source: ModelSource, predictor, channels: int, where: str) -> stages.Stage:
    """Returns the segmentation stage for a checkpoint: `node` (postprocess=...) or its run's own, with the
    parameters the run chose (for an ensemble: that all its members chose), or chosen again on the selection
    slices (for an ensemble: those no member trained on), predicted by `predictor`, when tune=true or no
    choice of that method was recorded."""
    run = source.members[0][1]
    saved = run.saved_config() if run else None
    node = stages.of_run(node, saved)
    # a run's recorded choice was made on its chosen checkpoint's maps; another of its checkpoints chooses anew
    choices = [stages.from_record(r.read_postprocess()) if r and is_chosen(c, r) else None for c, r in source.members]
    recalled = choices[0] if all(c == choices[0] for c in choices) else None
    record = source.split_record()

    def selection():
        chosen = role_set(run, "select", record)
        return (list(chosen.names), [predictor(to_channels(image, channels)) for image in chosen.images],
                list(chosen.masks))
    has_selection = saved is not None and record is not None
    return stages.resolve(node, recalled, selection if has_selection else None, stages.objective_of_run(saved), where)


def is_chosen(checkpoint: Path, run: RunDir | None) -> bool:
    """True when `checkpoint` is its run's chosen one (model.keras), not e.g. the last epoch's last.keras."""
    return run is not None and checkpoint.resolve() == run.checkpoint.resolve()


def checkpoint_suffix(source: ModelSource) -> str:
    """Returns "" for a run's chosen checkpoint (or an ensemble, or a file outside a run), else "_<file stem>":
    another checkpoint of the same run (`ckpt=RUN/last.keras`) keeps its scores beside the chosen one's."""
    checkpoint, run = source.members[0]
    return "" if source.is_ensemble or run is None or is_chosen(checkpoint, run) else f"_{checkpoint.stem}"


def check_classes(data: SegmentationSet, run: RunDir | None, ckpt: str) -> None:
    """Raises ConfigError when the data's classes are not those the checkpoint's run trained on: the same names
    in the same order for K classes; any two classes for a two-class run (ISBI's membrane/cell scores binary
    folder data as before)."""
    saved = run.saved_config() if run else None
    if saved is None or "data" not in saved:
        return
    trained = parse_classes(saved.data.get("classes"), saved.data.get("ignore"))
    if trained.binary and data.classes.binary:  # one probability of class 1 either way, whatever the names
        return
    if trained.names != data.classes.names:
        raise ConfigError(f"ckpt={ckpt}: trained on classes {list(trained.names)}, but data '{data.name}' declares "
                          f"{list(data.classes.names)}; set data.classes to the same list, in the same order")


def check_outputs(outputs: int, classes: Classes, ckpt: str) -> None:
    """Raises ConfigError when the model does not have one output per class of the data (one for binary)."""
    if outputs != classes.outputs:
        raise ConfigError(f"ckpt={ckpt}: the model predicts {outputs} output(s), but the data's "
                          f"{classes.count} classes {list(classes.names)} need {classes.outputs}; "
                          "evaluate it on data with the classes it was trained on")


def scores_of(probs, truths, data: SegmentationSet, threshold: float) -> tuple[dict[str, float], np.ndarray]:
    """Returns (scores, confusion matrix): for a binary boundary map the ISBI and pixel scores (at `threshold`),
    per-class Dice and IoU for every data set, the mean over classes as dice/iou for K classes."""
    classes = data.classes
    matrix = confusion_matrix(probs, truths, classes.count, threshold)
    per_class = class_scores(matrix, classes.names, data.foreground if classes.binary else None)
    if classes.topology:
        return {**evaluate_slices(probs, truths, threshold, data.foreground),
                **{k: v for k, v in per_class.items() if k.startswith(("dice_", "iou_"))}}, matrix
    return {**per_class, "pixel_error": 1.0 - per_class["accuracy"]}, matrix


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


def evaluate(cfg: DictConfig, output_dir: Path, source: ModelSource | None = None) -> dict[str, float]:
    """Predicts the chosen slices, scores them, writes metrics.json; returns the metrics. `source` is what
    cfg.ckpt names, if the caller resolved it already."""
    source = source or resolve_model_source(cfg.ckpt, cfg.tracking.uri)
    checkpoint, run = source.members[0]  # an ensemble's members share their data
    data = data_to_score(cfg, run)
    indices, status = choose_slices(data, source.split_record(), cfg.slices, cfg.allow_seen, cfg.ckpt,
                                    same_data=cfg.data is None)
    check_classes(data, run, cfg.ckpt)
    stages.check(cfg.postprocess)
    tracker = instantiate(cfg.tracking)
    channels, outputs, predictor = load_source(source, cfg.inference)
    check_outputs(outputs, data.classes, cfg.ckpt)
    stage = run_stage(cfg.postprocess, source, predictor, channels, "evaluate")
    names = [data.names[i] for i in indices]
    print(f"[segexp] scoring {len(names)} slices of '{data.name}' ({status}): {','.join(names)}"
          + (f"; postprocess: {stage.describe()}" if stage.active else ""), flush=True)
    images = [to_channels(data.images[i], channels) for i in indices]
    truths = [data.masks[i] for i in indices]
    probs = [predictor(image) for image in images]
    scored, matrix = scores_of(probs, truths, data, cfg.inference.threshold)
    metrics, labels = stages.scores(stage, probs, truths, scored)

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(
        {**metrics, "slices": names, "slices_status": status, "postprocess": stage.record(),
         "classes": list(data.classes.names), "confusion": matrix.tolist(),
         "checkpoints": [str(c) for c, _ in source.members]}, indent=2))
    # logged into the run that trained the checkpoint (for another of its checkpoints too, under its own keys and
    # without touching the run's checkpoint tag), or the sweep whose jobs form the ensemble
    other = checkpoint_suffix(source)
    source_run = (source.parent_run_id if source.is_ensemble else
                  tracker.run_for_checkpoint(run.checkpoint if other else checkpoint))
    tags = {f"evaluated_checkpoint{other}" if other else CHECKPOINT: ",".join(str(c) for c, _ in source.members),
            "evaluated_slices": ",".join(names),
            "evaluated_slices_status": status, **({"ensemble_size": str(len(source.members))}
                                                  if source.is_ensemble else {}),
            **({"evaluated_postprocess": stage.describe()} if stage.active else {})}
    prefix = ("ensemble_" if source.is_ensemble else "") + KEY_PREFIX[status]
    suffix = ("_tta" if cfg.inference.tta else "") + (f"_{stage.method}" if stage.active else "") + other
    with tracker.run("evaluate", tags, run_id=source_run):
        tracker.log_metrics({f"{prefix}{k}{suffix}": v for k, v in metrics.items()})
        confusion = confusion_figure(matrix, data.classes.names)
        tracker.log_image_file(confusion, f"{prefix.rstrip('_')}{suffix}/confusion.png")
        write_png(output_dir / "confusion.png", confusion)
        for i, (name, image, truth, prob) in enumerate(list(zip(names, images, truths, probs))[: cfg.log_images]):
            panel = prediction_panel(image, truth, prob, data.classes, labels[i] if labels else None)
            tracker.log_image(panel, f"{prefix.rstrip('_')}{suffix}/{name}", 0)
            write_png(output_dir / "panels" / f"{name}.png", panel)
    print(metrics_table(metrics))
    print(f"[segexp] {len(probs)} slices scored; metrics in {output_dir / 'metrics.json'}"
          + (f"; logged to run {source_run}" if source_run else ""), flush=True)
    return metrics
