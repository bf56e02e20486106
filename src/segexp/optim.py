"""Optimizers and learning-rate schedules from the `optimizer` config group."""

from __future__ import annotations

import math
import time

import keras

COSINE = ("cosine", "warmup_cosine")


def learning_rate(lr: float, schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """Returns a constant rate or a Keras cosine schedule (with linear warmup when warmup_steps > 0)."""
    if schedule in ("constant", "plateau"):  # plateau: ReduceLROnPlateau lowers the constant rate
        return lr
    if schedule in COSINE:
        decay_steps = max(total_steps - warmup_steps, 1)
        if warmup_steps:
            return keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=lr * min_lr_ratio, decay_steps=decay_steps, alpha=min_lr_ratio,
                warmup_target=lr, warmup_steps=warmup_steps)
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps, alpha=min_lr_ratio)
    raise ValueError(f"optimizer.schedule: unknown schedule {schedule!r}; use constant, cosine, plateau or warmup_cosine")


def build_optimizer(
    name: str,
    lr: float,
    steps_per_epoch: int,
    epochs: int,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    schedule: str = "constant",
    warmup_epochs: int = 0,
    min_lr_ratio: float = 0.01,
    plateau_patience: int = 3,
    plateau_factor: float = 0.5,
    max_minutes: float | None = None,
) -> keras.optimizers.Optimizer:
    """Returns a Keras optimizer (adam | adamw | sgd) with its learning-rate schedule. Under a
    wall-clock budget (`max_minutes`) a cosine rate is set by BudgetedCosine instead, so it starts
    as a plain variable."""
    warmup = warmup_steps(schedule, warmup_epochs, steps_per_epoch)
    rate = lr if max_minutes and schedule in COSINE else \
        learning_rate(lr, schedule, warmup, steps_per_epoch * epochs, min_lr_ratio)
    if name == "adam":
        return keras.optimizers.Adam(rate)
    if name == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=momentum, nesterov=True)
    raise ValueError(f"optimizer.name: unknown optimizer {name!r}; use adam, adamw or sgd")


def warmup_steps(schedule: str, warmup_epochs: int, steps_per_epoch: int) -> int:
    """Returns the linear warmup length in steps (`warmup_cosine` warms up for at least one epoch)."""
    warmup = warmup_epochs * steps_per_epoch
    return max(warmup, steps_per_epoch) if schedule == "warmup_cosine" else warmup


def cosine_rate(lr: float, progress: float, warmup_fraction: float, min_lr_ratio: float) -> float:
    """Returns the warmup-cosine rate at `progress` (0..1) of training, the curve Keras' CosineDecay
    draws over steps: linear from lr*min_lr_ratio to lr, then a half cosine down to lr*min_lr_ratio."""
    floor = lr * min_lr_ratio
    if progress < warmup_fraction:
        return floor + (lr - floor) * progress / warmup_fraction
    decayed = min((progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-9), 1.0)
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * decayed))


class BudgetedCosine(keras.callbacks.Callback):
    """Cosine decay that ends when training does. Progress is the larger of steps done / steps planned
    and minutes spent / `minutes`, so a run its wall-clock budget cuts short (a slower machine) still
    anneals to the floor instead of stopping at a high rate. Where the budget binds, the rate depends
    on the machine's speed: set trainer.max_minutes=null for a step-exact schedule."""

    def __init__(self, lr: float, total_steps: int, warmup_steps: int, min_lr_ratio: float, minutes: float):
        super().__init__()
        self.lr, self.total, self.min_lr_ratio = lr, max(total_steps, 1), min_lr_ratio
        self.warmup_fraction, self.seconds = warmup_steps / self.total, minutes * 60.0
        self.started, self.step = None, 0

    def on_train_begin(self, logs=None):
        self.started, self.step = time.monotonic(), int(self.model.optimizer.iterations.numpy())
        try:  # a checkpoint from a run without the budget carries its Keras schedule: keep that
            self.model.optimizer.learning_rate = cosine_rate(self.lr, self.step / self.total, self.warmup_fraction,
                                                             self.min_lr_ratio)
        except TypeError:
            self.started = None
            print("[segexp] the resumed optimizer has a step schedule; trainer.max_minutes only stops training")

    def on_train_batch_begin(self, batch, logs=None):
        if self.started is None:
            return
        progress = max(self.step / self.total, (time.monotonic() - self.started) / self.seconds)
        self.model.optimizer.learning_rate = cosine_rate(self.lr, progress, self.warmup_fraction, self.min_lr_ratio)
        self.step += 1


def schedule_callbacks(optimizer, monitor: str, mode: str, steps_per_epoch: int, epochs: int,
                       max_minutes: float | None) -> list:
    """Returns the callbacks a schedule needs (`optimizer` is the optimizer config): ReduceLROnPlateau
    for `plateau`, BudgetedCosine for a cosine under a wall-clock budget, none otherwise."""
    if optimizer.schedule == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, patience=optimizer.plateau_patience,
                                                  factor=optimizer.plateau_factor, verbose=1)]
    if optimizer.schedule in COSINE and max_minutes:
        warmup = warmup_steps(optimizer.schedule, optimizer.warmup_epochs, steps_per_epoch)
        return [BudgetedCosine(optimizer.lr, steps_per_epoch * epochs, warmup, optimizer.min_lr_ratio, max_minutes)]
    return []
