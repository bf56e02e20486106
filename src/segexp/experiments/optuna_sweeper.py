"""The Optuna sweeper with pruning and a study that continues (hparams_search=optuna; the class Hydra
loads is hydra_plugins.segexp_sweeper.pruning_optuna_sweeper.PruningOptunaSweeper).

hydra-optuna-sweeper asks Optuna for trials, launches them as jobs and tells Optuna each job's return
value; the job never sees its trial, so it cannot report intermediate values and nothing is pruned
(Hydra #1710, #1954). This subclass keeps the plugin and adds:

- each job gets `optuna_trial=<number>` and finds the running study in this process (segexp.training.pruning):
  `callbacks.TrialPruning` reports the objective every epoch, asks the pruner and stops training when
  it says so, recording `pruned_at_epoch` on the trial, and the study's `tell` then records PRUNED
  (Optuna refuses a second tell had the job finished the trial itself);
- a resumed sweep (`segexp train -m resume=<sweep dir>`) continues the study from the sweep's MLflow
  children - their parameters, per-epoch objective and final value, pruned or complete - so the
  sampler and the pruner know the earlier trials and only the missing trials run.

Why not Optuna's own database storage: optuna 2.10, the newest the plugin allows, cannot write a
sqlite storage under SQLAlchemy 2 ("database is locked"; MLflow 3 needs SQLAlchemy 2). So the study
lives in the driver's memory, MLflow is its durable record, and pruning needs the jobs in the driver's
process (the basic launcher, the default); a job launched elsewhere (joblib, submitit, ray) runs unpruned
and says so.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, List, Mapping, Sequence

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntLogUniformDistribution,
    IntUniformDistribution,
)
from optuna.trial import TrialState

from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from segexp.tracking.records import RunRecord
from segexp.training.pruning import PRUNED_AT, register_trials, running_study, unregister_study

log = logging.getLogger(__name__)


def prune_aware_tell(study: optuna.Study):
    """Returns study.tell, except that a trial whose job was pruned is told PRUNED, whatever it returned.

    The plugin calls study.tell(trial=..., state=..., values=...) itself once a job returns (see
    tests/test_optuna_plugin.py, which fails if it stops doing so), with no hook to change the state: the
    study it runs gets this function as its `tell`."""
    tell = study.tell

    def told(trial, state: TrialState = TrialState.COMPLETE, values=None):
        attrs = trial.user_attrs if isinstance(trial, optuna.trial.Trial) else study.trials[trial].user_attrs
        if state == TrialState.COMPLETE and PRUNED_AT in attrs:
            return tell(trial, state=TrialState.PRUNED)
        return tell(trial, state=state, values=values)
    return told


def typed_value(text: str, distribution: BaseDistribution) -> Any:
    """Returns an MLflow param string as the value the distribution holds (MLflow stores params as text)."""
    if isinstance(distribution, CategoricalDistribution):
        return next(c for c in distribution.choices if str(c) == text)
    if isinstance(distribution, (IntUniformDistribution, IntLogUniformDistribution)):
        return int(text)
    return float(text)


def earlier_trial(run: RunRecord, distributions: Mapping[str, BaseDistribution], objective_key: str,
                  history: Sequence[tuple[int, float]]) -> optuna.trial.FrozenTrial | None:
    """Returns the finished trial an MLflow child run records (COMPLETE, or PRUNED if tagged so), or None
    if it cannot be one (not finished, or a value outside today's search space). The values are read from
    the job's overrides tag, as the sweeper wrote them: a config group (loss=dice) is no MLflow param."""
    value = run.metrics.get(objective_key)
    if not run.finished or value is None or not math.isfinite(value):
        return None
    given = dict(o.split("=", 1) for o in run.overrides if "=" in o)
    pruned = run.pruned
    steps = {step: v for step, v in history if math.isfinite(v)}
    try:
        chosen = {name: typed_value(given[name], d) for name, d in distributions.items()}
        return optuna.trial.create_trial(params=chosen, distributions=dict(distributions),
                                         value=None if pruned else value, intermediate_values=steps,
                                         state=TrialState.PRUNED if pruned else TrialState.COMPLETE)
    except (KeyError, StopIteration, ValueError):  # not in today's search space (optuna raises ValueError)
        return None


class PruningOptunaSweeperImpl(OptunaSweeperImpl):
    restored = 0  # trials a resumed sweep took over from its MLflow children

    @property
    def registry_name(self) -> str:
        """The study's name as the jobs read it from their config (hydra.sweeper.study_name, "None" if unset)."""
        return str(self.config.hydra.sweeper.get("study_name")) if self.config is not None else str(self.study_name)

    # _configure_trials is the plugin's own step from the trials it asked to the jobs' overrides (a method
    # of its implementation, no public hook): the one place that sees both, so each job gets its trial number
    # and the trial waits for it in the registry (tests/test_optuna_plugin.py fails if the plugin changes it)
    def _configure_trials(self, trials: List[Any], search_space_distributions, fixed_params) -> Sequence[Sequence[str]]:
        study = trials[0].study
        if running_study(self.registry_name) is not study:
            study.tell = prune_aware_tell(study)
        register_trials(self.registry_name, study, trials)
        return [(*o, f"optuna_trial={trial.number}") for o, trial in
                zip(super()._configure_trials(trials, search_space_distributions, fixed_params), trials)]

    def sweep(self, arguments: List[str]) -> None:
        if self.config is not None:  # as Hydra's basic sweeper does: what `resume=<sweep dir>` reads back
            from omegaconf import OmegaConf

            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        try:
            if self.config is not None and self.config.get("resume_sweep"):
                self._continue(arguments)
                if self.n_trials == 0:
                    log.info("Every trial of the study is done; nothing to run")
                    return
            super().sweep(arguments)
        finally:
            study = unregister_study(self.registry_name)
            if study is not None and self.config is not None:  # the study's own record, beside MLflow's
                from segexp.experiments.sweeps import OPTUNA_TRIALS

                trials = Path(str(self.config.hydra.sweep.dir)) / OPTUNA_TRIALS
                study.trials_dataframe(attrs=("number", "params", "state", "value", "intermediate_values",
                                              "user_attrs")).to_csv(trials, index=False)

    def _continue(self, arguments: List[str]) -> None:
        """Adds the sweep's finished MLflow children to the study as its earlier trials; fewer trials to go."""
        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
        from segexp.experiments.sweeps import objective_metric
        from segexp.rundir import read_sweep_record
        from segexp.tracking import sweeps
        from segexp.tracking.store import metric_history, resolve_uri

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        record = read_sweep_record(sweep_dir)
        if record is None or not self.config.tracking.get("_target_", "").endswith("MlflowTracker"):
            return
        uri = resolve_uri(self.config.tracking.uri)
        self._process_searchspace_config()
        distributions = dict(self.search_space_distributions or {})
        distributions.update(create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])[0])
        key, _ = objective_metric(self.config)
        children = sweeps.child_runs(uri, record.parent_run_id)
        earlier = [trial for run in children
                   if (trial := earlier_trial(run, distributions, key,
                                              metric_history(uri, run.run_id, self.config.objective)))]
        unfinished = [run for run in children if not run.finished]
        sweeps.delete_runs(uri, unfinished)  # killed or failed trials run again: one child per trial
        self.restored = len(earlier)
        if hasattr(self.sampler, "reseed_rng"):  # a seeded sampler would propose the earlier trials again
            self.sampler.reseed_rng()
        # the plugin creates its study in sweep() from self.storage with load_if_exists=True: a storage that
        # already holds a study of that name, with the earlier trials, is loaded and continued
        if self.storage is None:
            self.study_name = self.study_name or f"segexp-{sweep_dir.name}"
            self.storage = optuna.storages.InMemoryStorage()
            study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                        directions=self._get_directions())
            for trial in earlier:
                study.add_trial(trial)
        else:  # a storage of the user's own holds the study and its trials already
            log.info(f"Study {self.study_name} continues from hydra.sweeper.storage={self.storage}")
        self.n_trials = max(self.n_trials - len(earlier), 0)
        self.job_idx = max((int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                           default=-1) + 1  # new jobs get new directories
        log.info(f"Study {self.study_name}: {len(earlier)} trials already done (from the sweep's MLflow runs); "
                 f"{self.n_trials} to run" + (f"; {len(unfinished)} unfinished trial runs removed" if unfinished else "")
                 + (f"; {len(children) - len(earlier) - len(unfinished)} finished runs outside today's search space "
                    "not counted" if len(children) - len(earlier) - len(unfinished) else ""))
