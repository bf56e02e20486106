"""The composition root: `train(cfg, output_dir)` builds everything from the config and fits.

Order matters for users: every check that can fail on bad input (config values, data
files, split, crop size, tracking store) runs before TensorFlow is imported, so mistakes
cost seconds, not a training run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from segexp.config.instantiate import instantiate
from segexp.checks import check_train, check_training_data
from segexp.data.affinities import target_of
from segexp.data.datasets import default_isbi_root
from segexp.data.images import combined_digest
from segexp.data.splits import split_record
from segexp.errors import TrainingDiverged, TrainingInterrupted
from segexp.rundir import RunDir, SweepJob
from segexp.tracking.provenance import flatten, run_tags
from segexp.tracking.tags import (
    CHECKPOINT,
    DATA_DIGEST,
    OUTPUT_DIR,
    OVERRIDES,
    POSTPROCESS,
    POSTPROCESS_CHOSEN_ON,
    PRECISION,
    PRUNED,
    RESUME_OVERRIDES,
    RESUMED_FROM_EPOCH,
    run_name,
    split_digest_tag,
    split_tag,
)
from segexp.training.build import (
    build_components,
    build_model,
    choose_speed,
    class_weights,
    fit,
    prepare_data,
    training_stream,
)
from segexp.training.modelcard import model_card


def trial_pruning(cfg: DictConfig):
    """Returns the callbacks.TrialPruning of an Optuna sweep's job when cfg.pruner is set, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from segexp.training.pruning import running_study, running_trial

    if cfg.optuna_trial is None or cfg.pruner is None or not HydraConfig.initialized():
        return None
    if HydraConfig.get().mode != RunMode.MULTIRUN:  # a trial's run resumed or reproduced on its own
        return None

    study_name = str(HydraConfig.get().sweeper.get("study_name"))
    study, trial = running_study(study_name), running_trial(study_name, cfg.optuna_trial)
    if study is None or trial is None:  # a launcher that runs jobs in other processes: see optuna_sweeper
        print(f"[segexp] trial {cfg.optuna_trial} runs unpruned: pruning needs the job in the sweeper's process "
              "(the basic launcher)", flush=True)
        return None
    from segexp.training.callbacks import TrialPruning

    study.pruner = instantiate(cfg.pruner)
    return TrialPruning(trial, str(cfg.objective))


def build_callbacks(cfg: DictConfig, select_set, tracker, run: RunDir, extra: Sequence, resume=None) -> tuple[list, Any]:
    """Returns (callbacks for fit, the checkpoint callback): segexp's own, then `extra` (the schedule's and
    the callbacks group's), continuing `resume`'s best score if given."""
    import keras

    from segexp.training.callbacks import Checkpoints, EmaWeights, SliceValidation, TimeBudget, TrackEpochs

    t = cfg.trainer
    monitor = t.monitor if t.checkpoint == "best" else None
    checkpoints = Checkpoints(run, monitor, t.monitor_mode, tracker.run_id,
                              *((resume.best, resume.best_epoch) if resume else ()))
    # order matters: the averaged weights go in before anything scores or saves the model, and selection
    # scores join the logs before checkpoints, trackers and `extra` read them
    callbacks = [EmaWeights(resumed=resume is not None)] if cfg.optimizer.ema is not None else []
    callbacks.append(keras.callbacks.TerminateOnNaN())
    if select_set.images:
        callbacks.append(SliceValidation(select_set.images, select_set.masks, select_set.names, tracker.log_image,
                                         t.preview_slices, t.topology_metrics and select_set.classes.topology,
                                         select_set.foreground, select_set.classes,
                                         target=target_of(cfg.get("target")), objects=select_set.objects))
    callbacks += [checkpoints, TrackEpochs(tracker)]
    if t.max_minutes:
        callbacks.append(TimeBudget(t.max_minutes))
    return callbacks + list(extra), checkpoints


def data_source(data_cfg: DictConfig) -> str:
    """Returns where the data group reads its slices from (a folder), or how it makes them."""
    for key in ("images", "root"):
        if data_cfg.get(key):
            return str(Path(data_cfg[key]).resolve())
    if data_cfg._target_.endswith(".load_isbi2012"):
        return str(default_isbi_root().resolve())
    return f"{data_cfg._target_}(seed={data_cfg.get('seed')})"


def input_example(train_set, size: int = 64):
    """Returns a batch of one real crop (the top-left corner of the first training slice) for the logged model."""
    image = train_set.images[0]
    return np.ascontiguousarray(image[None, :size, :size], np.float32)


def log_aug_preview(cfg: DictConfig, train_set, weights, pipeline, tracker) -> None:
    """Logs the first trainer.aug_preview (augmented crop, mask) pairs of the training stream - the same
    sampler, transforms and seed that fit draws from - as one image, `augmentation_preview.png`."""
    from segexp.samples.augment import CropSampler
    from segexp.evaluation.visualize import pair_grid

    t = cfg.trainer
    sampler = CropSampler(train_set.images, train_set.masks, pipeline, t.crop_size, t.seed, weights)
    tracker.log_image_file(pair_grid([sampler(i) for i in range(t.aug_preview)]), "augmentation_preview.png")


def log_report_slices(tracker, report, probs, labels) -> None:
    """Logs each report slice's image, truth, predicted probability (K classes: truth and prediction in class
    colours) and, after a postprocess stage, its segments (random colours) as PNGs under `report_slices/`, so
    `segexp compare` can show runs side by side, splits and merges included, from the tracking store alone."""
    from segexp.evaluation.metrics import predicted_classes
    from segexp.evaluation.visualize import color_labels, segment_colors, to_rgb8
    from segexp.tracking.tags import REPORT_SLICES

    def gray(picture: np.ndarray) -> np.ndarray:
        return to_rgb8(picture)[..., 0] if picture.ndim == 2 else to_rgb8(picture)

    classes = report.classes
    for i, (name, image, mask, prob) in enumerate(zip(report.names, report.images, report.masks, probs)):
        if classes.topology:
            pictures = [("image", gray(image)), ("truth", gray(mask.astype(np.float32))), ("probability", gray(prob))]
        else:
            colors = classes.colors()
            pictures = [("image", gray(image)), ("truth", color_labels(mask, colors)),
                        ("prediction", color_labels(predicted_classes(prob), colors))]
        pictures += [("segments", segment_colors(labels[i]))] if labels else []
        for kind, picture in pictures:
            tracker.log_image_file(picture, f"{REPORT_SLICES}/{name}.{kind}.png")


def log_confusion(tracker, confusion: dict[str, np.ndarray], classes) -> None:
    """Logs each role's confusion matrix (rows: true class, columns: predicted) as a picture and a CSV table,
    `confusion/<role>.png` and `confusion/<role>.csv`."""
    from segexp.evaluation.visualize import confusion_figure, confusion_table

    for role, matrix in confusion.items():
        tracker.log_image_file(confusion_figure(matrix, classes.names), f"confusion/{role}.png")
        tracker.log_text(confusion_table(matrix, classes.names), f"confusion/{role}.csv")


def train(cfg: DictConfig, output_dir: Path, overrides: Sequence[str] = (), resume=None,
          sweep: SweepJob | None = None, extra_tags: dict[str, str] | None = None) -> dict[str, float]:
    """Trains the configured model; returns the chosen checkpoint's `select_*` and `report_*` scores.

    This is the composition root: every component of the config (data, model, loss, optimizer and
    schedule, augmentation pipeline, tracker, callbacks) is instantiated here, once, and handed on
    built. With `resume` (a resume.ResumeState), continues that run's last checkpoint (weights,
    optimizer state, epoch count, best score, sample sequence) in the same MLflow run; with `sweep`,
    the run is a child of the sweep's parent run.
    """
    check_train(cfg)
    parts, weights = prepare_data(cfg)
    train_set = parts["train"]
    check_training_data(cfg, train_set)
    classes, loss_weights = train_set.classes, class_weights(cfg.loss.fn.class_weights, train_set)
    weights_used = {"loss.class_weights_used": ",".join(f"{w:.4g}" for w in loss_weights)} if loss_weights else {}
    from segexp.tracking.trackers import NullTracker
    from segexp.training.runtime import is_chief

    # fails fast on an unwritable store or unreachable server; of several workers only the chief tracks
    tracker = instantiate(cfg.tracking) if is_chief(cfg.trainer.strategy) else NullTracker()
    run = RunDir(Path(output_dir))
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_split(split_record(parts))
    run.write_config(cfg)

    from segexp.native_logs import import_tensorflow

    import_tensorflow()  # only now, with the data and store checked; its C++ start-up notices hidden
    import keras

    from segexp.evaluation.checkpoint import score_checkpoint
    from segexp.models.loading import load_model
    from segexp.training import runtime
    from segexp.training.callbacks import EmaWeights, save_atomically

    # first TensorFlow call: a multi-worker strategy must exist before any other op runs
    strategy = runtime.distribution_strategy(cfg.trainer.strategy)
    keras.backend.clear_session()  # jobs of an in-process multirun must not share graph state
    first_epoch = resume.epochs_done if resume else 0
    speed = choose_speed(cfg, strategy, train_set.channels, train_set.foreground, weights is not None, classes)
    policy = runtime.configure(cfg.trainer.seed + first_epoch, cfg.trainer.deterministic, speed.precision)
    built = build_components(cfg)
    pruning = trial_pruning(cfg)  # before the run starts
    name = cfg.run_name or run_name(overrides, sweep.swept_keys if sweep else ())
    started = time.monotonic()
    tags = {**run_tags(list(overrides)), **(extra_tags or {})}
    if resume:  # the run keeps its original overrides tag; today's go beside it
        tags = {RESUMED_FROM_EPOCH: str(first_epoch), RESUME_OVERRIDES: tags.pop(OVERRIDES), **tags}
    with runtime.sigterm_as_interrupt(), runtime.float32_afterwards(), \
            tracker.run(name, tags, run_id=resume.run_id if resume else None,
                        parent_run_id=sweep.parent_run_id if sweep else None, spool_dir=run.path):
        if not resume:
            tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
            tracker.log_params(weights_used)  # `balanced` as the numbers it became
            tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
            tracker.log_artifacts(run.hydra_dir, "config/hydra")
            tracker.log_text(run.split_file.read_text(), f"config/{run.split_file.name}")
            tracker.log_dataset(train_set.name, data_source(cfg.data), {
                role: (combined_digest(part.digests), part.names) for role, part in parts.items()})
        with strategy.scope():  # variables are created once per replica
            model = (load_model(run.last_checkpoint) if resume  # weights and optimizer state
                     else build_model(cfg, train_set.channels, train_set.foreground, built.schedule.learning_rate,
                                      speed.jit_compile, classes, loss_weights))
        setup = {**speed.tags(), PRECISION: policy, "device": runtime.device_description(),
                 "replicas": str(strategy.num_replicas_in_sync), OUTPUT_DIR: str(run.path.resolve()),
                 **split_tags(parts)}
        tracker.set_tags(setup)
        callbacks, checkpoints = build_callbacks(cfg, parts["select"], tracker, run,
                                                 [*built.callbacks, *([pruning] if pruning else [])], resume)
        first_sample = first_epoch * cfg.trainer.steps_per_epoch * cfg.trainer.batch_size
        stream = training_stream(cfg, train_set, weights, built.pipeline, first_sample=first_sample)
        if cfg.trainer.aug_preview and not resume:
            log_aug_preview(cfg, train_set, weights, built.pipeline, tracker)
        # killed after its last epoch but before it was scored: nothing is left to train, only to score
        trained_already = first_epoch >= cfg.trainer.epochs
        if trained_already:
            print(f"[segexp] all {first_epoch} epochs were trained before it stopped; scoring its checkpoint", flush=True)
        try:
            history = {} if trained_already else fit(cfg, model, stream, callbacks, first_epoch)
        except KeyboardInterrupt:  # keep the newest weights; last.json still names the last whole epoch
            for callback in callbacks:  # every last.keras holds the averaged weights in the model (see EmaWeights)
                if isinstance(callback, EmaWeights):
                    callback.average_in_model()
            save_atomically(model, run.last_checkpoint)
            if not run.state_file.exists():
                checkpoints.write_state(first_epoch)
            raise TrainingInterrupted(f"interrupted; checkpoint saved in {run.path} - continue with "
                                      f"`segexp train resume={run.path}`") from None
        if pruning and pruning.pruned_at is not None:
            note = f"at epoch {pruning.pruned_at + 1}: {cfg.objective} below the pruner's bar ({cfg.pruner._target_})"
            tracker.set_tags({PRUNED: note})
            print(f"[segexp] trial {cfg.optuna_trial} pruned {note}", flush=True)
        losses = history.get("loss", [])
        if not trained_already and (not losses or not all(math.isfinite(v) for v in losses)):
            kept = (f"the last good checkpoint is {run.checkpoint}" if checkpoints.best_epoch is not None
                    else "no epoch finished cleanly, so no checkpoint was saved")
            raise TrainingDiverged(f"loss became {losses[-1] if losses else 'undefined'}; lower optimizer.lr "
                                   f"(now {cfg.optimizer.lr}); {kept}")
        if checkpoints.best_epoch is None:
            raise TrainingDiverged(f"trainer.monitor={cfg.trainer.monitor} was never finite; no checkpoint saved")
        scored = score_checkpoint(cfg, run, parts)
        metrics, chosen = scored.metrics, scored.model
        metrics.update(checkpoint_epoch=float(checkpoints.best_epoch), epochs_run=float(first_epoch + len(losses)),
                       train_minutes=(time.monotonic() - started) / 60)
        tracker.log_metrics(final_metric_keys(metrics))
        tracker.set_tags({CHECKPOINT: str(run.checkpoint.resolve())})
        log_report_slices(tracker, parts["report"], scored.report_probs, scored.report_labels)
        log_confusion(tracker, scored.confusion, classes)
        if scored.stage.active:
            tracker.log_params(scored.stage.tracking_params())
            tracker.set_tags({POSTPROCESS: scored.stage.method,
                              POSTPROCESS_CHOSEN_ON: ",".join(scored.stage.chosen_on) or "(as configured)"})
            tracker.log_text(run.postprocess_file.read_text(), run.postprocess_file.name)
        tracker.log_model(chosen, input_example(train_set), run.checkpoint)
        tracker.log_text(model_card(cfg, name, tracker.run_id, parts, metrics, {**tags, **setup, **weights_used},
                                    data_source(cfg.data), scored.stage.describe() if scored.stage.active else ""),
                        "model_card.md")
    print_summary(metrics, cfg, parts, tracker, run.checkpoint)
    return metrics


def retrain(cfg: DictConfig, output_dir: Path, overrides: Sequence[str], tags: Mapping[str, str]) -> dict[str, float]:
    """Trains cfg into output_dir as `segexp reproduce` does; returns the final metrics under their MLflow keys."""
    return final_metric_keys(train(cfg, output_dir, list(overrides), extra_tags=dict(tags)))


def final_metric_keys(metrics: dict[str, float]) -> dict[str, float]:
    """Returns the end-of-run metrics as MLflow keys: the checkpoint's selection scores become
    `ckpt_select_*`, apart from the per-epoch `select_*` history; `report_*` and the rest stay."""
    return {(f"ckpt_{k}" if k.startswith("select_") else k): v for k, v in metrics.items()}


def split_tags(parts: dict) -> dict[str, str]:
    """Returns tags naming each role's slices, e.g. split.report = "25,26,27,28,29", and a digest of each
    role's pixels (`split.report_digest`) and of all of them (`data_digest`): runs on other data or other
    held-out slices differ there whatever the files are called."""
    tags = {split_tag(role): ",".join(part.names) or "(none)" for role, part in parts.items()}
    tags.update({split_digest_tag(role): combined_digest(part.digests) for role, part in parts.items()})
    tags[DATA_DIGEST] = combined_digest([d for part in parts.values() for d in part.digests or []])
    return tags


def print_summary(metrics: dict[str, float], cfg: DictConfig, parts: dict, tracker, checkpoint: Path) -> None:
    """Prints the result users look for at the end of a run: what chose the checkpoint, and its scores on
    the report slices that no choice saw."""
    how = (f"best {cfg.trainer.monitor} on slices {','.join(parts['select'].names)}"
           if cfg.trainer.checkpoint == "best" else "the last epoch")
    scores = ", ".join(f"{k.removeprefix('report_')}={metrics[k]:.4f}" for k in
                       ("report_v_rand", "report_v_info", "report_map_v_rand", "report_map_v_info", "report_dice",
                        "report_iou", "report_accuracy") if k in metrics)
    stage = f" (v_rand, v_info after postprocess={cfg.postprocess.method})" if cfg.postprocess.method != "none" else ""
    reported = (f"report slices {','.join(parts['report'].names)}{stage}: {scores}" if scores
                else "no report slices (split.report is empty)")
    where = f"run {tracker.run_id} - open with `mlflow ui --backend-store-uri {tracker.uri}`" if tracker.run_id \
        else "tracking off"
    print(f"[segexp] checkpoint epoch {int(metrics['checkpoint_epoch']) + 1} ({how}) in "
          f"{metrics['train_minutes']:.1f} min; {reported}; {checkpoint}; {where}", flush=True)
