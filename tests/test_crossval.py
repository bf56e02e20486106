"""Which sweeps `segexp evaluate` scores fold by fold (segexp.commands.crossval), from run folders' saved
configs alone; the fold-by-fold scores themselves are tested on a trained sweep in test_compare.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from segexp.errors import ConfigError
from segexp.commands.crossval import fold_indices
from segexp.rundir import ModelSource, RunDir


def source(tmp_path: Path, data: list[dict]) -> ModelSource:
    """A sweep of jobs whose saved configs hold `data` (one dict per job)."""
    members = []
    for i, node in enumerate(data):
        run = RunDir(tmp_path / str(i))
        run.path.mkdir()
        OmegaConf.save(OmegaConf.create({"data": node}), run.config_file)
        members.append((run.path / "model.keras", run))
    return ModelSource(tuple(members), "parent")


def test_the_folds_of_one_cross_validation_are_scored_fold_by_fold(tmp_path):
    sweep = source(tmp_path, [{"folds": 6, "fold": i} for i in (2, 0, 5)])
    assert fold_indices(sweep, "SWEEP") == [2, 0, 5]


@pytest.mark.parametrize("data", [[{"folds": None, "fold": None}] * 2,  # seeds: one report block, an ensemble
                                  [{"folds": 6, "fold": 0}, {"folds": 5, "fold": 1}]])  # two cross-validations
def test_other_sweeps_stay_ensembles(tmp_path, data):
    assert fold_indices(source(tmp_path, data), "SWEEP") is None


def test_a_fold_trained_twice_is_refused_naming_it(tmp_path):
    sweep = source(tmp_path, [{"folds": 3, "fold": i} for i in (0, 1, 1, 2, 2)])
    with pytest.raises(ConfigError, match=r"ckpt=SWEEP: the sweep trained fold\(s\) \[1, 2\] more than once"):
        fold_indices(sweep, "SWEEP")


def test_a_single_checkpoint_is_not_a_cross_validation(tmp_path):
    assert fold_indices(ModelSource(source(tmp_path, [{"folds": 3, "fold": 0}]).members), "RUN") is None


def test_naming_slices_of_a_cross_validation_is_refused_before_any_model_loads(tmp_path):
    from segexp.config.compose import compose
    from segexp.commands.crossval import evaluate_folds

    sweep = source(tmp_path, [{"folds": 3, "fold": i} for i in range(3)])  # no model.keras: nothing could load
    cfg = compose("evaluate", [f"ckpt={tmp_path}", "slices=[0,1]"])
    with pytest.raises(ConfigError, match="slices: a cross-validation scores every fold's own report block"):
        evaluate_folds(cfg, sweep, [0, 1, 2], tmp_path / "out")
    assert not (tmp_path / "out").exists()
