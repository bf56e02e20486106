"""Pruning an Optuna trial from inside its training job. The sweeper (segexp.experiments.optuna_sweeper)
registers the study it runs here; the job's composition root (training.train.trial_pruning) looks it up and
adds callbacks.TrialPruning, which reports the objective every epoch and stops training when the study's
pruner says so. A leaf: no TensorFlow, no Optuna."""

from __future__ import annotations

PRUNED_AT = "pruned_at_epoch"  # the trial's user attribute TrialPruning sets when it stops a job
# study name -> (the optuna.Study a sweeper in this process is running, {trial number: its optuna.Trial})
_RUNNING: dict[str, tuple[object, dict[int, object]]] = {}


def register_trials(name: str, study, trials) -> None:
    """Registers the study and the trials it just asked for under the sweeper's configured name
    (hydra.sweeper.study_name, "None" if unset: what its jobs read from their config)."""
    registered, known = _RUNNING.get(name, (None, {}))
    if registered is not study:
        known = {}
    _RUNNING[name] = (study, {**known, **{trial.number: trial for trial in trials}})


def unregister_study(name: str):
    """Forgets the study; returns it, or None if none ran under that name."""
    return _RUNNING.pop(name, (None, {}))[0]


def running_study(name: str):
    """Returns the study a sweeper in this process is running under that name, or None."""
    return _RUNNING.get(name, (None, {}))[0]


def running_trial(name: str, number: int):
    """Returns trial `number` of the study running under that name (an optuna.Trial), or None."""
    return _RUNNING.get(name, (None, {}))[1].get(number)
