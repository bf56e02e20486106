"""Pruning an Optuna trial from inside its training job. The sweeper (segexp.experiments.optuna_sweeper)
registers the study it runs here; the job's composition root looks it up and adds callbacks.TrialPruning,
which reports the objective every epoch and stops training when the study's pruner says so (no
TensorFlow here)."""

from __future__ import annotations

from omegaconf import DictConfig

from segexp.config.instantiate import instantiate

PRUNED_AT = "pruned_at_epoch"  # the trial's user attribute TrialPruning sets when it stops a job
_RUNNING: dict = {}  # study name -> the optuna.Study a sweeper in this process is running


def register_study(name: str, study) -> None:
    """Registers the study under the sweeper's configured name (hydra.sweeper.study_name, "None" if unset)."""
    _RUNNING[name] = study


def unregister_study(study_name: str):
    """Forgets the study; returns it, or None if none ran under that name."""
    return _RUNNING.pop(study_name, None)


def running_study(study_name: str):
    """Returns the study a sweeper in this process is running under that name, or None."""
    return _RUNNING.get(study_name)


def trial_pruning(cfg: DictConfig):
    """Returns the callbacks.TrialPruning of an Optuna sweep's job when cfg.pruner is set, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if cfg.optuna_trial is None or cfg.pruner is None or not HydraConfig.initialized():
        return None
    if HydraConfig.get().mode != RunMode.MULTIRUN:  # a trial's run resumed or reproduced on its own
        return None

    study_name = str(HydraConfig.get().sweeper.get("study_name"))
    study = running_study(study_name)
    if study is None:  # a launcher that runs jobs in other processes: see optuna_sweeper
        print(f"[segexp] trial {cfg.optuna_trial} runs unpruned: pruning needs the job in the sweeper's process "
              "(the basic launcher)", flush=True)
        return None
    from segexp.training.callbacks import TrialPruning

    study.pruner = instantiate(cfg.pruner)
    return TrialPruning(study, cfg.optuna_trial, str(cfg.objective))
