"""Segmentation quality under a fixed wall-clock training budget, recipe against recipe.

    python -m bench.quality                       # seed_replica vs isbi_best, 30 minutes each
    python -m bench.quality --budget-minutes 10 --recipes isbi_best
    python -m bench.quality --quick               # seconds: checks the script end to end
    python -m bench.quality --reuse-training      # score the checkpoints of an earlier run again

For each recipe: `segexp train experiment=<recipe> trainer.max_minutes=<budget>`, then
`segexp evaluate` of the best checkpoint on the held-out slices 25-29, without and with 8-way
TTA. Writes bench/results/quality.{json,md} and a learning curve per recipe (each held-out
metric vs training minutes, read back from the MLflow store) as PNG, also logged to the run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CURVE_METRICS = ("val_v_rand", "val_v_info", "val_dice", "val_accuracy")
QUICK = ["model.depth=2", "model.base_filters=4", "trainer.epochs=1", "trainer.steps_per_epoch=2",
         "trainer.crop_size=64", "trainer.batch_size=2", "tracking.log_model=false", "trainer.preview_slices=0"]
QUICK_EVAL = ["inference.tile=128", "inference.overlap=16"]


def segexp(*args: str) -> None:
    """Runs a segexp command in a fresh process (as a user would), failing loudly."""
    subprocess.run([sys.executable, "-m", "segexp", *args], check=True)


def train_recipe(recipe: str, budget: float, workdir: Path, store: str, extra: list[str]) -> float:
    """Trains one recipe within the budget; returns the wall-clock minutes it took."""
    started = time.monotonic()
    segexp("train", f"experiment={recipe}", f"trainer.max_minutes={budget}", f"hydra.run.dir={workdir}",
           f"tracking.uri={store}", "tracking.experiment_name=bench_quality", "trainer.verbose=2", *extra)
    return (time.monotonic() - started) / 60


def evaluate_checkpoint(workdir: Path, store: str, tta: bool, extra: list[str]) -> dict[str, float]:
    """Scores the recipe's best checkpoint on the held-out slices; returns metrics.json."""
    out = workdir / ("eval_tta" if tta else "eval")
    segexp("evaluate", f"ckpt={workdir / 'model.keras'}", f"inference.tta={str(tta).lower()}",
           f"hydra.run.dir={out}", f"tracking.uri={store}", "tracking.experiment_name=bench_quality", *extra)
    return json.loads((out / "metrics.json").read_text())


def training_run(store: str, checkpoint: Path):
    """Returns the MLflow run that trained `checkpoint` (the newest, if it was trained more than once)."""
    import mlflow

    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("bench_quality")
    (run,) = client.search_runs([experiment.experiment_id], f"tags.checkpoint = '{checkpoint.resolve()}'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    return run


def recorded_train_minutes(store: str, checkpoint: Path) -> float:
    """Returns the minutes from the checkpoint's training run's start to its last validation, from MLflow
    (not the run's end: evaluate logs into the same run and moves that)."""
    import mlflow

    run = training_run(store, checkpoint)
    history = mlflow.MlflowClient(store).get_metric_history(run.info.run_id, "val_loss")
    return (max(m.timestamp for m in history) - run.info.start_time) / 60000


def learning_curve(store: str, checkpoint: Path, png: Path, title: str) -> list[dict]:
    """Plots each held-out metric vs training minutes from the run's MLflow history; returns the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    client = mlflow.MlflowClient(store)
    run = training_run(store, checkpoint)
    start = run.info.start_time
    points, figure = [], plt.figure(figsize=(7, 4))
    for name in CURVE_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        minutes = [(m.timestamp - start) / 60000 for m in history]
        plt.plot(minutes, [m.value for m in history], marker="o", label=name)
        points += [{"metric": name, "minutes": t, "value": m.value} for t, m in zip(minutes, history)]
    plt.xlabel("training minutes")
    plt.ylabel("held-out score (slices 25-29)")
    plt.title(title)
    plt.grid(alpha=0.3)
    plt.legend()
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    client.log_artifact(run.info.run_id, str(png), "learning_curve")
    return points


def markdown(rows: list[dict], budget: float, command: str) -> str:
    """Returns the quality table as markdown."""
    head = ("| recipe | budget (min) | trained (min) | TTA | V_rand | V_info | membrane Dice | pixel accuracy |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for row in rows:
        for tta, m in (("no", row["eval"]), ("8-way", row["eval_tta"])):
            lines.append(f"| {row['recipe']} | {budget:g} | {row['train_minutes']:.1f} | {tta} | {m['v_rand']:.4f} | "
                         f"{m['v_info']:.4f} | {m['dice']:.4f} | {m['accuracy']:.4f} |")
    return "\n".join(lines) + f"\n\nCommand: `{command}`\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["seed_replica", "isbi_best"])
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="tiny models and budget: checks the script only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--reuse-training", action="store_true",
                        help="skip training: evaluate the checkpoints an earlier run left in --out again")
    args = parser.parse_args(argv)
    budget = 0.2 if args.quick else args.budget_minutes
    train_extra, eval_extra = (QUICK, QUICK_EVAL) if args.quick else ([], [])
    args.out.mkdir(parents=True, exist_ok=True)
    name = "quality_quick" if args.quick else "quality"
    store = f"sqlite:///{(args.out / f'{name}.db').resolve()}"
    rows = []
    for recipe in args.recipes:
        workdir = (args.out / name / recipe).resolve()
        minutes = (recorded_train_minutes(store, workdir / "model.keras") if args.reuse_training
                   else train_recipe(recipe, budget, workdir, store, train_extra))
        rows.append({
            "recipe": recipe, "train_minutes": minutes,
            "eval": evaluate_checkpoint(workdir, store, False, eval_extra),
            "eval_tta": evaluate_checkpoint(workdir, store, True, eval_extra),
            "curve": learning_curve(store, workdir / "model.keras", args.out / f"{name}_curve_{recipe}.png", recipe),
        })
    command = "python -m bench.quality " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"budget_minutes": budget, "command": command.strip(), "rows": rows}
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"{name}.md").write_text(markdown(rows, budget, command.strip()))
    print(markdown(rows, budget, command.strip()))
    return result


if __name__ == "__main__":
    main()
