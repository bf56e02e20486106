"""Issue 13's search, with segexp's own tools: an Optuna study of budgeted trials around isbi_best, then its
winner confirmed over seeds against today's recipes by `segexp compare`.

    python -m studies.study --store DIR                          # the study, the winner over seeds 1 2 3, compare
    python -m studies.study --store DIR --reuse-training         # render what DIR holds again
    python -m studies.study --quick                              # tiny models and 2 trials: checks the script only
    python -m studies.study --study-from DIR --store DIR30 --budget-minutes 30 --name study_30
                                            # DIR's study winner (and baselines) retrained at another budget

1. The study: `segexp train -m experiment=isbi_best hparams_search=isbi_best trainer.max_minutes=B`, as a user
   would run it - TPE with median pruning, maximizing V_rand on the selection slices; one parent run.
2. The winner (the study's best unpruned trial) is retrained on fresh seeds as its own sweep.
3. `segexp compare` of the baselines (--against, each a `segexp train -m experiment=R trainer.seed=...` sweep as
   studies.replicates trains them; a sweep already in the store is reused) and the winner, on the report slices
   no choice saw: the study chose on the selection slices only, so the winner's report scores are unbiased.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from bench import common, render
from studies.levers import sweep_runs
from studies.replicates import METRICS, children, compare_table, run_compare, segexp, train_recipe
from studies.thresholds import threshold_lever, threshold_table, threshold_verdicts

NAME = "study"
TITLE = "Study: an Optuna search around isbi_best, its winner against today's recipes"
METHOD = ("`segexp train -m experiment=isbi_best hparams_search=isbi_best trainer.max_minutes=B` runs a TPE study "
          "(median pruning per epoch) maximizing V_rand on the selection slices 20-24. Its best unpruned trial's "
          "overrides are then trained as their own sweep on fresh seeds, and `segexp compare` reads that sweep and "
          "the baseline sweeps (`segexp train -m experiment=R trainer.seed=...`) from one store, paired by seed. "
          "Scores are on the report slices 25-29, which neither the study nor any checkpoint choice saw.")
STUDY_COLUMNS = ("status", "ckpt_select_v_rand", *METRICS, "epochs_run")
NOT_RECIPE = ("experiment=", "hparams_search=", "optuna_trial=", "trainer.max_minutes=", "trainer.verbose=",
              "tracking.", "debug=", "trainer.crop_size=64", "run_name=")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--trials", type=int, default=10, help="hydra.sweeper.n_trials of the study")
    parser.add_argument("--budget-minutes", type=float, default=5.0, help="trainer.max_minutes of every run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds of the winner and baselines")
    parser.add_argument("--against", nargs="+", default=["isbi_best", "seed_replica"],
                        help="baseline recipes (experiment configs); the first is A, which every other is paired with")
    parser.add_argument("--store", type=Path, default=common.REPO / "outputs" / "bench_study")
    parser.add_argument("--reuse-training", action="store_true", help="train nothing; render what --store holds")
    parser.add_argument("--study-from", type=Path, default=None,
                        help="take the winner from the study already in this store (run no study); the winner and "
                             "baselines are trained into --store at --budget-minutes")
    parser.add_argument("--name", default=NAME, help="result file stem in --out")
    parser.add_argument("--note", action="append", default=[], help="a fact about the training to print with it")
    parser.add_argument("--winner-overrides", nargs="*", default=[],
                        help="added to the winner's overrides when it is retrained (e.g. trainer.epochs=100, so a "
                             "longer budget, not isbi_best's epoch cap, ends it)")
    return parser.parse_known_args(argv)


def uri(store: Path) -> str:
    return f"sqlite:///{store / 'mlflow.db'}"


def study_command(trials: int, minutes: float, store: Path, quick: bool) -> list[str]:
    tiny = ["debug=smoke", "trainer.crop_size=64", "hydra.sweeper.sampler.n_startup_trials=1"] if quick else []
    return ["train", "-m", "experiment=isbi_best", "hparams_search=isbi_best", *tiny,
            f"hydra.sweeper.n_trials={trials}", f"trainer.max_minutes={minutes:g}", "trainer.verbose=0",
            f"tracking.uri={uri(store)}", "tracking.experiment_name=study", f"hydra.sweep.dir={store / 'sweep_study'}"]


def recorded_command(store: Path, sweep: str) -> list[str]:
    """Returns the `segexp train -m ...` arguments that ran sweep_<sweep> in store, from its parent run's tags."""
    from segexp.rundir import read_sweep_record
    from segexp.tracking.store import get_run

    sweep_dir = store / f"sweep_{sweep}"
    parent = get_run(uri(store), read_sweep_record(sweep_dir).parent_run_id)
    return ["train", "-m", *parent.overrides, f"hydra.sweep.dir={sweep_dir}"]


def recipe_of(run) -> list[str]:
    """Returns the overrides a trial chose (what it changes in isbi_best), without the study's own settings."""
    from segexp.experiments.replicates import recipe_overrides

    return [o for o in recipe_overrides(run) if not o.startswith(NOT_RECIPE)]


def winner_command(recipe: Sequence[str], seeds: Sequence[int], minutes: float, store: Path,
                   quick: bool) -> list[str]:
    tiny = ["debug=smoke", "trainer.crop_size=64"] if quick else []
    return ["train", "-m", "experiment=isbi_best", *tiny, *recipe, f"trainer.seed={','.join(map(str, seeds))}",
            f"trainer.max_minutes={minutes:g}", "trainer.verbose=0", f"tracking.uri={uri(store)}",
            "tracking.experiment_name=replicates", "run_name=study_winner", f"hydra.sweep.dir={store / 'sweep_winner'}"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from segexp.experiments.comparison import number, printed_lines
    from segexp.experiments.replicates import difference, verdict
    from segexp.experiments.sweeps import best_child

    known, rest = parse_args(argv)
    args = common.parse_args(NAME, TITLE, rest, package="studies")
    result = common.new_result(known.name, TITLE, METHOD, args, argv, {
        "trials": known.trials, "budget_minutes": known.budget_minutes, "seeds": known.seeds,
        "against": known.against, "study_from": str(known.study_from) if known.study_from else None})
    result["command"] = common.command_line(NAME, list(argv) if argv is not None else sys.argv[1:], package="studies")
    store = known.store.resolve()
    study_store = known.study_from.resolve() if known.study_from else store
    store.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    searched = study_command(known.trials, known.budget_minutes, study_store, args.quick)
    if not known.reuse_training and not known.study_from:
        shutil.rmtree(store / "sweep_study", ignore_errors=True)
        segexp(*searched)
    trials = sweep_runs(study_store, "study")
    study_minutes = float(trials[0].params.get("trainer.max_minutes", known.budget_minutes)) if trials else 0.0
    if known.study_from:  # the command that ran that study, as its parent run recorded it
        searched = recorded_command(study_store, "study")
    best = best_child(trials, "ckpt_select_v_rand", "max")
    if best is None:
        raise SystemExit(f"the study in {study_store / 'sweep_study'} has no finished, unpruned trial to confirm")
    winner = [*recipe_of(best), *known.winner_overrides]
    confirmed = winner_command(winner, known.seeds, known.budget_minutes, store, args.quick)
    if not known.reuse_training:
        shutil.rmtree(store / "sweep_winner", ignore_errors=True)
        segexp(*confirmed)
        for recipe in known.against:
            if not (store / f"sweep_{recipe}" / "sweep.json").is_file():
                train_recipe(recipe, known.seeds, known.budget_minutes, store, args.quick)
    compare_dir = store / "compare"
    sweeps = [store / f"sweep_{r}" for r in (*known.against, "winner")]
    comparison = run_compare(*map(str, sweeps), f"tracking.uri={uri(store)}", compare_dir=compare_dir)
    verdicts = printed_lines(comparison)
    for picture in ("panel.png", "curves.png"):
        if (compare_dir / picture).is_file():
            shutil.copy(compare_dir / picture, args.out / f"{known.name}_{picture}")

    def cell(run, column: str):
        if column == "status":
            return "PRUNED" if run.pruned else run.status
        return run.metrics.get(column)

    trial_rows = [[i, " ".join(recipe_of(run)), *(cell(run, c) for c in STUDY_COLUMNS),
                   "winner" if run.run_id == best.run_id else ""] for i, run in enumerate(trials)]
    confirm_rows = [[recipe, int(run.params["trainer.seed"]), *(run.metrics.get(k) for k in METRICS),
                     int(run.metrics.get("epochs_run", 0)), (run.git_commit or "?")[:10]]
                    for recipe in (*known.against, "winner") for run in children(store, recipe)]
    # the border-weighted losses shift the probabilities towards membrane: is 0.5 still the pixel threshold? And
    # once both recipes get a threshold chosen on the selection slices, which is ahead (paired by seed)?
    baseline = known.against[0]
    thresholds = threshold_lever([*children(store, baseline), *children(store, "winner")],
                                 lambda run: "winner" if run.display_name == "study_winner"
                                 else baseline)
    shifts = [f"{recipe}: {line}" for recipe in (baseline, "winner")
              for line in threshold_verdicts([r for r in thresholds if r["run"] == recipe])]
    at_chosen = {metric: difference(metric, *({("seed", r["seed"]): r[f"{metric}@chosen"] for r in thresholds
                                               if r["run"] == recipe} for recipe in (baseline, "winner")))
                 for metric in ("accuracy", "dice")}
    shifts += ["both at their chosen thresholds: " + verdict(d, baseline, "winner", metric)
               for metric, d in at_chosen.items()]
    parent = (study_store / "sweep_study" / "sweep.json").read_text()
    result.update(store=str(store), winner=winner, winner_run=best.run_id, verdicts=verdicts, comparison=comparison,
                  minutes=(time.monotonic() - started) / 60, study_record=parent, thresholds=thresholds,
                  threshold_verdicts=shifts,
                  threshold_differences={f"report_{metric}": {"diff": number(d.diff), "ci95": number(d.ci95),
                                                              "p": number(d.p)} for metric, d in at_chosen.items()})
    result["tables"] = [
        common.table(f"The study: {len(trials)} trials of {study_minutes:g} training minutes (objective: "
                     "V_rand on the selection slices; report scores shown, never used)",
                     ["trial", "overrides on isbi_best", *STUDY_COLUMNS, ""], trial_rows),
        common.table(f"The winner and the baselines over seeds ({known.budget_minutes:g} training minutes each)",
                     ["recipe", "seed", *METRICS, "epochs run", "trained at commit"], confirm_rows),
        compare_table("segexp compare (A = first baseline; differences are other - A, paired by seed)", comparison),
        threshold_table(thresholds),
    ]
    result["notes"] = [
        f"Study: `python -m segexp {' '.join(searched)}`; its parent run and summary table "
        f"(summary/children.md, summary/optuna_trials.csv) are in the store.",
        f"Winner: `{' '.join(winner)}` (trial {[t.run_id for t in trials].index(best.run_id)}, "
        f"selection V_rand "
        f"{best.metrics['ckpt_select_v_rand']:.4f}), retrained by `python -m segexp {' '.join(confirmed)}`.",
        "Baselines: `studies.replicates`' sweeps of " + ", ".join(known.against) + " in the same store (reused when "
        "present; their commit is in the table).",
        "(trained in an earlier invocation: --reuse-training)" if known.reuse_training else "One run after the other.",
        *known.note,
        *(f"`segexp compare`: {v}" for v in verdicts),
        *(f"Threshold: {v}" for v in shifts)]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
