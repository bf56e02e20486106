"""Is one recipe really better than another? Each recipe trained over several seeds (a `segexp train -m
... trainer.seed=...` sweep per recipe, as a user would run it), then `segexp compare` of the sweeps:

    python -m studies.replicates                                 # isbi_best vs seed_replica, 3 seeds, 5 min each
    python -m studies.replicates --budget-minutes 30 --seeds 1 2 3 4 5 6
    python -m studies.replicates --reuse-training                # compare the sweeps already in --store again
    python -m studies.replicates --quick                         # debug=smoke recipes: seconds, numbers are noise
    python -m studies.replicates --recipes isbi_best "isbi_best model.base_filters=32" --train-missing
                                                                 # a recipe with overrides beside a sweep already
                                                                 # in --store (only the missing one trains)

The store (sqlite + artifacts) stays in --store, outside git; the comparison's report, panel and
curves are copied to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from bench import common, render

NAME = "replicates"
TITLE = "Replicates: isbi_best vs seed_replica over seeds, by segexp compare"
METHOD = ("Each recipe is one `segexp train -m experiment=R trainer.seed=...` sweep at the same wall-clock budget "
          "(trainer.max_minutes), run one after the other on this machine; `segexp compare` then reads both sweeps "
          "from the tracking store alone and gives per metric each recipe's mean ± std [95% CI] and the paired "
          "difference (by seed) with its 95% CI and a paired t-test. Scores are on the report slices 25-29, which "
          "no choice saw (checkpoints were chosen on 20-24).")
METRICS = ("report_v_rand", "report_v_info", "report_dice", "report_accuracy")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--recipes", nargs="+", default=["seed_replica", "isbi_best"],
                        help="experiment configs, each optionally followed by overrides in the same quoted word "
                             "(\"isbi_best model.base_filters=32\"); the first is the baseline A")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--budget-minutes", type=float, default=5.0, help="trainer.max_minutes of every run")
    parser.add_argument("--store", type=Path, default=common.REPO / "outputs" / "bench_replicates")
    parser.add_argument("--reuse-training", action="store_true", help="compare the sweeps already in --store")
    parser.add_argument("--train-missing", action="store_true",
                        help="train only the recipes without a finished sweep in --store (a study over sessions)")
    parser.add_argument("--name", default=NAME, help="result file stem in --out")
    parser.add_argument("--note", action="append", default=[], help="a fact about the training to print with it")
    known, rest = parser.parse_known_args(argv)
    return known, rest


def segexp(*args: str) -> str:
    """Runs the segexp CLI from the repository root; returns its stdout (raises on failure)."""
    command = [sys.executable, "-m", "segexp", *args]
    common.log(" ".join(command[1:]))
    out = subprocess.run(command, cwd=common.REPO, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def recipe_name(recipe: str) -> str:
    """Returns the recipe as one word for its run and directory names (isbi_best_model.base_filters-32): anything
    but letters, digits, '.', '_' and '-' becomes '-', so that Hydra's override grammar takes the word as it is."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", "_".join(recipe.split()))


def sweep_dir(store: Path, recipe: str) -> Path:
    return store / f"sweep_{recipe_name(recipe)}"


def seed_of(run) -> int | None:
    """Returns the run's trainer.seed; None for a job that failed before its own run logged its params."""
    seed = run.params.get("trainer.seed")
    return int(seed) if seed is not None else None


def stored_sweep(store: Path, recipe: str, seeds: Sequence[int], minutes: float, quick: bool) -> str:
    """Returns "missing", "finished" (a FINISHED run for every seed) or "unfinished" for the recipe's sweep in the
    store; stops when that sweep trained at another budget or mode, whose runs must not pass for this study's."""
    if not (sweep_dir(store, recipe) / "sweep.json").is_file():
        return "missing"
    runs = children(store, recipe)
    for run in runs:
        budget = run.params.get("trainer.max_minutes")
        ran_quick = "debug=smoke" in run.overrides
        if budget is not None and (float(budget) != minutes or ran_quick != quick):
            raise SystemExit(f"{sweep_dir(store, recipe)}: its runs trained {float(budget):g} minutes"
                             f"{' (--quick)' if ran_quick else ''}, not {minutes:g}{' (--quick)' if quick else ''}; "
                             "give another --store, or this study the same --budget-minutes")
    done = {seed_of(run) for run in runs if run.finished}
    return "finished" if set(seeds) <= done else "unfinished"


def train_recipe(recipe: str, seeds: Sequence[int], minutes: float, store: Path, quick: bool) -> None:
    experiment, *overrides = recipe.split()
    directory = sweep_dir(store, recipe)
    shutil.rmtree(directory, ignore_errors=True)
    tiny = ["debug=smoke", "trainer.crop_size=64"] if quick else []
    segexp("train", "-m", f"experiment={experiment}", *tiny, *overrides, f"trainer.seed={','.join(map(str, seeds))}",
           f"trainer.max_minutes={minutes:g}", "trainer.verbose=0", f"tracking.uri=sqlite:///{store / 'mlflow.db'}",
           "tracking.experiment_name=replicates", f"run_name={recipe_name(recipe)}",
           f"hydra.sweep.dir={directory}")


def children(store: Path, recipe: str, seeds: Sequence[int] | None = None) -> list:
    """Returns the recipe's sweep's child runs by seed (only `seeds`' if given; never a job that logged no seed)."""
    from segexp.tracking.sweeps import child_runs

    parent = json.loads((sweep_dir(store, recipe) / "sweep.json").read_text())["parent_run_id"]
    runs = [r for r in child_runs(f"sqlite:///{store / 'mlflow.db'}", parent)
            if seed_of(r) is not None and (seeds is None or seed_of(r) in seeds)]
    return sorted(runs, key=seed_of)


def run_compare(*args: str, compare_dir: Path) -> dict[str, Any]:
    """Runs `segexp compare ARGS` into compare_dir (emptied first); returns the comparison it wrote as data
    (comparison.json, segexp.experiments.comparison), never its printed prose."""
    from segexp.experiments.comparison import read_comparison

    shutil.rmtree(compare_dir, ignore_errors=True)
    segexp("compare", *args, f"hydra.run.dir={compare_dir}")
    return read_comparison(compare_dir)


def compare_table(title: str, comparison: dict[str, Any], metrics: str = "report_") -> dict[str, Any]:
    """Returns the result table of a comparison's differences in the metrics that start with `metrics`, as its
    report shows them."""
    from segexp.experiments.comparison import COLUMNS, table_rows

    return common.table(title, COLUMNS, table_rows(comparison, metrics))


def spread(values: Sequence[float]) -> list[float]:
    """Returns [mean, sample std (0 for one value), min, max]."""
    import statistics

    return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, min(values), max(values)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from studies.thresholds import threshold_lever

    known, rest = parse_args(argv)
    title = TITLE if known.recipes == ["seed_replica", "isbi_best"] else \
        f"Replicates: {' vs '.join(known.recipes)} over seeds, {known.budget_minutes:g} training minutes each"
    args = common.parse_args(known.name, title, rest, package="studies")
    result = common.new_result(known.name, title, METHOD, args, argv, {
        "recipes": known.recipes, "seeds": known.seeds, "budget_minutes": known.budget_minutes})
    result["command"] = common.command_line(NAME, list(argv) if argv is not None else sys.argv[1:], package="studies")
    store = known.store.resolve()
    store.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)  # the compare's pictures are copied into it before the results
    started = time.monotonic()
    if not known.reuse_training:
        for recipe in known.recipes:
            stored = stored_sweep(store, recipe, known.seeds, known.budget_minutes, args.quick) \
                if known.train_missing else "missing"
            if stored == "finished":
                common.log(f"{recipe}: every seed already in {store}, not trained again")
            elif stored == "unfinished":  # finished jobs are kept, the others run again
                segexp("train", "-m", f"resume={sweep_dir(store, recipe)}")
            else:
                train_recipe(recipe, known.seeds, known.budget_minutes, store, args.quick)
    compare_dir = store / "compare"
    shutil.rmtree(compare_dir, ignore_errors=True)
    verdicts, comparison, data = [], None, None
    if len(known.recipes) > 1:  # one recipe: its runs and spread alone, nothing to compare it with
        from segexp.experiments.comparison import printed_lines

        data = run_compare(*(str(sweep_dir(store, r)) for r in known.recipes),
                           f"tracking.uri=sqlite:///{store / 'mlflow.db'}", compare_dir=compare_dir)
        verdicts = printed_lines(data)
        comparison = compare_table("segexp compare (A = first recipe; differences are B - A, paired by seed)", data)

    rows = []
    for recipe in known.recipes:
        for run in children(store, recipe, known.seeds):
            m = run.metrics
            rows.append([recipe, int(run.params["trainer.seed"]), *(m.get(k) for k in METRICS),
                         int(m.get("epochs_run", 0)), int(m.get("checkpoint_epoch", -1)) + 1, m.get("train_minutes"),
                         (run.git_commit or "?")[:10]])
    for picture in ("panel.png", "curves.png"):
        if (compare_dir / picture).is_file():
            shutil.copy(compare_dir / picture, args.out / f"{known.name}_{picture}")
    runs = [run for recipe in known.recipes for run in children(store, recipe, known.seeds)]
    thresholds = threshold_lever(runs, lambda run: run.display_name)
    result.update(recipes=known.recipes, seeds=known.seeds, budget_minutes=known.budget_minutes,
                  store=str(store), verdicts=verdicts, comparison=data, training_minutes=(time.monotonic() - started) / 60)
    result["tables"] = [
        common.table(f"Each run ({known.budget_minutes:g} training minutes)",
                     ["recipe", "seed", *METRICS, "epochs run", "checkpoint epoch", "train minutes",
                      "trained at commit"], rows),
        *([comparison] if comparison else []),
        common.table("Mean and spread over seeds", ["recipe", "metric", "mean", "std", "min", "max"],
                     [[recipe, metric, *spread([r[2 + i] for r in rows if r[0] == recipe])]
                      for recipe in known.recipes for i, metric in enumerate(METRICS)]),
        common.table("Pixel threshold chosen on the selection slices (best accuracy) vs 0.5, report slices",
                     ["run", "seed", "threshold", "accuracy @0.5", "accuracy @chosen", "dice @0.5", "dice @chosen"],
                     [[r["run"], r["seed"], r["threshold"], r["accuracy@0.5"], r["accuracy@chosen"], r["dice@0.5"],
                       r["dice@chosen"]] for r in thresholds]),
    ]
    result["thresholds"] = thresholds
    trained_by = (f"python -m segexp train -m experiment=<recipe> trainer.seed={','.join(map(str, known.seeds))} "
                  f"trainer.max_minutes={known.budget_minutes:g} tracking.uri=sqlite:///<store>/mlflow.db "
                  "tracking.experiment_name=replicates run_name=<recipe> hydra.sweep.dir=<store>/sweep_<recipe>")
    result["notes"] = [f"Each recipe trained by `{trained_by}` (a recipe's overrides follow its experiment), one "
                       "recipe after the other"
                       + (" (in an earlier invocation: --reuse-training)" if known.reuse_training else "")
                       + (" (recipes already in the store were not trained again: --train-missing)"
                          if known.train_missing else "") + ".",
                       *known.note,
                       *(f"`segexp compare`: {v}" for v in verdicts),
                       *([f"Pictures: bench/results/{known.name}_panel.png (the same report slices, image | truth | "
                          f"each recipe | where they disagree) and bench/results/{known.name}_curves.png (learning "
                          "curves)."] if comparison else []),
                       "Threshold: the pixel threshold with the best accuracy on the selection slices (0.05 steps), "
                       "re-predicted from each checkpoint as `segexp evaluate` predicts, applied to the report slices."]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
