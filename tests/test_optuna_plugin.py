"""What segexp's Optuna sweeper relies on in hydra-optuna-sweeper and Optuna beyond their documented API,
checked against the installed versions, so an upgrade that changes it fails here, by name, rather than as
a sweep that silently stops pruning or forgets its earlier trials (segexp.experiments.optuna_sweeper)."""

from __future__ import annotations

import inspect

import optuna

from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from segexp.experiments.optuna_sweeper import prune_aware_tell
from segexp.training.pruning import PRUNED_AT, register_trials, running_study, running_trial, unregister_study


def sweep_source() -> str:
    return inspect.getsource(OptunaSweeperImpl.sweep)


def test_the_plugin_loads_its_study_from_self_storage_so_a_resumed_sweep_can_hand_it_the_earlier_trials():
    source = " ".join(sweep_source().split())
    assert "optuna.create_study( study_name=self.study_name, storage=self.storage," in source
    assert "load_if_exists=True" in source
    storage = optuna.storages.InMemoryStorage()  # and Optuna loads a study a storage already holds
    first = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    first.add_trial(optuna.trial.create_trial(params={"x": 1.0}, value=0.5,
                                              distributions={"x": optuna.distributions.UniformDistribution(0, 2)}))
    again = optuna.create_study(study_name="s", storage=storage, direction="maximize", load_if_exists=True)
    assert [t.value for t in again.trials] == [0.5]


def test_the_plugin_hands_the_asked_trials_to_configure_trials_and_tells_each_one_itself():
    source = sweep_source()
    assert "study.ask()" in source and "self._configure_trials(" in source
    assert "study.tell(trial=trial, state=state, values=values)" in source
    assert list(inspect.signature(OptunaSweeperImpl._configure_trials).parameters) == [
        "self", "trials", "search_space_distributions", "fixed_params"]


def test_a_pruned_job_is_told_pruned_and_the_registry_hands_jobs_their_trial():
    study = optuna.create_study(direction="maximize")
    study.tell = prune_aware_tell(study)
    pruned, finished = study.ask(), study.ask()
    register_trials("t", study, [pruned, finished])
    assert running_study("t") is study and running_trial("t", pruned.number) is pruned
    pruned.set_user_attr(PRUNED_AT, 2)  # as callbacks.TrialPruning does when the pruner stops a job
    study.tell(trial=pruned, state=optuna.trial.TrialState.COMPLETE, values=[0.3])
    study.tell(trial=finished, state=optuna.trial.TrialState.COMPLETE, values=[0.4])
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert unregister_study("t") is study and running_trial("t", 0) is None
