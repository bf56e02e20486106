"""Does a segmentation stage after the network help? The same checkpoints scored with and without it:

    python -m studies.postprocess --store ../bench-pp                 # a sweep already trained in --store
    python -m studies.postprocess --store ../bench-pp --train --seeds 1 2 3 --budget-minutes 30
    python -m studies.postprocess --quick                             # a tiny sweep: seconds, numbers are noise

Each run of the sweep is evaluated as a user would (`segexp evaluate ckpt=RUN inference.tta=true
postprocess=...`) on its report slices: once as the probability map, once per stage, each stage's
parameters chosen on that run's own selection slices (predicted the same way). `segexp compare ...
variants=[...]` then compares the evaluations of the same checkpoints, paired by seed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from bench import common, render
from studies.replicates import compare_table, run_compare, segexp

NAME = "postprocess"
TITLE = "Post-processing on vs off, paired over the same checkpoints"
METHOD = ("Each checkpoint of one `segexp train -m experiment=isbi_best trainer.seed=...` sweep is scored by "
          "`segexp evaluate ckpt=RUN inference.tta=true postprocess=P` on its report slices (25-29), for P = none "
          "(the probability map; V_rand and V_info are the challenge's best over 11 thresholds) and each stage. A "
          "stage's parameters are chosen from its config grid on the run's own selection slices (20-24, predicted "
          "the same way, TTA included) by V_rand, then applied once to the report slices. `segexp compare SWEEP "
          "variants=[...]` compares the evaluations, paired by seed.")
METRICS = ("eval_v_rand", "eval_v_info", "eval_dice", "eval_accuracy")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    add_sweep_arguments(parser, "study_postprocess")
    parser.add_argument("--methods", nargs="+", default=["watershed", "agglomerate"])
    return parser.parse_known_args(argv)


def add_sweep_arguments(parser: argparse.ArgumentParser, store: str) -> None:
    """The options of a study that evaluates the runs of one sweep in --store (trained first with --train)."""
    parser.add_argument("--store", type=Path, default=common.REPO / "outputs" / store)
    parser.add_argument("--sweep", default="sweep_isbi_best", help="the sweep's folder in --store")
    parser.add_argument("--train", action="store_true", help="train the sweep first (else it must be in --store)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument("--reuse-evaluations", action="store_true",
                        help="keep the evaluations already in --store (their metrics.json), run only the missing ones")
    parser.add_argument("--note", action="append", default=[], help="a fact about the training to print with it")


def train(store: Path, sweep: str, seeds: Sequence[int], minutes: float, quick: bool) -> None:
    tiny = ["debug=smoke", "data=synthetic", "trainer.crop_size=64", "trainer.epochs=3", "trainer.steps_per_epoch=10",
            "trainer.max_minutes=null", "split.select=[-4,-3]", "split.report=[-2,-1]"] if quick else \
        [f"trainer.max_minutes={minutes:g}"]
    shutil.rmtree(store / sweep, ignore_errors=True)
    segexp("train", "-m", "experiment=isbi_best", *tiny, f"trainer.seed={','.join(map(str, seeds))}",
           "trainer.verbose=0", f"tracking.uri=sqlite:///{store / 'mlflow.db'}", "tracking.experiment_name=postprocess",
           "run_name=isbi_best", f"hydra.sweep.dir={store / sweep}")


def evaluate(store: Path, run: Path, method: str, reuse: bool = False, checkpoint: str = "model") -> dict[str, Any]:
    """Returns the metrics.json of `segexp evaluate` of the run's checkpoint (model: the chosen one, last: the last
    epoch's) with postprocess=method (and TTA)."""
    out = store / "evaluations" / f"{run.name}_{method}" if checkpoint == "model" else \
        store / "evaluations" / f"{run.name}_{method}_{checkpoint}"
    if reuse and (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    tune = ["postprocess.tune=true"] if method != "none" else []  # chosen now, on the run's selection slices
    segexp("evaluate", f"ckpt={run / f'{checkpoint}.keras'}", "inference.tta=true", f"postprocess={method}", *tune,
           f"tracking.uri=sqlite:///{store / 'mlflow.db'}", f"hydra.run.dir={out}")
    return json.loads((out / "metrics.json").read_text())


def sweep_runs(store: Path, known: argparse.Namespace, quick: bool) -> list[Path]:
    """Returns the finished runs of the sweep in `store` (known.sweep), trained first with known.train."""
    from segexp.rundir import sweep_members

    store.mkdir(parents=True, exist_ok=True)
    if known.train:
        train(store, known.sweep, known.seeds, known.budget_minutes, quick)
    runs = sweep_members(store / known.sweep)
    if not runs:
        raise SystemExit(f"{store / known.sweep}: no finished runs; train them with --train")
    return runs


def compare_variants(store: Path, sweep: str, metrics: Sequence[str], suffixes: Sequence[str],
                     compare_dir: Path, title: str) -> tuple[dict, dict]:
    """Runs `segexp compare` of the sweep's evaluations (variants = metric suffixes); returns the comparison
    (its data) and its differences as a result table titled `title`."""
    comparison = run_compare(str(store / sweep), f"tracking.uri=sqlite:///{store / 'mlflow.db'}",
                             f"metrics=[{','.join(metrics)}]", f"variants=[{','.join(suffixes)}]", "curves=[]",
                             compare_dir=compare_dir)
    return comparison, compare_table(title, comparison, metrics="eval_")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from segexp.experiments.comparison import printed_lines

    known, rest = parse_args(argv)
    args = common.parse_args(NAME, TITLE, rest, package="studies")
    result = common.new_result(NAME, TITLE, METHOD, args, argv, {"methods": known.methods, "sweep": known.sweep},
                               package="studies")
    store = known.store.resolve()
    runs = sweep_runs(store, known, args.quick)
    started = time.monotonic()
    variants = ["none", *known.methods]
    scores = {(run.name, m): evaluate(store, run, m, known.reuse_evaluations) for run in runs for m in variants}
    seeds = {run.name: seed_of(run) for run in runs}

    data, comparison = compare_variants(
        store, known.sweep, METRICS, ["_tta", *(f"_tta_{m}" for m in known.methods)], store / "compare",
        "segexp compare (A = the map; differences are the stage minus A, paired by seed)")

    keys = ("v_rand", "v_info", "map_v_rand", "dice", "accuracy")
    result["tables"] = [
        common.table("Each checkpoint, report slices (TTA): the map, and each stage chosen on its selection slices",
                     ["run", "seed", "postprocess", *keys, "chosen parameters", "V_rand on the selection slices"],
                     [[run.name, seeds[run.name], m, *(scores[run.name, m].get(k) for k in keys),
                       ", ".join(f"{k}={v}" for k, v in scores[run.name, m]["postprocess"]["params"].items()) or "-",
                       scores[run.name, m]["postprocess"]["score"]] for run in runs for m in variants]),
        comparison,
    ]
    result.update(verdicts=printed_lines(data), comparison=data, store=str(store),
                  evaluation_minutes=(time.monotonic() - started) / 60)
    shown = [d for d in data["differences"] if d["metric"] in ("eval_v_rand", "eval_v_info")]  # the segment scores
    verdicts = [*(d["verdict"] for d in shown), *(d["power"] for d in shown)]
    result["notes"] = [*known.note, *(f"`segexp compare`: {line}" for line in verdicts),
                       "Selected there: the 'V_rand on the selection slices' column is where each stage's parameters "
                       "were chosen, so it is not a reported score; the report columns are."]
    first = runs[0].name  # its report slices' panels, one picture per stage
    args.out.mkdir(parents=True, exist_ok=True)
    for method in known.methods:
        panels = sorted((store / "evaluations" / f"{first}_{method}" / "panels").glob("*.png"))
        if panels:
            shutil.copy(panels[0], args.out / f"{NAME}_{method}_panel.png")
    render.write_results(result, args.out)
    return result


def seed_of(run: Path) -> int:
    from omegaconf import OmegaConf

    return int(OmegaConf.load(run / "config.yaml").trainer.seed)


if __name__ == "__main__":
    main()
