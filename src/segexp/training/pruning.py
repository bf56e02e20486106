"""Pruning an Optuna trial from inside its training job. The sweeper (segexp.experiments.optuna_sweeper)
registers the study it runs here; the job's composition root (training.train.trial_pruning) looks it up and
adds callbacks.TrialPruning, which reports the objective every epoch and stops training when the study's
pruner says so. A leaf: no TensorFlow, no Optuna."""

from __future__ import annotations

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
