"""The composition root: `train(cfg, output_dir)` builds everything from the config and fits.

Order matters for users: every check that can fail on bad input (config values, data
files, split, crop size, tracking store) runs before TensorFlow is imported, so mistakes
cost seconds, not a training run.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from segexp import data as data_lib
from segexp.errors import TrainingDiverged, TrainingInterrupted, instantiate
from segexp.rundir import RunDir
from segexp.schema import validate
from segexp.tracking import SWEPT_KEYS_ENV, flatten, run_tags
from segexp.weightmap import border_weight_map

CODE_DIR = Path(__file__).resolve().parent


def run_name(overrides: Sequence[str]) -> str:
    """Returns a readable run name from the command-line overrides, e.g. `model=unet_small,aug=heavy`;
    in a sweep only the swept ones (`optimizer.lr=0.001`), since the rest are the same in every child."""
    chosen = [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]
    swept = {key for key in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if key}
    varying = [o for o in chosen if o.split("=", 1)[0].lstrip("+~") in swept]
    chosen = varying or chosen
    return ",".join(chosen) if chosen else "default"


def prepare_data(cfg: DictConfig) -> tuple[dict[str, data_lib.SegmentationSet], list | None]:
    """Returns ({"train", "select", "report": SegmentationSet}, border weight maps of the training
    slices or None), all validated."""
    dataset = instantiate(cfg.data, _convert_="all")
    parts = data_lib.split(dataset, cfg.split.select, cfg.split.report)
    data_lib.check_crop_fits(parts["train"], cfg.trainer.crop_size)
    weights = None
    if cfg.loss.weight_map is not None:
        weights = [border_weight_map(m, **cfg.loss.weight_map) for m in parts["train"].masks]
    return parts, weights


def build_model(cfg: DictConfig, channels: int, foreground: int):
    """Returns the compiled Keras model described by the model, loss and optimizer groups."""
    from segexp.keras_metrics import segmentation_metrics

    model = instantiate(cfg.model, channels=channels)
    t = cfg.trainer
    optimizer = instantiate(cfg.optimizer, steps_per_epoch=t.steps_per_epoch, epochs=t.epochs, max_minutes=t.max_minutes)
    model.compile(optimizer=optimizer, loss=instantiate(cfg.loss.fn), metrics=segmentation_metrics(foreground),
                  jit_compile=cfg.trainer.jit_compile)
    return model


def build_callbacks(cfg: DictConfig, select_set, tracker, run: RunDir, resume=None) -> tuple[list, Any]:
    """Returns (callbacks for fit, the checkpoint callback), continuing `resume`'s best score if given."""
    import keras

    from segexp.callbacks import Checkpoints, SliceValidation, TimeBudget
    from segexp.optim import schedule_callbacks

    t = cfg.trainer
    monitor = t.monitor if t.checkpoint == "best" else None
    checkpoints = Checkpoints(run, monitor, t.monitor_mode, tracker.run_id,
                              *((resume.best, resume.best_epoch) if resume else ()))
    # order matters: selection scores join the logs before checkpoints and trackers read them
    callbacks = [keras.callbacks.TerminateOnNaN()]
    if select_set.images:
        callbacks.append(SliceValidation(select_set.images, select_set.masks, select_set.names, tracker.log_image,
                                         t.preview_slices, t.topology_metrics, select_set.foreground))
    callbacks += [checkpoints, *tracker.keras_callbacks()]
    callbacks += schedule_callbacks(cfg.optimizer, t.monitor, t.monitor_mode, t.steps_per_epoch, t.epochs, t.max_minutes)
    if t.max_minutes:
        callbacks.append(TimeBudget(t.max_minutes))
    if t.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(t.monitor, mode=t.monitor_mode,
                                                       patience=t.early_stopping_patience))
    return callbacks, checkpoints


def fit(cfg: DictConfig, model, train_set, weights, callbacks, initial_epoch: int = 0) -> dict[str, list[float]]:
    """Runs model.fit on the augmented crop stream from `initial_epoch` on; returns the Keras history."""
    from segexp.augment import CropSampler
    from segexp.pipeline import training_dataset

    t = cfg.trainer
    sampler = CropSampler(train_set.images, train_set.masks, cfg.aug.transforms, t.crop_size, t.seed, weights)
    train_ds = training_dataset(sampler, train_set.channels, 2 if weights is not None else 1, t.batch_size,
                                first_sample=initial_epoch * t.steps_per_epoch * t.batch_size,
                                parallel_calls=t.aug_workers)
    # no validation_data: SliceValidation (in callbacks) predicts the selection slices once per epoch
    history = model.fit(train_ds, epochs=t.epochs, initial_epoch=initial_epoch, steps_per_epoch=t.steps_per_epoch,
                        callbacks=callbacks, verbose=t.verbose, shuffle=False)  # the sampler draws random crops
    return history.history


def score_checkpoint(checkpoint: Path, parts: dict, topology: bool) -> tuple[dict[str, float], Any]:
    """Returns (metrics, model) of the chosen checkpoint, reloaded from disk as a user would: `select_*`
    on the selection slices (what chose it) and `report_*` on the report slices (what no choice saw;
    the ISBI scores always, as they are the figures people quote)."""
    from segexp.callbacks import predict_slices, slice_scores
    from segexp.models import load_model

    model = load_model(checkpoint)
    metrics = {}
    for role, with_topology in (("select", topology), ("report", True)):
        part = parts[role]
        if part.images:
            scores = slice_scores(model.loss, predict_slices(model, part.images), part.masks, part.foreground,
                                  with_topology)
            metrics.update({f"{role}_{k}": float(v) for k, v in scores.items()})
    return metrics, model


def train(cfg: DictConfig, output_dir: Path, overrides: Sequence[str] = (), resume=None) -> dict[str, float]:
    """Trains the configured model and returns the best checkpoint's validation metrics.

    With `resume` (a resume.ResumeState), continues that run's last checkpoint (weights,
    optimizer state, epoch count, best score, sample sequence) in the same MLflow run.
    """
    validate(cfg)
    parts, weights = prepare_data(cfg)
    train_set = parts["train"]
    tracker = instantiate(cfg.tracking)  # fails fast on an unwritable store or unreachable server
    run = RunDir(Path(output_dir))
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_split(data_lib.split_record(parts))
    run.write_config(cfg)

    import keras

    from segexp import runtime
    from segexp.callbacks import save_atomically
    from segexp.models import load_model

    keras.backend.clear_session()  # jobs of an in-process multirun must not share graph state
    first_epoch = resume.epochs_done if resume else 0
    policy = runtime.configure(cfg.trainer.seed + first_epoch, cfg.trainer.deterministic, cfg.trainer.precision)
    name = cfg.run_name or run_name(overrides)
    started = time.monotonic()
    tags = run_tags(list(overrides), CODE_DIR)
    if resume:  # the run keeps its original overrides tag; today's go beside it
        tags = {"resumed_from_epoch": str(first_epoch), "resume_overrides": tags.pop("overrides"), **tags}
    strategy = runtime.distribution_strategy(cfg.trainer.strategy)
    with runtime.sigterm_as_interrupt(), tracker.run(name, tags, run_id=resume.run_id if resume else None):
        if not resume:
            tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
            tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
            tracker.log_artifacts(run.hydra_dir, "config/hydra")
            tracker.log_text(run.split_file.read_text(), f"config/{run.split_file.name}")
        with strategy.scope():  # variables are created once per replica
            model = (load_model(run.last_checkpoint) if resume  # weights and optimizer state
                     else build_model(cfg, train_set.channels, train_set.foreground))
        tracker.set_tags({"precision": policy, "device": runtime.device_description(),
                          "replicas": str(strategy.num_replicas_in_sync), "output_dir": str(run.path.resolve()),
                          **split_tags(parts)})
        callbacks, checkpoints = build_callbacks(cfg, parts["select"], tracker, run, resume)
        try:
            history = fit(cfg, model, train_set, weights, callbacks, first_epoch)
        except KeyboardInterrupt:  # keep the newest weights; last.json still names the last whole epoch
            save_atomically(model, run.last_checkpoint)
            if not run.state_file.exists():
                checkpoints.write_state(first_epoch)
            raise TrainingInterrupted(f"interrupted; checkpoint saved in {run.path} - continue with "
                                      f"`segexp train resume={run.path}`") from None
        losses = history.get("loss", [])
        if not losses or not all(math.isfinite(v) for v in losses):
            kept = (f"the last good checkpoint is {run.checkpoint}" if checkpoints.best_epoch is not None
                    else "no epoch finished cleanly, so no checkpoint was saved")
            raise TrainingDiverged(f"loss became {losses[-1] if losses else 'undefined'}; lower optimizer.lr "
                                   f"(now {cfg.optimizer.lr}); {kept}")
        if checkpoints.best_epoch is None:
            raise TrainingDiverged(f"trainer.monitor={cfg.trainer.monitor} was never finite; no checkpoint saved")
        metrics, chosen = score_checkpoint(run.checkpoint, parts, cfg.trainer.topology_metrics)
        metrics.update(checkpoint_epoch=float(checkpoints.best_epoch), epochs_run=float(first_epoch + len(losses)),
                       train_minutes=(time.monotonic() - started) / 60)
        tracker.log_metrics(final_metric_keys(metrics))
        tracker.set_tags({"checkpoint": str(run.checkpoint.resolve())})
        tracker.log_model(chosen)
    print_summary(metrics, cfg, parts, tracker, run.checkpoint)
    return metrics


def final_metric_keys(metrics: dict[str, float]) -> dict[str, float]:
    """Returns the end-of-run metrics as MLflow keys: the checkpoint's selection scores become
    `ckpt_select_*`, apart from the per-epoch `select_*` history; `report_*` and the rest stay."""
    return {(f"ckpt_{k}" if k.startswith("select_") else k): v for k, v in metrics.items()}


def split_tags(parts: dict) -> dict[str, str]:
    """Returns tags naming each role's slices, e.g. split.report = "25,26,27,28,29"."""
    return {f"split.{role}": ",".join(part.names) or "(none)" for role, part in parts.items()}


def print_summary(metrics: dict[str, float], cfg: DictConfig, parts: dict, tracker, checkpoint: Path) -> None:
    """Prints the result users look for at the end of a run: what chose the checkpoint, and its scores on
    the report slices that no choice saw."""
    how = (f"best {cfg.trainer.monitor} on slices {','.join(parts['select'].names)}"
           if cfg.trainer.checkpoint == "best" else "the last epoch")
    scores = ", ".join(f"{k.removeprefix('report_')}={metrics[k]:.4f}" for k in
                       ("report_v_rand", "report_v_info", "report_dice", "report_iou", "report_accuracy") if k in metrics)
    reported = (f"report slices {','.join(parts['report'].names)}: {scores}" if scores
                else "no report slices (split.report is empty)")
    where = f"run {tracker.run_id} - open with `mlflow ui --backend-store-uri {tracker.uri}`" if tracker.run_id \
        else "tracking off"
    print(f"[segexp] checkpoint epoch {int(metrics['checkpoint_epoch']) + 1} ({how}) in "
          f"{metrics['train_minutes']:.1f} min; {reported}; {checkpoint}; {where}", flush=True)
