"""U-Net: any input size, every model config, the seed's parameter count, save/load round trip."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hydra.utils import instantiate

from segexp.config.files import config_groups
from segexp.models.unet import build_unet

# every build_unet argument spelled out: the function holds no defaults (conf/model/*.yaml does)
TINY = dict(depth=2, base_filters=4, batch_norm=True, dropout=0.0, dropout_levels=2, upsampling="transpose",
            activation="relu", head_filters=0, channels=1)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
@pytest.mark.parametrize("size", [(37, 41), (64, 64), (1, 1), (100, 3)])
def test_output_matches_input_size_for_any_depth(depth, size):
    model = build_unet(**{**TINY, "depth": depth, "base_filters": 2})
    x = np.random.default_rng(0).random((2, *size, 1), dtype=np.float32)
    y = model.predict_on_batch(x)
    assert y.shape == (2, *size, 1)
    assert np.all((y >= 0) & (y <= 1))


@pytest.mark.parametrize("option", config_groups()["model"])
def test_every_model_config_builds_and_trains_one_step(make_cfg, option):
    cfg = make_cfg(f"model={option}", "model.base_filters=2")
    model = instantiate(cfg.model, channels=3)
    model.compile(optimizer="adam", loss="binary_crossentropy", run_eagerly=True)  # skip tracing: seconds
    x = np.random.default_rng(1).random((1, 35, 48, 3), dtype=np.float32)
    loss = model.train_on_batch(x, (x[..., :1] > 0.5).astype(np.float32))
    assert np.isfinite(loss)
    assert model.predict_on_batch(x).shape == (1, 35, 48, 1)


def test_seed_unet_has_the_seed_parameter_count(make_cfg):
    # zhixuhao/unet model.py: 31,031,685 parameters
    model = instantiate(make_cfg("model=unet").model, channels=1)
    assert model.count_params() == 31_031_685


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear", "upsample_conv"])
def test_save_and_reload_gives_identical_predictions(tmp_path, upsampling):
    from segexp.models.losses import SegmentationLoss
    from segexp.models.metrics import segmentation_metrics

    model = build_unet(**{**TINY, "dropout": 0.3, "upsampling": upsampling, "head_filters": 2})
    model.compile(optimizer="adam", loss=SegmentationLoss(bce=1.0, dice=0.5), metrics=segmentation_metrics(0),
                  run_eagerly=True)
    x = np.random.default_rng(2).random((2, 30, 45, 1), dtype=np.float32)
    model.train_on_batch(x, (x > 0.5).astype(np.float32))
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")  # no custom_objects: all registered
    np.testing.assert_array_equal(model.predict_on_batch(x), reloaded.predict_on_batch(x))
    assert reloaded.loss.dice == 0.5


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_trains_as_keras_batch_norm_does(policy):
    """The fused kernel is a speed change only: the same outputs, moving statistics and gradients as Keras'
    BatchNormalization (to float rounding), and inference is Keras' own code path, bit for bit."""
    import tensorflow as tf

    from segexp.models.unet import FusedBatchNormalization

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(2.0, 3.0, (4, 24, 20, 8)), dtype=keras.mixed_precision.global_policy().compute_dtype)
        probe = tf.constant(rng.normal(size=x.shape), tf.float32)  # a loss whose gradient the normalization keeps
        plain, fused = keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)
        for layer in (plain, fused):
            layer.build(x.shape)
        plain.set_weights([np.full(w.shape, 0.5 + i, np.float32) for i, w in enumerate(plain.get_weights())])
        fused.set_weights(plain.get_weights())
        gradients, outputs = [], []
        for layer in (plain, fused):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * probe)
            outputs.append(tf.cast(y, tf.float32).numpy())
            gradients.append([tf.cast(g, tf.float32).numpy() for g in tape.gradient(loss, [x, layer.gamma, layer.beta])])
        assert outputs[1].dtype == outputs[0].dtype and fused(x).dtype == x.dtype
        ulp = 1e-5 if policy == "float32" else 2 ** -7  # bf16 keeps 8 bits of mantissa
        np.testing.assert_allclose(outputs[1], outputs[0], atol=ulp * np.abs(outputs[0]).max())
        for a, b in zip(plain.get_weights(), fused.get_weights()):  # gamma, beta, moving mean, moving variance
            np.testing.assert_allclose(b, a, rtol=1e-5)
        for a, b in zip(*gradients):
            np.testing.assert_allclose(b, a, atol=ulp * 4 * np.abs(a).max())
        fused.set_weights(plain.get_weights())  # the moving statistics agreed to rounding; inference is Keras' code
        np.testing.assert_array_equal(fused(x, training=False).numpy(), plain(x, training=False).numpy())
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_a_run_saved_before_fused_batch_norm_resumes_with_keras_batch_norm_as_it_trained(tmp_path):
    from omegaconf import OmegaConf

    from conftest import TINY, compose_config
    from segexp.config.schema import TrainConfig
    from segexp.rundir import RunDir
    from segexp.training.resume import resumed_config

    assert compose_config("train", *TINY).model.fused_batch_norm is True  # a new run: the fused kernel
    old = OmegaConf.to_container(compose_config("train", *TINY))
    del old["model"]["fused_batch_norm"]  # what a config.yaml written before the key existed lacks
    (tmp_path / "run").mkdir()
    OmegaConf.save(OmegaConf.create(old), tmp_path / "run" / "config.yaml")
    cfg = resumed_config(RunDir(tmp_path / "run"), OmegaConf.structured(TrainConfig), [])
    assert cfg.model.fused_batch_norm is False
    model = instantiate(cfg.model, channels=1)
    assert {type(layer).__name__ for layer in model.layers if "bn" in layer.name} == {"BatchNormalization"}
