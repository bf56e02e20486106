"""Segmentation quality of whole recipes, trained as a user would and scored on slices no choice saw.

    python -m studies.quality                                # seed_replica vs isbi_best, 30 minutes each
    python -m studies.quality --name quality_default --recipes default --budget-minutes 0   # `segexp train` as shipped
    python -m studies.quality --quick                        # seconds: checks the script end to end
    python -m studies.quality --reuse-training               # score the checkpoints of an earlier run again

For each recipe: `segexp train [experiment=<recipe>] [trainer.max_minutes=<budget>]` (the default
split: train on slices 0-19, choose the checkpoint by V_rand on 20-24), then `segexp evaluate --multirun
inference.tta=false,true` on that checkpoint (both jobs in one fresh process: one TensorFlow import), which
scores the run's report slices 25-29, without and with 8-way TTA. Writes bench/results/<name>.{json,md}
and a learning curve per recipe (each selection metric vs training minutes, from the MLflow store) as PNG,
also logged to the run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench import common, render

CURVE_METRICS = ("select_v_rand", "select_v_info", "select_dice", "select_accuracy")
QUICK = ["model.depth=1", "model.batch_norm=false", "model.base_filters=4", "trainer.epochs=1",
         "trainer.steps_per_epoch=2",
         "trainer.crop_size=64", "trainer.batch_size=2", "tracking.log_model=false", "trainer.preview_slices=0",
         "split.select=[-2]", "split.report=[-1]",
         "trainer.precision=float32", "trainer.jit_compile=false"]
QUICK_EVAL = ["inference.tile=128", "inference.overlap=16"]
EXPERIMENT = "bench_quality"
TITLE = "Segmentation quality: whole recipes, scored on report slices no choice saw"
METHOD = ("Each recipe trained by `segexp train` in a fresh process on the default split (train 0-19, checkpoint "
          "chosen by select_v_rand on 20-24), then `segexp evaluate` on that checkpoint (one process, two jobs: "
          "without and with TTA), scoring the run's report slices "
          "25-29 (V_rand/V_info: the Fiji reference conventions, averaged per slice, best over the reference's 11 thresholds 0.0, 0.1, ..., 0.9 and 0.9999999999999999; "
          "Dice/accuracy at 0.5), without and with 8-way TTA. `select_v_rand` is the checkpoint's score on the "
          "slices that chose it: optimistic, shown only to compare with the report.")


def segexp(*args: str) -> None:
    """Runs a segexp command in a fresh process (as a user would), failing loudly."""
    subprocess.run([sys.executable, "-m", "segexp", *args], check=True, cwd=common.REPO)


def recipe_overrides(recipe: str, budget: float) -> list[str]:
    """Returns the overrides that select `recipe` ("default": none) and impose the budget (0: as shipped)."""
    return ([] if recipe == "default" else [f"experiment={recipe}"]) + \
        ([f"trainer.max_minutes={budget:g}"] if budget > 0 else [])


def train_recipe(recipe: str, budget: float, workdir: Path, store: str, extra: list[str]) -> None:
    segexp("train", *recipe_overrides(recipe, budget), f"hydra.run.dir={workdir}", f"tracking.uri={store}",
           f"tracking.experiment_name={EXPERIMENT}", "trainer.verbose=2", f"run_name={recipe}", *extra)


def evaluate_checkpoint(workdir: Path, store: str, extra: list[str]) -> tuple[dict, dict]:
    """Scores the run's chosen checkpoint on its report slices without and with TTA, by `segexp evaluate --multirun
    ckpt=<workdir> inference.tta=false,true` as a user would run it: its own process (Hydra in this one would
    reconfigure the caller's logging), one for both jobs (one TensorFlow import). Returns both metrics.json."""
    out = workdir / "eval"
    segexp("evaluate", "--multirun", f"ckpt={workdir}", "inference.tta=false,true", f"tracking.uri={store}",
           f"tracking.experiment_name={EXPERIMENT}", f"hydra.sweep.dir={out}",
           "hydra.sweep.subdir=tta_${inference.tta}", *extra)
    # each job's folder names its inference.tta as OmegaConf prints a bool
    return tuple(json.loads((out / f"tta_{tta}" / "metrics.json").read_text()) for tta in (False, True))


def training_run(store: str, workdir: Path):
    """Returns the MLflow run that trained in `workdir` (the newest, if it was trained more than once)."""
    from segexp.tracking.store import find_runs

    (run,) = find_runs(store, EXPERIMENT, output_dir=workdir, max_results=1)
    return run


def learning_curve(store: str, run, png: Path, title: str) -> list[dict]:
    """Plots each selection metric vs training minutes from the run's MLflow history; returns the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segexp.tracking.store import log_artifact, timed_metric_history
    from segexp.tracking.tags import split_tag

    start = run.start_time
    points, figure = [], plt.figure(figsize=(7, 4))
    for name in CURVE_METRICS:
        history = timed_metric_history(store, run.run_id, name)
        minutes = [(stamp - start) / 60000 for stamp, _, _ in history]
        plt.plot(minutes, [value for _, _, value in history], marker="o", label=name)
        points += [{"metric": name, "minutes": t, "value": value} for t, (_, _, value) in zip(minutes, history)]
    plt.xlabel("training minutes")
    plt.ylabel(f"score on the selection slices ({run.tag(split_tag('select'), '?')})")
    plt.title(title)
    plt.grid(alpha=0.3)
    plt.legend()
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    log_artifact(store, run.run_id, png, "learning_curve")
    return points


def training_facts(store: str, run) -> dict:
    """Returns minutes from the run's start to its last selection pass, epochs run, the chosen epoch and
    its selection score (read from MLflow; evaluate logs into the same run later, so not its end time)."""
    from segexp.tracking.store import timed_metric_history
    from segexp.tracking.tags import split_tag

    history = timed_metric_history(store, run.run_id, "select_loss")
    metrics = run.metrics
    return {"train_minutes": (max(stamp for stamp, _, _ in history) - run.start_time) / 60000,
            "epochs_run": int(metrics["epochs_run"]), "checkpoint_epoch": int(metrics["checkpoint_epoch"]) + 1,
            "select_v_rand": metrics.get("ckpt_select_v_rand"),
            "select_slices": run.tag(split_tag("select")), "report_slices": run.tag(split_tag("report")),
            "trained_at_commit": (run.git_commit or "unknown")[:10] + ("+changes" if run.git_dirty else "")}


def all_cell_baseline(workdir: Path) -> dict:
    """Returns the scores of predicting "cell" everywhere on the run's report slices: the floor any model
    must beat (pixel accuracy is then the cell fraction)."""
    import numpy as np

    from segexp.evaluation.slices import report_set
    from segexp.evaluation.metrics import evaluate_slices
    from segexp.rundir import RunDir

    report = report_set(RunDir(workdir))
    return evaluate_slices([np.ones(m.shape) for m in report.masks], report.masks, foreground=report.foreground)


def rows_of(recipes: list[dict], budget: float) -> list[list]:
    score = "{:.4f}".format  # scores differ in the third decimal: show four
    rows = []
    for r in recipes:
        for tta, m in (("no", r["eval"]), ("8-way", r["eval_tta"])):
            rows.append([r["recipe"], f"{budget:g}" if budget > 0 else "as shipped", f"{r['train_minutes']:.1f}",
                         r["epochs_run"], r["checkpoint_epoch"], score(r["select_v_rand"]), tta,
                         *(score(m[k]) for k in ("v_rand", "v_info", "dice", "accuracy"))])
    base = recipes[0]["all_cell"] if recipes else None
    if base:
        rows.append(["all cell (no model)", "-", "-", "-", "-", "-", "-",
                     *(score(base[k]) for k in ("v_rand", "v_info", "dice", "accuracy"))])
    return rows


COLUMNS = ["recipe", "budget (min)", "trained (min)", "epochs", "checkpoint epoch", "select_v_rand (chose it)",
           "TTA", "report V_rand", "report V_info", "report membrane Dice", "report pixel accuracy"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m studies.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["seed_replica", "isbi_best"],
                        help="experiment names; `default` is plain `segexp train`")
    parser.add_argument("--budget-minutes", type=float, default=30.0, help="trainer.max_minutes; 0: as shipped")
    parser.add_argument("--name", default="quality", help="result file stem in --out")
    parser.add_argument("--quick", action="store_true", help="tiny models and budget: checks the script only")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--reuse-training", action="store_true",
                        help="skip training: evaluate the checkpoints an earlier run left in --out again")
    args = parser.parse_args(argv)
    budget = 0.2 if args.quick else args.budget_minutes
    name = f"{args.name}_quick" if args.quick else args.name
    train_extra, eval_extra = (QUICK, QUICK_EVAL) if args.quick else ([], [])
    result = common.new_result(name, TITLE, METHOD, args, argv, {"recipes": args.recipes, "budget_minutes": budget})
    result["command"] = common.command_line("quality", argv if argv is not None else sys.argv[1:], package="studies")
    args.out.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{(args.out / f'{name}.db').resolve()}"
    recipes = []
    for recipe in args.recipes:
        workdir = (args.out / name / recipe).resolve()
        if not args.reuse_training:
            common.log(f"training {recipe} ({'as shipped' if budget <= 0 else f'{budget:g} min'}) in {workdir}")
            train_recipe(recipe, budget, workdir, store, train_extra)
        run = training_run(store, workdir)
        facts = training_facts(store, run)
        scores, scores_tta = evaluate_checkpoint(workdir, store, eval_extra)
        recipes.append({
            "recipe": recipe, **facts, "run_id": run.run_id, "eval": scores, "eval_tta": scores_tta,
            "all_cell": all_cell_baseline(workdir),
            "curve": learning_curve(store, run, args.out / f"{name}_curve_{recipe}.png", recipe),
        })
    result["recipes"] = recipes
    result["tables"] = [common.table("", COLUMNS, rows_of(recipes, budget))]
    selects = {r["select_slices"] for r in recipes}
    reports = {r["report_slices"] for r in recipes}
    result["notes"] += [
        f"Checkpoints chosen on slices {', '.join(sorted(selects))}; every report column scored on slices "
        f"{', '.join(sorted(reports))}, which no choice (checkpoint, threshold, hyperparameter) saw. The pixel "
        "threshold is fixed at 0.5; V_rand/V_info take their best threshold per the challenge's definition.",
        f"Trained at commit {', '.join(sorted({r['trained_at_commit'] for r in recipes}))}; scored by this "
        f"command at commit {result['code']}. trained (min) runs from the MLflow run's start to its last selection "
        "pass; learning curves: "
        f"bench/results/{name}_curve_<recipe>.png.",
    ]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
