"""Which checkpoint of a budgeted run reports better: the epoch the selection slices chose (model.keras), or the
last one (last.keras)? Choosing the best of 30-60 noisy epochs on five slices partly chooses noise (issue 24);
under a cosine that decays to zero over the budget the last epochs barely move, so the last epoch is a choice no
data made. Both are scored on the same runs, without retraining:

    python -m studies.checkpoint_choice --store ../bench-bn --sweep sweep_batchnorm
    python -m studies.checkpoint_choice --quick                    # a tiny sweep: seconds, numbers are noise

Each run is evaluated as a user would, twice (`segexp evaluate ckpt=RUN/model.keras` and `ckpt=RUN/last.keras`,
both with inference.tta=true postprocess=watershed, the stage's parameters chosen for each checkpoint on the run's
selection slices), and `segexp compare SWEEP variants=[_tta_watershed,_tta_watershed_last]` pairs them by seed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

from bench import common, render
from studies.postprocess import add_sweep_arguments, compare_variants, evaluate, seed_of, sweep_runs

NAME = "checkpoint_choice"
TITLE = "Checkpoint choice: the best epoch on the selection slices vs the last epoch, on the same runs"
METHOD = ("Every run of one sweep is scored on its report slices by `segexp evaluate ckpt=RUN/model.keras` (the "
          "epoch with the best selection score, as the run chose it) and by `segexp evaluate ckpt=RUN/last.keras` "
          "(the last epoch), both with 8-way TTA and a watershed whose parameters are chosen for that checkpoint "
          "on the run's selection slices; `segexp compare SWEEP variants=[...]` pairs the two by seed (per recipe "
          "when the sweep holds several).")
KEYS = ("v_rand", "v_info", "dice", "accuracy")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    add_sweep_arguments(parser, "study_checkpoint_choice")
    parser.add_argument("--method", default="watershed", help="the segmentation stage both checkpoints use")
    return parser.parse_known_args(argv)


def epochs(run: Path) -> tuple[int, int]:
    """Returns (epochs run, the chosen epoch, counted from 1) from the run's last.json."""
    state = json.loads((run / "last.json").read_text())
    return int(state["epochs_done"]), int(state["best_epoch"]) + 1  # Keras counts epochs from 0


def recipe_of(run: Path, swept: Sequence[str]) -> str:
    """Returns what sets the run's recipe apart in its sweep: its swept overrides but the seed and the fold."""
    from omegaconf import OmegaConf

    from segexp.experiments.replicates import is_replicate

    overrides = OmegaConf.load(run / ".hydra" / "overrides.yaml")
    return " ".join(o for o in overrides if o.split("=", 1)[0] in swept and not is_replicate(o)) or "-"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from segexp.experiments.comparison import printed_lines, recipe_lines, verdicts
    from segexp.rundir import read_sweep_record

    known, rest = parse_args(argv)
    args = common.parse_args(NAME, TITLE, rest, package="studies")
    result = common.new_result(NAME, TITLE, METHOD, args, argv, {"sweep": known.sweep, "method": known.method},
                               package="studies")
    store = known.store.resolve()
    runs = sweep_runs(store, known, args.quick)
    started = time.monotonic()
    checkpoints = ("model", "last")
    scores = {(run.name, c): evaluate(store, run, known.method, known.reuse_evaluations, c)
              for run in runs for c in checkpoints}

    data, comparison = compare_variants(
        store, known.sweep, [f"eval_{k}" for k in KEYS], [f"_tta_{known.method}", f"_tta_{known.method}_last"],
        store / "compare_checkpoints",
        "segexp compare (A = the chosen checkpoint of the sweep's first recipe; differences other - A, paired by seed)")
    record = read_sweep_record(store / known.sweep)
    swept = record.swept_keys if record else ()
    rows = []
    for run in runs:
        done, best = epochs(run)
        for c in checkpoints:
            rows.append([run.name, seed_of(run), recipe_of(run, swept), c, best if c == "model" else done,
                         *(scores[run.name, c].get(k) for k in KEYS)])
    result["tables"] = [
        common.table("Each run, report slices (TTA + the stage chosen for each checkpoint on the selection slices)",
                     ["run", "seed", "recipe", "checkpoint", "epoch", *KEYS], rows),
        comparison,
    ]
    result.update(verdicts=printed_lines(data), comparison=data, store=str(store),
                  evaluation_minutes=(time.monotonic() - started) / 60)
    result["notes"] = [*known.note, *(f"`segexp compare`: {line}" for line in [*recipe_lines(data), *verdicts(data)])]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
