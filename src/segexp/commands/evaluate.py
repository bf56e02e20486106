"""`segexp evaluate`: scores a checkpoint on slices it never saw (ISBI V_rand/V_info and pixel scores).

Which slices: by default the training run's report slices (its split.json names them by pixel
digest, so they are found in any copy of the data), or, on other data, every slice the checkpoint
never trained or was selected on. Slices it did see are refused unless `allow_seen=true`, and
their scores are then logged under `eval_seen_*`, never beside the clean `eval_*` ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from segexp.config.instantiate import instantiate
from segexp.data.images import to_channels
from segexp.evaluation.metrics import segmentation_scores
from segexp.evaluation.scoring import as_maps, scores_of
from segexp.checks import check_checkpoint_classes, check_outputs
from segexp.evaluation.slices import choose_slices, data_to_score
from segexp.evaluation.stage_choice import is_chosen, plan_stage, run_stage
from segexp.evaluation.visualize import confusion_figure, prediction_panel, write_png
from segexp.inference.predictor import load_source, run_target
from segexp.postprocessing import stage as stages
from segexp.reports import markdown_table
from segexp.rundir import ModelSource
from segexp.tracking.references import resolve_model_source
from segexp.tracking.tags import CHECKPOINT

# how the scored slices relate to the checkpoint -> the prefix of their MLflow keys
KEY_PREFIX = {"report": "eval_", "unseen": "eval_", "seen": "eval_seen_", "unknown": "eval_unverified_"}


def metrics_table(metrics: dict[str, float]) -> str:
    """Returns a two-column markdown table of the metrics."""
    return markdown_table(["metric", "value"], [(name, f"{value:.4f}") for name, value in metrics.items()])


def checkpoint_suffix(source: ModelSource) -> str:
    """Returns "" for a run's chosen checkpoint (or an ensemble, or a file outside a run), else "_<file stem>":
    another checkpoint of the same run (`ckpt=RUN/last.keras`) keeps its scores beside the chosen one's."""
    checkpoint, run = source.members[0]
    return "" if source.is_ensemble or run is None or is_chosen(checkpoint, run) else f"_{checkpoint.stem}"


def evaluate(cfg: DictConfig, output_dir: Path, source: ModelSource | None = None) -> dict[str, float]:
    """Predicts the chosen slices, scores them, writes metrics.json; returns the metrics. `source` is what
    cfg.ckpt names, if the caller resolved it already."""
    source = source or resolve_model_source(cfg.ckpt, cfg.tracking.uri)
    checkpoint, run = source.members[0]  # an ensemble's members share their data
    data = data_to_score(cfg, run)
    indices, status = choose_slices(data, source.split_record(), cfg.slices, cfg.allow_seen, cfg.ckpt,
                                    same_data=cfg.data is None)
    check_checkpoint_classes(data, run, cfg.ckpt)
    plan = plan_stage(cfg.postprocess, source, "evaluate", run_target(run))
    tracker = instantiate(cfg.tracking)
    loaded = load_source(source, cfg.inference)
    channels, predictor, target = loaded.channels, loaded.predict, loaded.target
    check_outputs(loaded.outputs, data.classes, cfg.ckpt, target)
    stage = run_stage(plan, predictor, channels)
    names = [data.names[i] for i in indices]
    print(f"[segexp] scoring {len(names)} slices of '{data.name}' ({status}): {','.join(names)}"
          + (f"; postprocess: {stage.describe()}" if stage.active else ""), flush=True)
    images = [to_channels(data.images[i], channels) for i in indices]
    truths = [data.masks[i] for i in indices]
    predictions = [predictor(image) for image in images]
    probs = as_maps(predictions, target)
    scored, matrix = scores_of(probs, truths, data, cfg.inference.threshold)
    metrics, labels = stages.scores(stage, predictions, truths, scored, segmentation_scores)

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
