"""Every option of every config group composes, validates and builds; bad config fails early."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf.errors import ConfigKeyError, ValidationError

from segexp.__main__ import config_groups
from segexp.errors import ConfigError
from segexp.schema import validate

OPTIONS = [(g, o) for g, opts in config_groups().items() for o in opts if g not in ("hparams_search",)]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(make_cfg, group, option, folder_data):
    extra = [f"data.images={folder_data[0]}", f"data.masks={folder_data[1]}"] if (group, option) == ("data", "folder") else []
    cfg = make_cfg(f"{group}={option}", *extra)
    validate(cfg)
    if group not in ("experiment", "debug"):  # those are global recipes, not a key of their own
        assert cfg[group] is not None


@pytest.mark.parametrize("option", config_groups()["aug"])
def test_every_aug_recipe_instantiates(make_cfg, option):
    from segexp.augment import build_transform

    compose = build_transform(make_cfg(f"aug={option}").aug.transforms)
    assert len(compose.transforms) == len(make_cfg(f"aug={option}").aug.transforms)


@pytest.mark.parametrize("option", config_groups()["optimizer"])
def test_every_optimizer_instantiates(make_cfg, option):
    cfg = make_cfg(f"optimizer={option}")
    optimizer = instantiate(cfg.optimizer, steps_per_epoch=10, epochs=3)
    assert optimizer.__class__.__name__.lower() == cfg.optimizer.name


def test_misspelled_key_fails_at_composition(make_cfg):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        make_cfg("optimizer.lrr=0.1")
    assert "lrr" in str(err.value) or "lrr" in str(err.value.__cause__)


def test_wrong_type_fails_at_composition(make_cfg):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        make_cfg("trainer.epochs=many")


def test_unknown_option_lists_the_choices(make_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("model=resnet")
    assert "unet_small" in str(err.value)


@pytest.mark.parametrize("override,key", [
    ("optimizer.lr=0", "optimizer.lr"), ("optimizer.lr=-1e-3", "optimizer.lr"),
    ("trainer.epochs=0", "trainer.epochs"), ("model.depth=0", "model.depth"),
    ("trainer.batch_size=0", "trainer.batch_size"), ("model.dropout=1.0", "model.dropout"),
    ("model.dropout=-0.1", "model.dropout"), ("model.upsampling=pixelshuffle", "model.upsampling"),
    ("optimizer.schedule=linear", "optimizer.schedule"), ("trainer.precision=fp8", "trainer.precision"),
    ("trainer.topology_metrics=false", "trainer.monitor"), ("data.resize=[0,5]", "data.resize"),
])
def test_invalid_values_name_the_key(make_cfg, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(make_cfg(override))


def test_help_and_cfg_do_not_import_tensorflow():
    code = ("import sys; from segexp.__main__ import main\n"
            "try:\n    main(['train', '--cfg', 'job', 'model=unet'])\nexcept SystemExit: pass\n"
            "main(['--help'])\n"
            "assert 'tensorflow' not in sys.modules and 'mlflow' not in sys.modules, 'heavy import'\n"
            "print('CLEAN')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "CLEAN" in out.stdout, out.stderr
    assert "base_filters: 64" in out.stdout  # model=unet was composed
    assert "config groups" in out.stdout and "unet_small" in out.stdout
