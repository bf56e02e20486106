"""Which changes to isbi_best move the held-out scores, and by how much (issue 13's lever study).

    python -m studies.levers                                     # every lever: a 5-minute sweep over seeds 1, 2, 3
    python -m studies.levers --reuse-training --store DIR        # compare the sweeps already in DIR again
    python -m studies.levers --quick                             # tiny models: checks the script only
    python -m studies.levers --store DIR --levers auto ema --only ema --name levers_ema   # one more lever beside
                                                                 # a sweep already in DIR (A = the first lever)
    python -m studies.levers --store DIR --levers batchnorm --budget-minutes 30 --resume   # a study that did not
                                                                 # fit one session: its sweeps continue

Each lever is one `segexp train -m experiment=isbi_best trainer.max_minutes=B trainer.seed=... <lever>` sweep,
as a user would run it; `segexp compare` of all sweeps then gives every recipe against A (isbi_best as shipped,
the first recipe of the first sweep) with paired differences and t-tests. Finally the pixel threshold: for every
trained checkpoint the threshold that maximizes pixel accuracy on the selection slices is applied to the report
slices, against the fixed 0.5 (a lever that costs no training).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from bench import common, render
from studies.replicates import METRICS, compare_table, run_compare, segexp
from studies.thresholds import threshold_lever, threshold_table, threshold_verdicts

NAME = "levers"
TITLE = "Levers: what moves isbi_best's held-out scores (sweeps over seeds, segexp compare)"
METHOD = ("Each lever is one `segexp train -m experiment=isbi_best trainer.max_minutes=B trainer.seed=1,2,3 "
          "<lever overrides>` sweep (a lever's recipes interleaved seed by seed), the sweeps one after the other "
          "on this machine; `segexp compare` reads all sweeps "
          "from the tracking store and compares every recipe with A = isbi_best as shipped (paired by seed). "
          "Scores are on the report slices 25-29, which no choice saw (checkpoints chosen on 20-24). The threshold "
          "lever re-predicts each checkpoint: the threshold with the best pixel accuracy on the selection slices "
          "(0.05 steps), applied to the report slices, against 0.5.")
LEVERS = {  # sweep name: overrides on top of experiment=isbi_best; the first sweep's first recipe is A
    "loss": ["loss=bce_dice,weighted_bce,weighted_bce_dice"],
    "crop384": ["trainer.crop_size=384", "trainer.batch_size=2"],
    "width24": ["model.base_filters=24"],
    "auto": [],  # isbi_best as shipped now: precision and XLA by speed_probe (float32 before, when A was trained)
    "ema": ["optimizer.ema=0.99"],  # the moving average of the weights is scored and saved at every epoch end
    "cldice": ["loss=bce_dice_cldice"],  # half of bce_dice's Dice weight on soft clDice (topology of the skeletons)
    "cldice3": ["loss=bce_dice_cldice", "loss.fn.skeleton_iterations=3"],  # the paper's 2D default: a cheaper step
    "schedule": ["optimizer/schedule=constant,cosine"],  # no decay; decay without isbi_best's warmup epoch
    # as shipped first (A), then without batch norm, whose bf16 step bench.compute times faster (BENCHMARKS.md B2)
    "batchnorm": ["model.batch_norm=true,false"],
}
QUICK = ["debug=smoke", "trainer.crop_size=64"]


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--budget-minutes", type=float, default=5.0, help="trainer.max_minutes of every run")
    parser.add_argument("--store", type=Path, default=common.REPO / "outputs" / "bench_levers")
    parser.add_argument("--reuse-training", action="store_true", help="compare the sweeps already in --store")
    parser.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS),
                        help="the sweeps to compare, in order (A is the first one's first recipe)")
    parser.add_argument("--only", nargs="+", choices=list(LEVERS), default=None,
                        help="train only these levers; the others must already be in --store")
    parser.add_argument("--resume", action="store_true",
                        help="continue the trained levers' sweeps already in --store (segexp train -m resume=DIR: "
                             "finished jobs are kept), so that a study can span several sessions")
    parser.add_argument("--name", default=NAME, help="result file stem in --out")
    return parser.parse_known_args(argv)


def train_command(lever: Sequence[str], seeds: Sequence[int], minutes: float, store: Path, name: str,
                  quick: bool) -> list[str]:
    # the seed list comes before the lever's own so that Hydra runs a sweep's recipes seed by seed, interleaved:
    # a host whose speed drifts over the hours then slows every recipe alike
    return ["train", "-m", "experiment=isbi_best", *(QUICK if quick else []), f"trainer.max_minutes={minutes:g}",
            f"trainer.seed={','.join(map(str, seeds))}", *lever, f"tracking.uri=sqlite:///{store / 'mlflow.db'}",
            f"hydra.sweep.dir={store / f'sweep_{name}'}"]


def sweep_runs(store: Path, name: str) -> list:
    from segexp.tracking.sweeps import child_runs

    parent = json.loads((store / f"sweep_{name}" / "sweep.json").read_text())["parent_run_id"]
    return child_runs(f"sqlite:///{store / 'mlflow.db'}", parent)


def recipe_label(run) -> str:
    """Returns what a run changes in isbi_best, e.g. "loss=weighted_bce", or "as shipped"."""
    from segexp.experiments.replicates import recipe_overrides

    common = ("experiment=", "trainer.max_minutes=", "tracking.uri=", "debug=", "trainer.crop_size=64")
    own = [o for o in recipe_overrides(run) if not o.startswith(common)]
    return " ".join(own) or f"as shipped ({run.precision or '?'})"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from segexp.experiments.comparison import printed_lines

    known, rest = parse_args(argv)
    args = common.parse_args(NAME, TITLE, rest, package="studies")
    levers = {name: LEVERS[name] for name in known.levers}
    result = common.new_result(known.name, TITLE, METHOD, args, argv, {
        "levers": levers, "seeds": known.seeds, "budget_minutes": known.budget_minutes})
    result["command"] = common.command_line(NAME, list(argv) if argv is not None else sys.argv[1:], package="studies")
    store = known.store.resolve()
    store.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    commands = {name: train_command(lever, known.seeds, known.budget_minutes, store, name, args.quick)
                for name, lever in levers.items()}
    if not known.reuse_training:
        for name, command in commands.items():
            if known.only is not None and name not in known.only:
                continue
            sweep_dir = store / f"sweep_{name}"
            if known.resume and (sweep_dir / "sweep.json").is_file():
                segexp("train", "-m", f"resume={sweep_dir}")
                continue
            shutil.rmtree(sweep_dir, ignore_errors=True)
            segexp(*command)
    compare_dir = store / "compare"
    comparison = run_compare(*(str(store / f"sweep_{name}") for name in levers),
                             f"tracking.uri=sqlite:///{store / 'mlflow.db'}", compare_dir=compare_dir)
    verdicts = printed_lines(comparison)
    runs = [run for name in levers for run in sweep_runs(store, name)]
    rows = [[recipe_label(run), run.params["trainer.seed"], *(run.metrics.get(k) for k in METRICS),
             int(run.metrics.get("epochs_run", 0)), run.precision or "?", (run.git_commit or "?")[:10]]
            for run in runs]
    thresholds = threshold_lever(runs, recipe_label)
    shifts = threshold_verdicts(thresholds)
    for picture in ("panel.png", "curves.png"):
        if (compare_dir / picture).is_file():
            shutil.copy(compare_dir / picture, args.out / f"{known.name}_{picture}")
    result.update(store=str(store), verdicts=verdicts, comparison=comparison, threshold_verdicts=shifts,
                  thresholds=thresholds,
                  minutes=(time.monotonic() - started) / 60)
    result["tables"] = [
        common.table(f"Each run ({known.budget_minutes:g} training minutes)",
                     ["recipe", "seed", *METRICS, "epochs run", "precision", "trained at commit"], rows),
        compare_table(f"segexp compare (A = the {known.levers[0]} sweep's first recipe; differences are other - A, "
                      "paired by seed)", comparison),
        threshold_table(thresholds),
    ]
    result["notes"] = [
        *(f"Trained by `python -m segexp {' '.join(c)}`" for c in commands.values()),
        "(in an earlier invocation: --reuse-training)" if known.reuse_training else
        f"one sweep after the other{'' if known.only is None else '; in this invocation only ' + ', '.join(known.only)}.",
        *(f"`segexp compare`: {v}" for v in verdicts),
        *(f"Threshold: {v}" for v in shifts)]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
