"""Optimizers and learning-rate schedules from the `optimizer` config group."""

from __future__ import annotations

import keras


def learning_rate(lr: float, schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """Returns a constant rate or a Keras cosine schedule (with linear warmup when warmup_steps > 0)."""
    if schedule in ("constant", "plateau"):  # plateau: ReduceLROnPlateau lowers the constant rate
        return lr
    if schedule in ("cosine", "warmup_cosine"):
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
) -> keras.optimizers.Optimizer:
    """Returns a Keras optimizer (adam | adamw | sgd) with its learning-rate schedule."""
    warmup = warmup_epochs * steps_per_epoch
    if schedule == "warmup_cosine":
        warmup = max(warmup, steps_per_epoch)
    rate = learning_rate(lr, schedule, warmup, steps_per_epoch * epochs, min_lr_ratio)
    if name == "adam":
        return keras.optimizers.Adam(rate)
    if name == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=momentum, nesterov=True)
    raise ValueError(f"optimizer.name: unknown optimizer {name!r}; use adam, adamw or sgd")


def schedule_callbacks(schedule: str, monitor: str, mode: str, patience: int, factor: float) -> list:
    """Returns the callbacks a schedule needs: ReduceLROnPlateau for `plateau`, none otherwise."""
    if schedule != "plateau":
        return []
    return [keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, patience=patience, factor=factor, verbose=1)]
