"""Learning-rate schedules, one function per option of conf/optimizer/schedule/.

Each returns a `Schedule`: the rate the optimizer is built with (a float or a Keras schedule)
and the callbacks it needs during fit. The composition root (train.py) instantiates the
configured schedule once and builds the configured Keras optimizer with its rate; a new
schedule is a function here, or any importable target, plus a YAML file.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import keras


@dataclass(frozen=True)
class Schedule:
    learning_rate: Any  # float or keras.optimizers.schedules.LearningRateSchedule
    callbacks: list = field(default_factory=list)


def constant(lr: float) -> Schedule:
    """Returns a fixed rate."""
    return Schedule(lr)


def plateau(lr: float, monitor: str, mode: str, patience: int, factor: float) -> Schedule:
    """Returns a rate that ReduceLROnPlateau multiplies by `factor` after `patience` epochs without
    improvement of `monitor` (a selection score)."""
    return Schedule(lr, [keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=str(mode), patience=patience,
                                                          factor=factor, verbose=1)])


def cosine(lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: int, min_lr_ratio: float,
           max_minutes: float | None) -> Schedule:
    """Returns a cosine decay from lr to lr * min_lr_ratio over the planned steps, after a linear warmup
    of `warmup_epochs` from the floor. Under a wall-clock budget (`max_minutes`) BudgetedCosine sets
    the rate instead, so the decay ends when training does, whichever comes first."""
    total, warmup = steps_per_epoch * epochs, warmup_epochs * steps_per_epoch
    if max_minutes:
        return Schedule(lr, [BudgetedCosine(lr, total, warmup, min_lr_ratio, max_minutes)])
    decay_steps = max(total - warmup, 1)
    if warmup:
        return Schedule(keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr * min_lr_ratio, decay_steps=decay_steps, alpha=min_lr_ratio,
            warmup_target=lr, warmup_steps=warmup))
    return Schedule(keras.optimizers.schedules.CosineDecay(lr, decay_steps, alpha=min_lr_ratio))


def cosine_rate(lr: float, progress: float, warmup_fraction: float, min_lr_ratio: float) -> float:
    """Returns the warmup-cosine rate at `progress` (0..1) of training, the curve Keras' CosineDecay
    draws over steps: linear from lr*min_lr_ratio to lr, then a half cosine down to lr*min_lr_ratio."""
    floor = lr * min_lr_ratio
    if progress < warmup_fraction:
        return floor + (lr - floor) * progress / warmup_fraction
    decayed = min((progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-9), 1.0)
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * decayed))


class BudgetedCosine(keras.callbacks.Callback):
    """Cosine decay that ends when training does. The warmup is `warmup_steps` steps, as planned; after
    it, progress is the larger of steps done / steps planned and minutes spent / `minutes`, so a run its
    wall-clock budget cuts short (a slower machine) still anneals to the floor instead of stopping at a
    high rate, and a budgeted recipe may plan more epochs than fit (the budget ends it) without
    shortening its warmup. Where the budget binds, the rate depends on the machine's speed: set
    trainer.max_minutes=null for a step-exact schedule."""

    def __init__(self, lr: float, total_steps: int, warmup_steps: int, min_lr_ratio: float, minutes: float):
        super().__init__()
        self.lr, self.total, self.min_lr_ratio = lr, max(total_steps, 1), min_lr_ratio
        self.warmup, self.seconds = min(warmup_steps, self.total), minutes * 60.0
        self.started, self.step = None, 0

    def rate(self, step: int, seconds: float) -> float:
        """The rate at `step`, `seconds` into training: the warmup by steps, then the decay by the larger
        of step and time progress."""
        if step < self.warmup:
            return cosine_rate(self.lr, step / self.total, self.warmup / self.total, self.min_lr_ratio)
        by_steps = (step - self.warmup) / max(self.total - self.warmup, 1)
        return cosine_rate(self.lr, max(by_steps, seconds / self.seconds), 0.0, self.min_lr_ratio)

    def on_train_begin(self, logs=None):
        self.started, self.step = time.monotonic(), int(self.model.optimizer.iterations.numpy())
        try:  # a checkpoint from a run without the budget carries its Keras schedule: keep that
            self.model.optimizer.learning_rate = self.rate(self.step, 0.0)
        except TypeError:
            self.started = None
            print("[segexp] the resumed optimizer has a step schedule; trainer.max_minutes only stops training")

    def on_train_batch_begin(self, batch, logs=None):
        if self.started is None:
            return
        self.model.optimizer.learning_rate = self.rate(self.step, time.monotonic() - self.started)
        self.step += 1
