"""Keras callbacks: per-epoch selection scoring with mask previews, the time budget, atomic checkpoints,
and one line per epoch for logs that are not a terminal."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np

from segexp.data.sets import BINARY, Classes
from segexp.inference.tiling import predict_slices
from segexp.data.affinities import BOUNDARY, Target
from segexp.evaluation.scoring import as_maps, slice_scores
from segexp.evaluation.visualize import prediction_panel
from segexp.rundir import RunDir
from segexp.training.pruning import PRUNED_AT


def save_atomically(model: keras.Model, path: Path) -> None:
    """Writes model to path via a temporary file and rename, so a kill never leaves half a file."""
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    model.save(temporary)
    os.replace(temporary, path)


class SliceValidation(keras.callbacks.Callback):
    """Every epoch, predicts the whole selection slices once and scores them.

    This is the only pass over held-out data during training (fit gets no validation_data, and
    the report slices are never scored before training ends): it adds `select_loss`,
    `select_accuracy`, `select_dice`, `select_iou`, per class `select_dice_<class>` and
    `select_iou_<class>` and, with `topology`, the ISBI scores
    `select_v_rand` and `select_v_info` to the epoch logs, so they are tracked and can be
    monitored for checkpoints (list this callback before those that read the logs), and hands
    image | truth | prediction | error panels (in class colours for K classes) of the first `preview` slices to
    `log_image(panel, key, step)`. Predicting outside fit also keeps whole slices of any
    size away from a distribution strategy's per-replica batch split.
    """

    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], names: Sequence[str],
                 log_image: Callable[[np.ndarray, str, int], None], preview: int, topology: bool, foreground: int,
                 classes: Classes = BINARY, prefix: str = "select_", target: Target = BOUNDARY,
                 objects: Sequence[np.ndarray] | None = None):
        super().__init__()
        self.images, self.masks, self.names, self.log_image = list(images), list(masks), list(names), log_image
        self.preview, self.topology, self.foreground, self.prefix = preview, topology, foreground, prefix
        self.classes, self.target, self.objects = classes, target, objects  # objects: the slices' instance ids

    def on_epoch_end(self, epoch, logs=None):
        predictions = predict_slices(self.model, self.images)
        if logs is not None:
            scores = slice_scores(self.model.loss, predictions, self.masks, self.foreground, self.topology,
                                  self.classes, self.target, self.objects)
            logs.update({f"{self.prefix}{k}": v for k, v in scores.items()})
        probs = as_maps(predictions[: self.preview], self.target)
        for image, mask, prob, name in list(zip(self.images, self.masks, probs, self.names))[: self.preview]:
            self.log_image(prediction_panel(image, mask, prob, self.classes), f"masks/{name}", epoch)


class TrialPruning(keras.callbacks.Callback):
    """Reports `objective` to the job's Optuna trial every epoch and stops training when the study's pruner
    says the trial is clearly worse than the others at that epoch (segexp.experiments.optuna_sweeper has the whole story).
    Afterwards `pruned_at` is the epoch (0-based) it stopped after, or None."""

    def __init__(self, trial, objective: str):
        super().__init__()
        self.trial, self.objective, self.pruned_at = trial, objective, None  # trial: the optuna.Trial the sweeper asked

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.objective)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr(PRUNED_AT, epoch)  # the sweeper then tells the trial PRUNED
            self.pruned_at = epoch
            self.model.stop_training = True


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `minutes` of wall-clock time have passed since training began."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds, self.started = minutes * 60.0, None

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.started >= self.seconds:
            self.model.stop_training = True


class EpochLine(keras.callbacks.Callback):
    """Prints one line per epoch - training and selection scores, its seconds, the budget left - for output
    that goes to a file, a pipe, CI or a scheduler (where a progress bar is a stream of redrawn frames)."""

    SHOWN = ("loss", "dice", "select_loss", "select_dice", "select_v_rand", "select_v_info")

    def __init__(self, epochs: int, max_minutes: float | None = None, print_fn: Callable[[str], None] = print):
        super().__init__()
        self.epochs, self.max_minutes, self.print_fn = epochs, max_minutes, print_fn
        self.started = self.epoch_started = None

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.monotonic()
        scores = " ".join(f"{k} {float(logs[k]):.4f}" for k in self.SHOWN if k in logs)
        left = ""
        if self.max_minutes:
            left = f", {max(0.0, self.max_minutes - (now - self.started) / 60):.1f} of {self.max_minutes:g} min left"
        self.print_fn(f"[segexp] epoch {epoch + 1}/{self.epochs}: {scores} ({now - self.epoch_started:.1f} s{left})")


class EmaWeights(keras.callbacks.SwapEMAWeights):
    """Keras' SwapEMAWeights at every epoch end (optimizer.ema): the moving average of the weights is in the model
    while selection scoring, checkpoints and trackers see it, and the trained weights are back for the next epoch.

    Every last.keras therefore holds the average in the model and the trained weights in the optimizer's average
    slots; a resumed run (`resumed`) swaps them back before its first step, so it continues exactly. (After the
    planned last epoch, Keras keeps only the average: a run extended beyond it continues from the average.)"""

    def __init__(self, resumed: bool = False):
        super().__init__(swap_on_epoch=True)
        self.resumed = resumed

    def on_train_begin(self, logs=None):
        self._ema_weights_in_model = self.resumed  # Keras' own flag: on_epoch_begin swaps when it is set

    def average_in_model(self) -> None:
        """Puts the average in the model (an interrupted epoch), as an epoch end would, before last.keras is saved."""
        if not self._ema_weights_in_model:
            self._swap_variables()
            self._ema_weights_in_model = True


class Checkpoints(keras.callbacks.Callback):
    """Keeps the chosen checkpoint (best by `monitor`, or with monitor None every epoch's: the last)
    and the `last` model file plus a state file for resuming, in a run folder.

    Both files are written atomically. The state records the epoch finished and the best
    value, so a resumed run continues the count and the comparison.
    """

    def __init__(self, run: RunDir, monitor: str | None, mode: str, run_id: str | None = None,
                 best: float | None = None, best_epoch: int | None = None):
        super().__init__()
        self.run, self.monitor, self.mode = run, monitor, mode
        self.best = best if best is not None else (-math.inf if mode == "max" else math.inf)
        self.best_epoch, self.run_id = best_epoch, run_id

    def improved(self, value: float) -> bool:
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor is not None and self.monitor not in logs:
            raise KeyError(f"trainer.monitor={self.monitor!r} is not a logged metric; choose one of {sorted(logs)}")
        if not math.isfinite(float(logs.get("loss", 0.0))):
            return  # never let a diverged model overwrite a checkpoint
        value = float(logs[self.monitor]) if self.monitor is not None else float(epoch)
        if self.monitor is None or (math.isfinite(value) and self.improved(value)):
            self.best, self.best_epoch = value, epoch
            save_atomically(self.model, self.run.checkpoint)
        save_atomically(self.model, self.run.last_checkpoint)
        self.write_state(epoch + 1)

    def write_state(self, epochs_done: int) -> None:
        self.run.write_state({"epochs_done": epochs_done, "monitor": self.monitor, "best": self.best,
                              "best_epoch": self.best_epoch, "run_id": self.run_id})


class TrackEpochs(keras.callbacks.Callback):
    """Logs each epoch's metrics (loss, selection scores, learning rate) to the tracker at step = epoch, and
    at the start of a new run the optimizer's settings as `optimizer_*` parameters and the model summary,
    as MLflow's own Keras callback does, but through the tracker, so a lost store never blocks an epoch."""

    def __init__(self, tracker):
        super().__init__()
        self.tracker = tracker

    def on_train_begin(self, logs=None):
        if int(self.model.optimizer.iterations.numpy()):  # a resumed run logged these when it began
            return
        self.tracker.log_params({f"optimizer_{k}": v for k, v in self.model.optimizer.get_config().items()})
        lines: list[str] = []
        self.model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        self.tracker.log_text("\n".join(lines), "model_summary.txt")

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            self.tracker.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch)
