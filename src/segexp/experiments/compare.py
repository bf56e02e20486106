"""`segexp compare A B [C ...]`: is B really better than A? Read from the tracking store alone.

Each argument is an MLflow run id or a run / sweep directory. A single run is one draw; a sweep
parent contributes each recipe it holds, its seeds or folds as replicates. Every recipe after the
first is compared with the first: per metric the means ± std, the difference with its 95% CI, a
paired t-test when both sides hold the same seeds or folds (Welch's test otherwise) and a one-line
verdict. Differences that make a comparison unfair (budget, held-out slices, data, code) are
named. The result is data (comparison.json, see segexp.experiments.comparison), from which the printed
lines and a self-contained report.html (and report.md with its pictures) are rendered, in the output
directory; all of it is logged as an MLflow run of its own, tagged with the runs it compares.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from segexp import reports
from segexp.errors import ConfigError
from segexp.experiments import comparison, replicates
from segexp.reports import Curve, html_page
from segexp.tracking import sweeps as sweep_store
from segexp.tracking.records import RunRecord
from segexp.tracking.store import (
    artifact_names,
    download_artifacts,
    existing_store,
    find_run,
    log_finished_run,
    metric_history,
    resolve_uri,
)
from segexp.tracking.tags import (
    COMPARED_RUNS,
    DATA_DIGEST,
    GIT_COMMIT,
    GIT_DIRTY,
    NOTE,
    REPORT_SLICES,
    compare_tag,
    split_digest_tag,
    split_tag,
    version_tag,
)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# what makes two recipes' scores incomparable, as (what it is, the tags that hold it)
FAIRNESS = (("held-out (report) slices", (split_digest_tag("report"), split_tag("report"))),
            ("data", (DATA_DIGEST,)),
            ("code version", (GIT_COMMIT,)),
            ("uncommitted code changes", (GIT_DIRTY,)),
            ("TensorFlow version", (version_tag("tensorflow"),)),
            ("Keras version", (version_tag("keras"),)))


@dataclass(frozen=True)
class Entry:
    """One side of a comparison: a recipe and its runs (one, or replicates by seed or fold)."""

    letter: str
    name: str
    ref: str
    runs: tuple[RunRecord, ...]
    variant: str = ""  # a suffix of every metric name: one evaluation of these runs (e.g. _tta_watershed)

    @property
    def label(self) -> str:
        return f"{self.letter} ({self.name})"

    def values(self, metric: str) -> dict[tuple[str, str], float]:
        return {replicates.replicate_key(r): r.metric(metric + self.variant) for r in self.runs}


def recipe_name(runs: Sequence[RunRecord], label: str, ref: str) -> str:
    """Returns a short name for a recipe: its own run name when its runs share one, else what sets it apart."""
    names = {r.name for r in runs}
    if len(names) == 1 and not any(o in next(iter(names)) for o in ("=", "sweep ")):
        return next(iter(names))
    return label or ref[:12]


def entries_of(uri: str, refs: Sequence[str], variants: Sequence[str] = ("",)) -> list[Entry]:
    """Returns the compared recipes in argument order: a sweep parent gives one per recipe it holds, and each
    recipe one entry per variant (a metric-name suffix: the same checkpoints evaluated another way)."""
    groups = []
    for ref in refs:
        run = find_run(uri, ref)
        children = sweep_store.child_runs(uri, run.run_id)
        if not children:
            if not run.finished:
                raise ConfigError(f"{ref}: run {run.run_id} is {run.status}, not FINISHED")
            groups.append((ref, "", [run]))
            continue
        finished = [r for r in children if r.finished]
        if not finished:
            raise ConfigError(f"{ref}: none of the {len(children)} runs of sweep {run.run_id} finished")
        groups += [(ref, label, runs) for label, runs in replicates.group_by_recipe(finished).items()]
    variants = list(variants) or [""]
    if len(groups) * len(variants) < 2:
        raise ConfigError("compare needs two recipes: name two runs or sweeps, one sweep over several recipes, or "
                          "variants=[...] of the same runs' metrics")
    if len(groups) * len(variants) > len(LETTERS):
        raise ConfigError(f"compare takes at most {len(LETTERS)} recipes, got {len(groups) * len(variants)}")
    # name each recipe by what sets it apart from the other compared ones: several sweeps of one experiment
    # share its run name, and a sweep of seeds alone has no label of its own
    recipes = [replicates.recipe_overrides(runs[0]) for _, _, runs in groups]
    shared = set.intersection(*map(set, recipes))
    entries = []
    letters = iter(LETTERS)
    for (ref, label, runs), recipe in zip(groups, recipes):
        runs = sorted(runs, key=replicates.replicate_key)
        name = " ".join(o for o in recipe if o not in shared) or recipe_name(runs, label, ref)
        for variant in variants:
            shown = f"{name} [{variant.strip('_') or 'as logged'}]" if len(variants) > 1 else name
            entries.append(Entry(next(letters), shown, ref, tuple(runs), variant))
    return entries


def tag_values(entry: Entry, tags: Sequence[str]) -> set[str] | None:
    """Returns the set of values the first of `tags` that every run carries takes, or None if none does."""
    for tag in tags:
        if all(r.tag(tag) is not None for r in entry.runs):
            return {r.tags[tag] for r in entry.runs}
    return None


def budget(run: RunRecord) -> str:
    """Returns a run's training budget: its wall-clock minutes, else its epochs x steps x batch."""
    p = run.params
    minutes = p.get("trainer.max_minutes")
    if minutes not in (None, "None"):
        return f"{float(minutes):g} min"
    return f"{p.get('trainer.epochs')} epochs x {p.get('trainer.steps_per_epoch')} steps x batch {p.get('trainer.batch_size')}"


def fairness_warnings(base: Entry, other: Entry) -> list[str]:
    """Returns one line for each way `other` was not trained or scored like `base`."""
    warnings = []
    budgets = ({budget(r) for r in base.runs}, {budget(r) for r in other.runs})
    if budgets[0] != budgets[1]:
        warnings.append(f"training budget differs: {base.letter} {', '.join(sorted(budgets[0]))}; "
                        f"{other.letter} {', '.join(sorted(budgets[1]))}")
    for what, tags in FAIRNESS:
        mine, theirs = tag_values(base, tags), tag_values(other, tags)
        if mine is None or theirs is None:
            warnings.append(f"cannot check the {what}: some runs lack the tag {tags[0]} (made by an older segexp?)")
        elif mine != theirs:
            shown = lambda values: ", ".join(v[:12] for v in sorted(values))  # noqa: E731
            warnings.append(f"{what} differ: {base.letter} {shown(mine)}; {other.letter} {shown(theirs)}")
    if any(budget(r).endswith(" min") for r in (*base.runs, *other.runs)):
        hosts = ({r.hostname for r in base.runs}, {r.hostname for r in other.runs})
        if hosts[0] != hosts[1]:
            warnings.append("a wall-clock budget on different machines: "
                            f"{base.letter} on {', '.join(map(str, sorted(hosts[0])))}; "
                            f"{other.letter} on {', '.join(map(str, sorted(hosts[1])))}")
    return warnings


def read_png(path: Path) -> np.ndarray:
    """Returns a picture in [0, 1]: (H, W) for gray, (H, W, 3) for colour (K-class truths and predictions)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB" if image.mode in ("RGB", "RGBA", "P") else "L"), np.float32) / 255.0


def report_slices(uri: str, run: RunRecord, workdir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Returns {slice: {"image", "truth", "probability"}} a run logged ((H, W) in [0, 1]; for K classes the
    truth and the "prediction" in class colours, filed as "probability"), or {}."""
    names = set(artifact_names(uri, run.run_id, REPORT_SLICES))
    if not names:
        return {}
    local = download_artifacts(uri, run.run_id, REPORT_SLICES, workdir / run.run_id)
    slices: dict[str, dict[str, np.ndarray]] = {}
    for name in sorted(names):
        stem, kind, _ = name.rsplit(".", 2)
        slices.setdefault(stem, {})["probability" if kind == "prediction" else kind] = read_png(local / name)
    return {k: v for k, v in slices.items() if {"image", "truth", "probability"} <= set(v)}


def disagreement(truth: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Returns RGB: where A and B (thresholded at 0.5, or for K classes their colours) disagree, orange if A is
    right, blue if B is; else gray."""
    if truth.ndim == 3:  # class colours: a pixel is right where its colour is the truth's
        ma, mb, mt = (np.abs(a - truth).sum(-1) < 1e-3), (np.abs(b - truth).sum(-1) < 1e-3), True
    else:
        ma, mb, mt = a >= 0.5, b >= 0.5, truth >= 0.5
    out = np.full((*truth.shape[:2], 3), 0.15, np.float32)
    out[(ma != mb) & (ma == mt)] = (1.0, 0.6, 0.1)
    out[(ma != mb) & (mb == mt)] = (0.2, 0.5, 1.0)
    return out


def panel_figure(entries: Sequence[Entry], uri: str, workdir: Path, max_slices: int = 3):
    """Returns (a matplotlib Figure: per report slice image | truth | each recipe | where the first two
    disagree, or None, and a line saying what it shows or why it is missing)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # one column per distinct run: variants of a recipe (evaluations of the same checkpoints) share theirs
    firsts = [entry.runs[0].run_id for entry in entries]
    entries = [entry for i, entry in enumerate(entries) if firsts[i] not in firsts[:i]]
    if len(entries) < 2:
        return None, ("no slice panel: the variants score the same runs; their evaluations' pictures are in each "
                      "run's eval_* images in MLflow")
    shown = [entry.runs[0] for entry in entries]  # the first seed or fold of each recipe
    if len({r.tag(split_digest_tag("report")) for r in shown}) != 1:
        return None, "no slice panel: the compared runs report on different slices"
    per_run = [report_slices(uri, run, workdir) for run in shown]
    common = sorted(set.intersection(*(set(s) for s in per_run)), key=lambda s: (len(s), s))[:max_slices]
    if not common:
        return None, "no slice panel: the runs did not log their report slices (made by an older segexp?)"
    columns = ["image", "truth", *(e.label for e in entries), f"{entries[0].letter} vs {entries[1].letter}"]
    figure = Figure(figsize=(2.6 * len(columns), 2.8 * len(common)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(common), len(columns), squeeze=False)
    for row, name in zip(axes, common):
        first = per_run[0][name]
        pictures = [first["image"], first["truth"], *(s[name]["probability"] for s in per_run),
                    disagreement(first["truth"], per_run[0][name]["probability"], per_run[1][name]["probability"])]
        for ax, picture, title in zip(row, pictures, columns):
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{title}" if title != "image" else f"slice {name}", fontsize=9)
            ax.set_axis_off()
    seeds = ", ".join(f"{e.letter}: {'/'.join(replicates.replicate_key(e.runs[0]))}" for e in entries)
    return figure, (f"report slices {', '.join(common)} predicted by the first replicate of each recipe ({seeds}); "
                    f"last column: orange where only {entries[0].letter} is right, blue where only "
                    f"{entries[1].letter} is")


def curves_figure(entries: Sequence[Entry], uri: str, metrics: Sequence[str]):
    """Returns a Figure of each metric per epoch, one line per recipe (mean over its replicates, band = min..max),
    or None when no recipe logged any of them."""
    panels = {}
    for metric in metrics:
        curves = []
        for entry in entries:
            histories = [dict(metric_history(uri, r.run_id, metric)) for r in entry.runs]
            epochs = sorted(set.intersection(*(set(h) for h in histories))) if histories else []
            if epochs:
                values = np.array([[h[e] for e in epochs] for h in histories])
                curves.append(Curve(f"{entry.label}, n={len(histories)}", epochs, values.mean(0),
                                    (values.min(0), values.max(0)) if len(histories) > 1 else None))
        panels[metric] = curves
    if not any(panels.values()):
        return None
    return reports.curves_figure(panels, "{metric} per epoch (mean; band: min..max over replicates)")


def config_differences(entries: Sequence[Entry]) -> list[tuple[str, list[str]]]:
    """Returns (config key, its value in each recipe) for every key of the resolved configs (the runs' MLflow
    params) whose value is not the same in all recipes, seeds and folds aside; "-" where a recipe lacks it."""
    configs = [{k: v for k, v in e.runs[0].params.items() if "." in k and k not in replicates.REPLICATE_KEYS}
               for e in entries]
    keys = sorted(set().union(*configs))
    return [(key, values) for key in keys
            if len(set(values := [config.get(key, "-") for config in configs])) > 1]


def power_line(other: Entry, d: replicates.Difference, target: float | None) -> str:
    """Returns one line on what this comparison could have seen: the smallest difference detectable with
    POWER at its n and spread, and how many pairs (or replicates per side) `target` would need."""
    shown = d.metric.removeprefix("report_")
    if not math.isfinite(d.detectable):
        return f"{other.letter} vs A on {shown}: no power figure (fewer than two replicates per side)"
    unit = f"pairs by {d.paired_by}" if d.paired_by else "replicates per side"
    line = (f"{other.letter} vs A on {shown}: {d.n} {unit} with spread {d.spread:.4f} detect a difference of "
            f"{d.detectable:.4f} or more ({replicates.POWER:.0%} power, alpha {replicates.ALPHA})")
    if target:
        needed = d.needed(target)
        line += (f"; {target:g} would need {needed} {unit}" if needed
                 else f"; {target:g} would need more than {replicates.MOST_REPLICATES} {unit}")
    return line


def compared_metrics(entries: Sequence[Entry], requested: Sequence[str], per_class_prefix: str = "report_dice_",
                     fallback: str = "report_dice") -> list[str]:
    """Returns the metrics to compare: those requested that some run logged (V_rand where there are no topology
    scores, e.g. K-class data, is left out; `fallback` stands in if nothing requested is there), then, for data
    of more than two classes, each class's score (`per_class_prefix`<class>) that every run logged: a verdict
    per class."""
    logged = [set(r.metrics) for e in entries for r in e.runs]
    variants = {e.variant for e in entries}
    found = [m for m in requested if any(m + v in keys for keys in logged for v in variants)]
    if not found and any(fallback + v in keys for keys in logged for v in variants):
        found = [fallback]
    per_class = sorted(set.intersection(*({k for k in keys if k.startswith(per_class_prefix)} for keys in logged)))
    return found + (per_class if len(per_class) > 2 else [])


def metric_rows(entries: Sequence[Entry], metrics: Sequence[str]) -> list[tuple[Entry, replicates.Difference, str]]:
    """Returns (recipe, its Difference from the first recipe, the verdict line) per later recipe and metric."""
    base = entries[0]
    rows = []
    for other in entries[1:]:
        for metric in metrics:
            d = replicates.difference(metric, base.values(metric), other.values(metric))
            rows.append((other, d, replicates.verdict(d, base.label, other.label, metric.removeprefix("report_"))))
    return rows


def comparison_data(entries: Sequence[Entry], rows, warnings: dict[str, list[str]], pictures: dict[str, str],
                    notes: Sequence[str], differences: Sequence[tuple[str, list[str]]],
                    target: float | None) -> dict:
    """Returns the comparison as data (the schema in segexp.experiments.comparison): everything the report,
    the printed lines, MLflow and the studies read."""
    return {
        "format": comparison.FORMAT,
        "recipes": [{"letter": e.letter, "name": e.name, "ref": e.ref, "variant": e.variant,
                     "runs": [{"run_id": r.run_id, "replicate": list(replicates.replicate_key(r))} for r in e.runs]}
                    for e in entries],
        "metrics": list(dict.fromkeys(d.metric for _, d, _ in rows)),
        "differences": [{"letter": other.letter, "metric": d.metric, "a": comparison.summary_data(d.a),
                         "b": comparison.summary_data(d.b), "diff": comparison.number(d.diff),
                         "ci95": comparison.number(d.ci95), "p": comparison.number(d.p), "paired_by": d.paired_by,
                         "n": d.n, "b_ahead": d.b_ahead, "spread": comparison.number(d.spread),
                         "detectable": comparison.number(d.detectable), "verdict": line,
                         "power": power_line(other, d, target)} for other, d, line in rows],
        "config_differences": [{"key": key, "values": list(values)} for key, values in differences],
        "fairness": dict(warnings),
        "pictures": dict(pictures),
        "notes": list(notes),
    }


def log_comparison(cfg, data: dict, files: Sequence[Path]) -> str | None:
    """Logs the comparison as its own MLflow run, tagged with every compared run; returns its id."""
    if not cfg.tracking.get("_target_", "").endswith("MlflowTracker"):
        return None
    recipes = data["recipes"]
    tags = {COMPARED_RUNS: ",".join(comparison.compared_run_ids(data)),
            **{compare_tag(r["letter"]): f"{r['name']} ({r['ref']})" for r in recipes},
            NOTE: "\n".join(comparison.verdicts(data))}
    metrics = {f"{d['letter']}_minus_A/{d['metric']}_{key}": d[key] for d in data["differences"]
               for key in ("diff", "ci95", "p") if d[key] is not None}
    name = " vs ".join(r["name"] for r in recipes)
    return log_finished_run(resolve_uri(cfg.tracking.uri), cfg.tracking.experiment_name, f"compare {name}", tags,
                            metrics, files)


def compare(cfg, output_dir: Path) -> list[replicates.Difference]:
    """Compares the runs cfg.runs names; prints and writes the report; returns the differences."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download is noise here
    uri = existing_store(cfg.tracking.uri)
    entries = entries_of(uri, list(cfg.runs), list(cfg.variants))
    rows = metric_rows(entries, compared_metrics(entries, list(cfg.metrics)))
    warnings = {e.letter: fairness_warnings(entries[0], e) for e in entries[1:]}
    output_dir.mkdir(parents=True, exist_ok=True)
    pictures, notes = {}, []
    panel, note = panel_figure(entries, uri, output_dir / "artifacts")
    notes.append(note)
    if panel is not None:
        panel.savefig(output_dir / "panel.png", dpi=110)
        pictures["The same report slices across the compared recipes"] = "panel.png"
    curves = curves_figure(entries, uri, compared_metrics(entries, list(cfg.curves), "select_dice_", "select_dice"))
    if curves is not None:
        curves.savefig(output_dir / "curves.png", dpi=100)
        pictures["Learning curves"] = "curves.png"
    data = comparison_data(entries, rows, warnings, pictures, notes, config_differences(entries),
                           cfg.target_difference)
    written = comparison.write_comparison(data, output_dir)
    text = comparison.markdown(data)
    (output_dir / "report.md").write_text(text)
    (output_dir / "report.html").write_text(html_page(text, output_dir, "segexp compare"))
    files = [written, *(output_dir / f for f in ("report.html", "report.md", *pictures.values()))]
    run_id = log_comparison(cfg, data, files)

    for line in comparison.printed_lines(data):
        print(f"[segexp] {line}", flush=True)
    where = f"; MLflow run {run_id}" if run_id else ""
    print(f"[segexp] report: {output_dir / 'report.html'} ({written.name} holds it as data){where}", flush=True)
    return [d for _, d, _ in rows]
