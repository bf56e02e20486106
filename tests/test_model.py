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
    from segexp.models.metrics import segmentation_metrics
    from segexp.models.losses import SegmentationLoss

    model = build_unet(**{**TINY, "dropout": 0.3, "upsampling": upsampling, "head_filters": 2})
    model.compile(optimizer="adam", loss=SegmentationLoss(bce=1.0, dice=0.5), metrics=segmentation_metrics(0),
                  run_eagerly=True)
    x = np.random.default_rng(2).random((2, 30, 45, 1), dtype=np.float32)
    model.train_on_batch(x, (x > 0.5).astype(np.float32))
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")  # no custom_objects: all registered
    np.testing.assert_array_equal(model.predict_on_batch(x), reloaded.predict_on_batch(x))
    assert reloaded.loss.dice == 0.5
