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
from segexp.schema import validate
from segexp.tracking import SWEPT_KEYS_ENV, flatten, run_tags
from segexp.weightmap import border_weight_map

CODE_DIR = Path(__file__).resolve().parent
BEST_MODEL, LAST_MODEL = "model.keras", "last.keras"


def run_name(overrides: Sequence[str]) -> str:
    """Returns a readable run name from the command-line overrides, e.g. `model=unet_small,aug=heavy`;
    in a sweep only the swept ones (`optimizer.lr=0.001`), since the rest are the same in every child."""
    chosen = [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]
    swept = {key for key in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if key}
    varying = [o for o in chosen if o.split("=", 1)[0].lstrip("+~") in swept]
    chosen = varying or chosen
    return ",".join(chosen) if chosen else "default"


def prepare_data(cfg: DictConfig):
    """Returns (train set, validation set, border weight maps or None), all validated."""
    dataset = instantiate(cfg.data, _convert_="all")
    train_set, val_set = data_lib.split(dataset, cfg.trainer.val_slices)
    data_lib.check_crop_fits(train_set, cfg.trainer.crop_size)
    weights = None
    if cfg.loss.weight_map is not None:
        weights = [border_weight_map(m, **cfg.loss.weight_map) for m in train_set.masks]
    return train_set, val_set, weights


def build_model(cfg: DictConfig, channels: int, foreground: int):
    """Returns the compiled Keras model described by the model, loss and optimizer groups."""
    from segexp.keras_metrics import segmentation_metrics

    model = instantiate(cfg.model, channels=channels)
    t = cfg.trainer
    optimizer = instantiate(cfg.optimizer, steps_per_epoch=t.steps_per_epoch, epochs=t.epochs, max_minutes=t.max_minutes)
    model.compile(optimizer=optimizer, loss=instantiate(cfg.loss.fn), metrics=segmentation_metrics(foreground),
                  jit_compile=cfg.trainer.jit_compile)
    return model


def build_callbacks(cfg: DictConfig, val_set, tracker, output_dir: Path, resume=None) -> tuple[list, Any]:
    """Returns (callbacks for fit, the checkpoint callback), continuing `resume`'s best score if given."""
    import keras

    from segexp.callbacks import Checkpoints, SliceValidation, TimeBudget
    from segexp.optim import schedule_callbacks

    t = cfg.trainer
    checkpoints = Checkpoints(output_dir / BEST_MODEL, output_dir / LAST_MODEL, t.monitor, t.monitor_mode,
                              tracker.run_id, *((resume.best, resume.best_epoch) if resume else ()))
    slices = SliceValidation(val_set.images, val_set.masks, val_set.names, tracker.log_image,
                             t.preview_slices, t.topology_metrics, val_set.foreground)
    # order matters: slice scores join the logs before checkpoints and trackers read them
    callbacks = [keras.callbacks.TerminateOnNaN(), slices, checkpoints, *tracker.keras_callbacks()]
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
    # no validation_data: SliceValidation (in callbacks) predicts the held-out slices once per epoch
    history = model.fit(train_ds, epochs=t.epochs, initial_epoch=initial_epoch, steps_per_epoch=t.steps_per_epoch,
                        callbacks=callbacks, verbose=t.verbose, shuffle=False)  # the sampler draws random crops
    return history.history


def evaluate_best(best_path: Path, val_set, topology: bool) -> tuple[dict[str, float], Any]:
    """Returns (val_* metrics, model) of the best checkpoint, reloaded from disk as a user would."""
    from segexp.callbacks import predict_slices, slice_scores
    from segexp.models import load_model

    best = load_model(best_path)
    probs = predict_slices(best, val_set.images)
    scores = slice_scores(best.loss, probs, val_set.masks, val_set.foreground, topology)
    return {f"val_{k}": float(v) for k, v in scores.items()}, best


def train(cfg: DictConfig, output_dir: Path, overrides: Sequence[str] = (), resume=None) -> dict[str, float]:
    """Trains the configured model and returns the best checkpoint's validation metrics.

    With `resume` (a resume.ResumeState), continues that run's last checkpoint (weights,
    optimizer state, epoch count, best score, sample sequence) in the same MLflow run.
    """
    validate(cfg)
    train_set, val_set, weights = prepare_data(cfg)
    tracker = instantiate(cfg.tracking)  # fails fast on an unwritable store or unreachable server
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

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
            tracker.log_artifacts(output_dir / ".hydra", "config/hydra")
        with strategy.scope():  # variables are created once per replica
            model = (load_model(output_dir / LAST_MODEL) if resume  # weights and optimizer state
                     else build_model(cfg, train_set.channels, train_set.foreground))
        tracker.set_tags({"precision": policy, "device": runtime.device_description(),
                          "replicas": str(strategy.num_replicas_in_sync), "output_dir": str(output_dir.resolve())})
        callbacks, checkpoints = build_callbacks(cfg, val_set, tracker, output_dir, resume)
        try:
            history = fit(cfg, model, train_set, weights, callbacks, first_epoch)
        except KeyboardInterrupt:  # keep the newest weights; last.json still names the last whole epoch
            save_atomically(model, output_dir / LAST_MODEL)
            if not (output_dir / "last.json").exists():
                checkpoints.write_state(first_epoch)
            raise TrainingInterrupted(f"interrupted; checkpoint saved in {output_dir} - continue with "
                                      f"`segexp train resume={output_dir}`") from None
        losses = history.get("loss", [])
        if not losses or not all(math.isfinite(v) for v in losses):
            kept = (f"the last good checkpoint is {output_dir / BEST_MODEL}" if checkpoints.best_epoch is not None
                    else "no epoch finished cleanly, so no checkpoint was saved")
            raise TrainingDiverged(f"loss became {losses[-1] if losses else 'undefined'}; lower optimizer.lr "
                                   f"(now {cfg.optimizer.lr}); {kept}")
        if checkpoints.best_epoch is None:
            raise TrainingDiverged(f"trainer.monitor={cfg.trainer.monitor} was never finite; no checkpoint saved")
        metrics, best = evaluate_best(output_dir / BEST_MODEL, val_set, cfg.trainer.topology_metrics)
        metrics.update(best_epoch=float(checkpoints.best_epoch), epochs_run=float(first_epoch + len(losses)),
                       train_minutes=(time.monotonic() - started) / 60)
        tracker.log_metrics({(f"best_{k}" if k.startswith("val_") else k): v for k, v in metrics.items()})
        tracker.set_tags({"checkpoint": str((output_dir / BEST_MODEL).resolve())})
        tracker.log_model(best)
    print_summary(metrics, tracker, output_dir / BEST_MODEL)
    return metrics


def print_summary(metrics: dict[str, float], tracker, checkpoint: Path) -> None:
    """Prints the one-line result users look for at the end of a run."""
    shown = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("val_v_rand", "val_v_info", "val_dice", "val_iou", "val_accuracy")
                      if k in metrics)
    where = f"run {tracker.run_id} - open with `mlflow ui --backend-store-uri {tracker.uri}`" if tracker.run_id \
        else "tracking off"
    print(f"[segexp] best epoch {int(metrics['best_epoch']) + 1}: {shown} in {metrics['train_minutes']:.1f} min; "
          f"checkpoint {checkpoint}; {where}", flush=True)
