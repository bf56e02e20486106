"""Learning-rate schedules: the wall-clock-budgeted cosine against Keras' own CosineDecay, every
schedule option built from its config."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from segexp.training.schedules import BudgetedCosine, cosine, cosine_rate


@pytest.mark.parametrize("warmup", [0, 5])
def test_cosine_rate_draws_keras_cosine_decay_curve(warmup):
    lr, total, ratio = 1e-3, 40, 0.01
    if warmup:
        keras_schedule = keras.optimizers.schedules.CosineDecay(lr * ratio, total - warmup, alpha=ratio,
                                                                warmup_target=lr, warmup_steps=warmup)
    else:
        keras_schedule = keras.optimizers.schedules.CosineDecay(lr, total, alpha=ratio)
    for step in range(total + 1):
        expected = float(keras_schedule(step))
        assert cosine_rate(lr, step / total, warmup / total, ratio) == pytest.approx(expected, rel=1e-5), step


def fit_tiny(callback: BudgetedCosine, steps: int) -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    schedule = cosine(1e-3, steps, 1, warmup_epochs=0, min_lr_ratio=0.01, max_minutes=1.0)
    model.compile(optimizer=keras.optimizers.Adam(schedule.learning_rate), loss="mse")
    x = np.ones((steps, 3), np.float32)
    model.fit(x, x[:, :1], batch_size=1, epochs=1, callbacks=[callback], verbose=0)
    return model


def test_budgeted_cosine_follows_steps_while_the_budget_is_ample():
    steps = 6
    model = fit_tiny(BudgetedCosine(1e-3, steps, 0, 0.01, minutes=600.0), steps)
    # the last batch ran at progress (steps - 1) / steps, well before 600 minutes
    assert float(model.optimizer.learning_rate) == pytest.approx(cosine_rate(1e-3, (steps - 1) / steps, 0, 0.01))


def test_budgeted_cosine_anneals_to_the_floor_when_the_budget_runs_out():
    model = fit_tiny(BudgetedCosine(1e-3, 1000, 0, 0.01, minutes=1e-9), 4)  # 4 of 1000 steps, budget spent
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-5)


def test_budgeted_cosine_warms_up_by_steps_however_many_epochs_are_planned():
    # a budgeted recipe plans more epochs than fit, so the warmup must not shrink with the plan
    for planned in (600, 60_000):
        schedule = BudgetedCosine(1e-3, planned, warmup_steps=50, min_lr_ratio=0.01, minutes=30.0)
        assert schedule.rate(0, 0.0) == pytest.approx(1e-5)
        assert schedule.rate(25, 10.0) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
        assert schedule.rate(50, 20.0) == pytest.approx(1e-3, rel=1e-3)
        assert schedule.rate(51, 15 * 60.0) == pytest.approx(cosine_rate(1e-3, 0.5, 0, 0.01), rel=1e-3)
        assert schedule.rate(52, 30 * 60.0) == pytest.approx(1e-5)


def test_without_a_budget_the_optimizer_keeps_its_keras_schedule():
    schedule = cosine(1e-3, 10, 2, warmup_epochs=0, min_lr_ratio=0.01, max_minutes=None)
    assert schedule.callbacks == []
    optimizer = keras.optimizers.Adam(schedule.learning_rate)
    with pytest.raises(TypeError, match="LearningRateSchedule"):  # Keras' schedules are not settable
        optimizer.learning_rate = 0.1


@pytest.mark.parametrize("option, budget, kind", [
    ("constant", None, float), ("cosine", None, keras.optimizers.schedules.CosineDecay),
    ("warmup_cosine", None, keras.optimizers.schedules.CosineDecay), ("cosine", 5, float), ("plateau", None, float),
])
def test_every_schedule_option_gives_the_optimizer_its_rate(make_cfg, option, budget, kind):
    from segexp.config.instantiate import instantiate

    cfg = make_cfg("optimizer=adamw", f"optimizer/schedule={option}", f"trainer.max_minutes={budget or 'null'}")
    schedule = instantiate(cfg.optimizer.schedule)
    assert isinstance(schedule.learning_rate, kind)
    if kind is float:
        assert schedule.learning_rate == cfg.optimizer.lr
    else:  # the Keras schedule starts at the floor when it warms up, at lr when it does not
        start = float(schedule.learning_rate(0))
        assert start == pytest.approx(cfg.optimizer.lr * (0.01 if option == "warmup_cosine" else 1.0))
    callbacks = {type(c).__name__ for c in schedule.callbacks}
    assert callbacks == {"plateau": {"ReduceLROnPlateau"}}.get(option, {"BudgetedCosine"} if budget else set())
