"""Issue 33's cross-validation: which recipe and segmentation stage partition ISBI best, decided on selection blocks
pooled over folds and reported on report blocks no choice saw - in pieces that add up across sessions.

    python -m studies.partitioning --runs DIR [DIR ...]     # score these finished fold runs (jobs of `segexp train
                                                            # -m ... data.folds=6 data.fold=...`), add them to
                                                            # bench/results/partitioning_folds.json, render
    python -m studies.partitioning --checkpoint last --runs DIR [DIR ...]   # the same runs' last epochs (issue 33,
                                                            # item 4): the chosen epoch against the last, paired by fold
    python -m studies.partitioning --pixel-scores DIR [DIR ...]   # add the report Dice and accuracy the runs logged
    python -m studies.partitioning                          # render the folds already recorded

Per fold run: its chosen checkpoint predicts its own selection and report blocks (`inference=default` with TTA, as
`segexp evaluate inference.tta=true` does); the map is scored as the challenge scores a map (V_rand and V_info at
each of the challenge's 11 thresholds, a grid like a stage's); every stage that fits the model is applied at every
point of its config grid (conf/postprocess/*.yaml), and each slice's V_rand and V_info are kept. The per-slice scores are the record:
a session that trains more folds adds its records, and the pooled choice is made again over all of them.

Rendering: per recipe and stage, the grid point with the best mean V_rand over every recorded fold's selection
slices is chosen (pooled), then each fold's report block is scored at that point; the recipe's figure is the mean
over folds with a 95% t-interval. The winner is the recipe and stage with the best pooled *selection* V_rand
(a rule fixed before the report blocks are read); report scores decide nothing.

Last epochs: a run's chosen checkpoint was picked on its selection slices, so its selection scores are optimistic
and cannot judge it against the last epoch, which no data picked. The two are compared on the report blocks only,
paired by fold, each with its stage's parameters chosen on its own checkpoints' pooled selection slices. That is a
measurement: the last epochs are not candidates for the winner.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

from bench import common

NAME = "partitioning"
METHOD = ("Every fold run's chosen checkpoint predicts its own selection and report blocks with TTA; the map is scored "
          "at each of the challenge's 11 thresholds and every stage at every point of its config grid, slice by slice "
          "(bench/results/partitioning_folds.json, added to fold by fold across sessions). Per recipe and stage, the "
          "point with the best mean V_rand over all recorded folds' selection slices is chosen, and each fold's report "
          "block is scored there: mean over folds ± the 95% t-interval. The winner is the best pooled selection "
          "V_rand, a rule fixed before any report block was read.")
FOLDS_FILE = common.RESULTS_DIR / "partitioning_folds.json"
# agglomerate, segexp's own region merge, beside elf's multicut and GASP: it stays only if it wins here (issue 33)
STAGES = {"boundary": ("watershed", "agglomerate", "multicut", "gasp"),
          "affinities": ("watershed", "agglomerate", "multicut", "gasp", "mutex_watershed")}
RECORD = {"v_rand": 0.98792, "v_info": 0.99183}  # the Mutex Watershed on the ISBI 2012 test stack (Wolf et al. 2020)
CHECKPOINTS = ("chosen", "last")  # model.keras (the epoch the selection slices chose), last.keras (the last epoch)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m studies.partitioning", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="finished fold runs to score and record")
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="chosen",
                        help="score each run's chosen checkpoint (model.keras) or its last epoch (last.keras)")
    parser.add_argument("--pixel-scores", nargs="*", type=Path, default=[],
                        help="fold runs already scored: add the report Dice and accuracy their training logged")
    parser.add_argument("--folds-file", type=Path, default=FOLDS_FILE, help="the per-fold records (kept in git)")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="where partitioning.md/.json go")
    parser.add_argument("--note", action="append", default=[], help="a fact about the training to print with it")
    parser.add_argument("--picture", nargs="*", type=Path, default=[],
                        help="fold runs of the same fold, one per recipe: draw their segments of its first report slice")
    return parser.parse_args(list(argv) if argv is not None else None)


def per_slice(method: str, params: dict, target, predictions, truths) -> dict[str, list[float]]:
    from segexp.evaluation.metrics import segmentation_scores
    from segexp.postprocessing.stage import segment

    scores = [segmentation_scores([segment(p, method, params, target)], [t]) for p, t in zip(predictions, truths)]
    return {k: [s[k] for s in scores] for k in ("v_rand", "v_info")}


def pixel_scores(run_dir: Path) -> dict[str, float]:
    """Returns the report block's membrane Dice and pixel accuracy that the fold run's training logged for its
    chosen checkpoint (its map at inference.threshold, with the run's TTA: stage-independent), from its store."""
    from segexp.rundir import RunDir
    from segexp.tracking.store import get_run

    run = RunDir(run_dir)
    state = json.loads(run.state_file.read_text())
    metrics = get_run(str(run.saved_config().tracking.uri), state["run_id"]).metrics
    return {k: float(metrics[f"report_{k}"]) for k in ("dice", "accuracy")}


def checkpoint_of(record: dict[str, Any]) -> str:
    return record.get("checkpoint", "chosen")  # records scored before last epochs were scored hold the chosen one


def chosen_only(records: list[dict]) -> list[dict]:
    """The records of the runs' chosen checkpoints: the candidates for the winner."""
    return [r for r in records if checkpoint_of(r) == "chosen"]


def recipe_of(saved, run_dir: Path) -> str:
    """The recipe a fold run belongs to: its run_name, else its sweep folder's name."""
    return str(saved.get("run_name") or run_dir.parent.name)


def score_fold(run_dir: Path, checkpoint: str = "chosen") -> dict[str, Any]:
    """Returns the record of one fold run's checkpoint ("chosen" or "last"): its facts, and per-slice scores of the
    map and of every stage's grid point on its selection and report blocks."""
    from omegaconf import OmegaConf

    from segexp.config.compose import compose
    from segexp.data.images import to_channels
    from segexp.evaluation.metrics import DEFAULT_THRESHOLDS, isbi_scores
    from segexp.evaluation.scoring import as_maps
    from segexp.evaluation.slices import role_set
    from segexp.inference.predictor import load_predictor
    from segexp.postprocessing.search import grid_points
    from segexp.rundir import RunDir

    run = RunDir(run_dir)
    saved = run.saved_config()
    inference = compose("evaluate", ["inference.tta=true"]).inference
    path = run.checkpoint if checkpoint == "chosen" else run.last_checkpoint
    if not path.exists():
        raise SystemExit(f"{path}: no such checkpoint; --checkpoint {checkpoint} scores each run's {path.name}")
    loaded = load_predictor(path, run, inference)
    record: dict[str, Any] = {
        "recipe": recipe_of(saved, run_dir), "fold": int(saved.data.fold),
        "folds": int(saved.data.folds), "target": loaded.target.kind, "run": run_dir.name, "checkpoint": checkpoint,
        "state": json.loads(run.state_file.read_text()) if run.state_file.exists() else None,
        "blocks": {}, "stages": {}}
    blocks = {}
    for role in ("select", "report"):
        block = role_set(run, role)
        common.log(f"{record['recipe']} fold {record['fold']}, {checkpoint} checkpoint: predicting {role} slices "
                   f"{','.join(block.names)}")
        predictions = [loaded.predict(to_channels(image, loaded.channels)) for image in block.images]
        blocks[role] = (predictions, list(block.masks))
        record["blocks"][role] = list(block.names)
        maps = as_maps(predictions, loaded.target)
        for i, threshold in enumerate(DEFAULT_THRESHOLDS):
            scores = [isbi_scores([m], [t], thresholds=(threshold,)) for m, t in zip(maps, block.masks)]
            point = record["stages"].setdefault("none (map)", [{"params": {"threshold": float(x)}}
                                                               for x in DEFAULT_THRESHOLDS])[i]
            point[role] = {k: [s[k] for s in scores] for k in ("v_rand", "v_info")}
    for method in STAGES[loaded.target.kind]:
        grid = OmegaConf.to_container(compose("train", [f"postprocess={method}"]).postprocess.grid, resolve=True)
        points = []
        for params in grid_points(grid):
            points.append({"params": params, **{role: per_slice(method, params, loaded.target, *blocks[role])
                                                 for role in blocks}})
        record["stages"][method] = points
        common.log(f"{record['recipe']} fold {record['fold']}: {method}, {len(points)} grid points")
    if checkpoint == "chosen":
        record["pixel"] = pixel_scores(run_dir)
    return record


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def interval(values: Sequence[float]) -> float:
    """Returns the half-width of the 95% t-interval of the mean (nan for one value)."""
    from scipy import stats

    if len(values) < 2:
        return math.nan
    sd = math.sqrt(sum((v - mean(values)) ** 2 for v in values) / (len(values) - 1))
    return float(stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values)))


def pooled_choices(records: list[dict]) -> list[dict[str, Any]]:
    """Returns per recipe and stage (the map and its threshold included): the grid point chosen on every fold's selection slices
    pooled, its pooled selection V_rand, and each fold's report-block scores there."""
    rows = []
    for recipe in sorted({r["recipe"] for r in records}):
        folds = sorted((r for r in records if r["recipe"] == recipe), key=lambda r: r["fold"])
        methods = [m for m in folds[0]["stages"] if all(m in r["stages"] for r in folds)]
        for method in methods:
            # the grid points every fold scored (a grid widened between sessions adds points to later folds only)
            points = [{json.dumps(p["params"], sort_keys=True): p for p in r["stages"][method]} for r in folds]
            common_keys = [k for k in points[0] if all(k in fold for fold in points)]
            pooled = {k: mean([v for fold in points for v in fold[k]["select"]["v_rand"]]) for k in common_keys}
            best = max(common_keys, key=lambda k: pooled[k])  # ties: the first in grid order
            rows.append({"recipe": recipe, "stage": method, "params": points[0][best]["params"],
                         "folds": [r["fold"] for r in folds], "select_v_rand": pooled[best],
                         "report": {k: [mean(fold[best]["report"][k]) for fold in points] for k in ("v_rand", "v_info")}})
    return rows


def checkpoint_table(records: list[dict]) -> dict[str, Any] | None:
    """Returns the table of the chosen checkpoint against the last epoch on the report blocks, per recipe and stage,
    over the folds that have both (None when no last epoch is recorded)."""
    last = [r for r in records if checkpoint_of(r) == "last"]
    rows = []
    for recipe in sorted({r["recipe"] for r in last}):
        folds = {r["fold"] for r in last if r["recipe"] == recipe}
        paired = {c: [r for r in records if r["recipe"] == recipe and r["fold"] in folds and checkpoint_of(r) == c]
                  for c in CHECKPOINTS}
        folds &= {r["fold"] for r in paired["chosen"]}
        chosen, latest = ({row["stage"]: row for row in pooled_choices([r for r in paired[c] if r["fold"] in folds])}
                          for c in CHECKPOINTS)
        for stage in (s for s in chosen if s in latest):
            a, b = chosen[stage]["report"], latest[stage]["report"]
            diff = {k: [y - x for x, y in zip(a[k], b[k])] for k in ("v_rand", "v_info")}
            rows.append([recipe, stage, ",".join(map(str, sorted(folds))), f"{mean(a['v_rand']):.4f}",
                         f"{mean(b['v_rand']):.4f}", f"{mean(diff['v_rand']):+.4f} ± {interval(diff['v_rand']):.4f}",
                         f"{sum(d > 0 for d in diff['v_rand'])} of {len(folds)}",
                         f"{mean(diff['v_info']):+.4f} ± {interval(diff['v_info']):.4f}"])
    if not rows:
        return None
    return common.table(
        "The chosen checkpoint against the last epoch, on the report blocks, paired by fold (each with its stage's "
        "parameters chosen on its own pooled selection blocks)",
        ["recipe", "stage", "folds", "report V_rand, chosen epoch", "report V_rand, last epoch",
         "last - chosen V_rand (mean ± 95% CI)", "folds where last is better", "last - chosen V_info (mean ± 95% CI)"],
        rows)


def tables(records: list[dict]) -> tuple[list[dict[str, Any]], list[str]]:
    """Returns (the tables, the winner's line): per recipe and stage the pooled choice (of the chosen checkpoints)
    and the report blocks' mean ± 95% CI, each fold's report V_rand at that choice, then the chosen checkpoint
    against the last epoch where last epochs are recorded."""
    against_last = checkpoint_table(records)
    records = chosen_only(records)
    rows = pooled_choices(records)
    choices = common.table(
        "Chosen on the selection blocks pooled over the folds; scored on each fold's report block",
        ["recipe", "stage", "chosen", "folds", "selection V_rand (pooled)", "report V_rand (mean ± 95% CI)",
         "report V_info (mean ± 95% CI)"],
        [[row["recipe"], row["stage"], ", ".join(f"{k}={v:.4g}" for k, v in row["params"].items()),
          ",".join(map(str, row["folds"])), f"{row['select_v_rand']:.4f}",
          *(f"{mean(row['report'][k]):.4f} ± {interval(row['report'][k]):.4f}" for k in ("v_rand", "v_info"))]
         for row in rows])
    folds = sorted({f for row in rows for f in row["folds"]})
    per_fold = common.table(
        "Report V_rand of each fold's report block at the pooled choice",
        ["recipe", "stage", *(f"fold {f}" for f in folds)],
        [[row["recipe"], row["stage"], *(f"{dict(zip(row['folds'], row['report']['v_rand'])).get(f, float('nan')):.4f}"
                                         for f in folds)] for row in rows])
    if not rows:
        return [*([against_last] if against_last else [])], []
    winner = max(rows, key=lambda r: r["select_v_rand"])
    line = (f"Winner by the rule fixed before the report blocks were read (best pooled selection V_rand): "
            f"{winner['recipe']} with {winner['stage']} ({winner['select_v_rand']:.4f} on the selection blocks of "
            f"folds {','.join(map(str, winner['folds']))}).")
    report = {k: winner["report"][k] for k in RECORD}
    against = (f"Against the record it aims at (V_rand {RECORD['v_rand']}, V_info {RECORD['v_info']}: the Mutex "
               f"Watershed on the challenge's test stack, Wolf et al. 2020), the winner's mean over its "
               f"{len(winner['folds'])} report blocks: " + ", ".join(
                   f"{name} {mean(report[k]):.4f} ± {interval(report[k]):.4f} ({mean(report[k]) - RECORD[k]:+.4f})"
                   for k, name in (("v_rand", "V_rand"), ("v_info", "V_info"))) + ".")
    pixel = [r["pixel"] for r in records if r["recipe"] == winner["recipe"] and "pixel" in r]
    if pixel:
        against += (f" Its pixel scores (the map at the threshold 0.5, as its runs logged them; the targets 0.85 and "
                    f"0.94), over {len(pixel)} report blocks: " + ", ".join(
                        f"{name} {mean([p[k] for p in pixel]):.4f} ± {interval([p[k] for p in pixel]):.4f}"
                        for k, name in (("dice", "membrane Dice"), ("accuracy", "pixel accuracy"))) + ".")
    return [choices, per_fold, *([against_last] if against_last else [])], [line, against]


def picture(runs: Sequence[Path], records: list[dict], png: Path) -> str:
    """Draws the first report slice of fold runs (one per recipe, the same fold): the image, the annotation's
    segments, then each recipe's segments by its winning stage at the pooled choice; returns the caption."""
    from segexp.config.compose import compose
    from segexp.data.images import to_channels
    from segexp.evaluation.metrics import label_cells
    from segexp.evaluation.slices import role_set
    from segexp.evaluation.visualize import segment_colors, side_by_side, to_rgb8, write_png
    from segexp.inference.predictor import load_predictor
    from segexp.postprocessing.stage import segment
    from segexp.rundir import RunDir

    rows = pooled_choices(chosen_only(records))
    tiles, names = [], []
    for run_dir in runs:
        run = RunDir(run_dir)
        block = role_set(run, "report")
        loaded = load_predictor(run.checkpoint, run, compose("evaluate", ["inference.tta=true"]).inference)
        recipe = str(run.saved_config().get("run_name"))
        best = max((r for r in rows if r["recipe"] == recipe and r["stage"] != "none (map)"),
                   key=lambda r: r["select_v_rand"])
        if not tiles:
            tiles += [to_rgb8(block.images[0]), segment_colors(label_cells(block.masks[0]))]
            names += [f"slice {block.names[0]}", "annotation"]
        labels = segment(loaded.predict(to_channels(block.images[0], loaded.channels)), best["stage"],
                         best["params"], loaded.target)
        tiles.append(segment_colors(labels))
        names.append(f"{recipe}, {best['stage']}")
    write_png(png, side_by_side(tiles, gap=8))
    return " | ".join(names)


def fact(record: dict[str, Any]) -> str:
    """Returns one line on how a fold run trained and which of its checkpoints this record scored."""
    state = record["state"] or {}
    chosen = (f"checkpoint of epoch {state.get('best_epoch', -1) + 1} (best selection {state.get('monitor', '?')})"
              if checkpoint_of(record) == "chosen" else f"its last epoch ({state.get('epochs_done', '?')})")
    return (f"{record['recipe']} fold {record['fold']}: {state.get('epochs_done', '?')} epochs in its 30 minutes, "
            f"{chosen}; scored at {record['scored_at']} on {record['machine']}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from bench import render
    from segexp.rundir import RunDir

    args = parse_args(argv)
    stored = json.loads(args.folds_file.read_text()) if args.folds_file.exists() else {"folds": []}
    result = common.new_result(NAME, "Partitioning: recipes and stages over cross-validation folds", METHOD,
                               argparse.Namespace(quick=False), argv, {"runs": [str(r) for r in args.runs]},
                               "studies")
    for run_dir in args.runs:
        record = score_fold(run_dir, args.checkpoint)
        record.update(scored_at=result["code"], machine=result["machine"]["cpu_model"],
                      scored_utc=result["started_utc"], notes=list(args.note))
        stored["folds"] = [r for r in stored["folds"]
                           if (r["recipe"], r["fold"], checkpoint_of(r)) != (record["recipe"], record["fold"],
                                                                            args.checkpoint)] + [record]
        args.folds_file.parent.mkdir(parents=True, exist_ok=True)
        args.folds_file.write_text(json.dumps(stored, indent=1) + "\n")  # each fold kept as soon as it is scored
    for run_dir in args.pixel_scores:
        saved = RunDir(run_dir).saved_config()
        key = (recipe_of(saved, run_dir), int(saved.data.fold), "chosen")
        (record,) = [r for r in stored["folds"] if (r["recipe"], r["fold"], checkpoint_of(r)) == key]
        record["pixel"] = pixel_scores(run_dir)
        args.folds_file.write_text(json.dumps(stored, indent=1) + "\n")
    if stored["folds"]:
        result["tables"], winner = tables(stored["folds"])
        facts = [fact(r) for r in sorted(stored["folds"], key=lambda r: (r["recipe"], r["fold"], checkpoint_of(r)))]
        notes = sorted({n for r in stored["folds"] for n in r.get("notes", [])} | set(args.note))
        result["notes"] = [*winner, *facts, *notes]
    if args.picture:
        png = args.out / f"{NAME}_segments.png"
        result["notes"].append(f"Picture ({png.name}), left to right: {picture(args.picture, stored['folds'], png)}; "
                               "each recipe's segments by its stage of best pooled selection V_rand, at the pooled "
                               "choice; segments in random colours, boundaries black.")
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
