"""optimizer.ema: the averaged weights are what epoch ends score and save, and a resume continues exactly."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHALLOW, TINY, compose_config
from segexp.errors import ConfigError

keras = pytest.importorskip("keras")


def toy_model(momentum: float):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=momentum), loss="mse")
    return model


def toy_data():
    rng = np.random.default_rng(0)
    x = rng.random((8, 3), np.float32)
    return x, x @ np.array([[1.0], [-2.0], [0.5]], np.float32)


class Recorder(keras.callbacks.Callback):
    """Records the model's weights after every step (the trained ones) and at every epoch end (what is saved)."""

    def __init__(self):
        super().__init__()
        self.steps, self.epoch_ends = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self.model.get_weights()[0].copy())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(self.model.get_weights()[0].copy())


def test_epoch_ends_see_the_moving_average_of_the_trained_weights():
    from segexp.training.callbacks import EmaWeights

    model, recorder, (x, y) = toy_model(0.5), Recorder(), toy_data()
    model.fit(x, y, batch_size=2, epochs=3, shuffle=False, verbose=0, callbacks=[EmaWeights(), recorder])
    average = recorder.steps[0]  # Keras' EMA: the first step's weights, then momentum * average + (1 - m) * new
    for step, weights in enumerate(recorder.steps[1:], start=2):
        average = 0.5 * average + 0.5 * weights
        if step % 4 == 0:  # 4 steps per epoch: what the epoch end saw
            np.testing.assert_allclose(recorder.epoch_ends[step // 4 - 1], average, rtol=1e-5, atol=1e-6)
    assert not np.allclose(recorder.epoch_ends[0], recorder.steps[3])  # not simply the trained weights


def test_a_run_resumed_from_an_epoch_end_save_trains_exactly_as_one_that_never_stopped(tmp_path):
    from segexp.training.callbacks import EmaWeights

    (x, y) = toy_data()
    straight = toy_model(0.5)
    straight.fit(x, y, batch_size=2, epochs=3, shuffle=False, verbose=0, callbacks=[EmaWeights()])

    first = toy_model(0.5)

    def save_then_stop_after_two(epoch, logs):  # as segexp's Checkpoints write last.keras, then a time budget ends it
        first.save(tmp_path / "last.keras")
        first.stop_training = epoch == 1

    stopper = keras.callbacks.LambdaCallback(on_epoch_end=save_then_stop_after_two)
    first.fit(x, y, batch_size=2, epochs=3, shuffle=False, verbose=0, callbacks=[EmaWeights(), stopper])
    resumed = keras.saving.load_model(tmp_path / "last.keras")
    resumed.fit(x, y, batch_size=2, epochs=3, initial_epoch=2, shuffle=False, verbose=0,
                callbacks=[EmaWeights(resumed=True)])
    np.testing.assert_allclose(resumed.get_weights()[0], straight.get_weights()[0], rtol=1e-5, atol=1e-6)


def test_ema_trains_end_to_end_and_the_saved_model_keeps_it(store, tmp_path):
    import mlflow

    from segexp.models.loading import load_model
    from segexp.training.train import train

    cfg = compose_config("train", *TINY, *SHALLOW, "data=synthetic", "data.size=48", "trainer.preview_slices=0",
                         "trainer.epochs=2", "optimizer.ema=0.9", "tracking.log_model=false", f"tracking.uri={store}")
    metrics = train(cfg, tmp_path / "run")
    assert 0 <= metrics["report_v_rand"] <= 1
    optimizer = load_model(tmp_path / "run" / "model.keras").optimizer
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.9)
    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("segexp").experiment_id])
    assert run.data.params["optimizer.ema"] == "0.9"
    card = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_card.md")
    assert "moving average of the weights (momentum 0.9) scored and saved" in card


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1"])
def test_an_ema_momentum_outside_0_1_is_refused_before_training(value):
    from segexp.checks import check_train

    with pytest.raises(ConfigError, match=r"optimizer\.ema: must be null \(off\) or in \(0, 1\)"):
        check_train(compose_config("train", *TINY, f"optimizer.ema={value}"))
