"""segexp's real pieces for the benchmarks: composed configs, data, compiled models, timed fits.

Everything is built by segexp's own code (Hydra compose of conf/, `train.prepare_data`,
`train.build_model`, `train.fit`), so the benchmarks measure what a user's run executes.
Timing keeps steady-state steps only: each timed fit call first runs `warmup` untimed steps
(iterator start, tf.data autotuning), and every model is warmed once before timing (tracing).
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any, Callable

import numpy as np

# fit(steps, callback) runs `steps` training steps reporting to callback
FitCall = Callable[[int, Any], None]
# the quick modes' model: every code path of the U-Net, the cheapest graph to trace (~2 s vs ~5 s at depth 2)
TINY_MODEL = ("model=unet_small", "model.depth=1", "model.base_filters=4", "model.batch_norm=false")


def fresh_session() -> None:
    """Clears Keras' global state, so models of an earlier benchmark in this process do not linger.

    Called before the first TensorFlow import, it also hides TF's C++ info lines (an explicit
    TF_CPP_MIN_LOG_LEVEL wins).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.backend.clear_session()


def compose(*overrides: str, config_name: str = "train"):
    """Returns conf/<config_name>.yaml composed with the overrides, as the CLI would build it."""
    from segexp.config.compose import compose as segexp_compose

    return segexp_compose(config_name, overrides)


def load_data(cfg):
    """Returns (train set, border weights or None): train.fit's inputs (validation is a callback's job)."""
    from segexp.training.build import prepare_data

    parts, weights = prepare_data(cfg)
    train_set = parts["train"]
    return train_set, weights


def build_compiled_model(cfg, train_set):
    """Returns the model of cfg compiled as train.train does (seed, dtype policy, loss, metrics, jit; `auto`
    resolved by the same speed probe and cache)."""
    import tensorflow as tf

    from segexp.config.instantiate import instantiate
    from segexp.training import runtime
    from segexp.training.build import build_model, choose_speed

    speed = choose_speed(cfg, tf.distribute.get_strategy(), train_set.channels, train_set.foreground,
                         cfg.loss.weight_map is not None)
    runtime.configure(cfg.trainer.seed, cfg.trainer.deterministic, speed.precision)
    try:
        schedule = instantiate(cfg.optimizer.schedule)
        return build_model(cfg, train_set.channels, train_set.foreground, schedule.learning_rate, speed.jit_compile)
    finally:
        runtime.configure(cfg.trainer.seed, False, "float32")  # the policy must not leak into later models


def sample_batch(cfg, train_set, weights) -> tuple[np.ndarray, np.ndarray]:
    """Returns one (images, targets) batch of augmented crops from the stream train() builds."""
    images, targets = next(iter(segexp_training_stream(cfg, train_set, weights)))
    return images.numpy(), targets.numpy()


def segexp_training_stream(cfg, train_set, weights):
    """Returns the tf.data stream train() feeds to model.fit (its augmentation pipeline and sampler)."""
    from segexp.config.instantiate import instantiate
    from segexp.training.build import training_stream

    return training_stream(cfg, train_set, weights, instantiate(cfg.aug, _convert_="all"))


def step_clock():
    """Returns a Keras callback that records the wall time at the end of every training step."""
    import keras

    class StepClock(keras.callbacks.Callback):
        # overriding on_train_batch_end keeps Keras from dispatching callbacks asynchronously
        def __init__(self):
            super().__init__()
            self.stamps: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

    return StepClock()


def seconds_per_step(fit: FitCall, steps: int, warmup: int) -> float:
    """Returns the mean wall time of `steps` steady training steps, after `warmup` (>= 1) untimed ones."""
    clock = step_clock()
    fit(warmup + steps, clock)
    if len(clock.stamps) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} training steps, the clock saw {len(clock.stamps)}")
    return (clock.stamps[-1] - clock.stamps[warmup - 1]) / steps


def segexp_fit(cfg, model, train_set, weights) -> FitCall:
    """Returns a FitCall running segexp.training.build.fit (augmented crop stream, no selection pass) for one epoch."""
    from segexp.training.build import fit

    stream = segexp_training_stream(cfg, train_set, weights)

    def run(steps: int, clock) -> None:
        run_cfg = copy.deepcopy(cfg)
        run_cfg.trainer.epochs, run_cfg.trainer.steps_per_epoch, run_cfg.trainer.verbose = 1, steps, 0
        fit(run_cfg, model, stream, [clock])

    return run


def dataset_fit(model, dataset) -> FitCall:
    """Returns a FitCall running model.fit on an endless dataset, as train.fit calls it but without validation."""
    def run(steps: int, clock) -> None:
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[clock])

    return run


def in_memory_dataset(images: np.ndarray, targets: np.ndarray):
    """Returns an endless dataset repeating one pre-made batch: the model alone, no input work."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensors((tf.constant(images), tf.constant(targets))).repeat()


def seconds_per_batch(dataset, batches: int, warmup: int) -> float:
    """Returns the mean wall time per batch of iterating `dataset` with no model, after `warmup` batches."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return (time.perf_counter() - start) / batches


def forward_flops_per_image(model, height: int, width: int) -> dict[str, Any]:
    """Returns the convolutions' forward FLOPs for one image of height x width, counted from layer shapes.

    Conv2D: 2*H_out*W_out*k*k*C_in*C_out; Conv2DTranspose: 2*H_in*W_in*k*k*C_in*C_out (each input
    pixel is scattered once per kernel tap). Batch norm, activations, pooling and the loss are
    left out: they are a few percent of the convolutions. The model is cloned onto a fixed-size
    input so every layer has a static shape.
    """
    import keras

    fixed = keras.models.clone_model(model, input_tensors=keras.Input((height, width, model.input_shape[-1]),
                                                                      batch_size=1))
    total, convs = 0, 0
    for layer in fixed.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            continue
        (_, h_in, w_in, c_in), (_, h_out, w_out, c_out) = layer.input.shape, layer.output.shape
        kh, kw = layer.kernel_size
        pixels = h_in * w_in if isinstance(layer, keras.layers.Conv2DTranspose) else h_out * w_out
        total += 2 * pixels * kh * kw * c_in * c_out
        convs += 1
    return {"forward_flops": float(total), "train_flops": 3.0 * total, "conv_layers": convs}
