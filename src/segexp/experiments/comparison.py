"""A comparison as data: what `segexp compare` found, written as comparison.json beside its report and logged
into MLflow with it. The report's markdown and the lines compare prints are rendered from this data, and studies
and renderers read it back with read_comparison, never the prose.

comparison.json (FORMAT "segexp.comparison/1"; numbers that are not finite are null):

    {"format": "segexp.comparison/1",
     "recipes": [{"letter": "A", "name": "loss=dice", "ref": "<run id or directory as given>", "variant": "",
                  "runs": [{"run_id": "...", "replicate": ["seed", "1"]}, ...]}, ...],
     "metrics": ["report_v_rand", ...],
     "differences": [{"letter": "B", "metric": "report_v_rand",            # B minus A, one per later recipe and metric
                      "a": {"mean", "std", "ci95", "n"}, "b": {...},       # each side over its replicates
                      "diff", "ci95", "p", "paired_by": "seed" | "fold" | null, "n", "b_ahead", "spread",
                      "detectable",                                         # smallest difference 80% power would see
                      "verdict": "<one line>", "power": "<one line>"}, ...],
     "config_differences": [{"key": "optimizer.lr", "values": ["0.001", "0.01"]}, ...],  # one value per recipe
     "fairness": {"B": ["<warning>", ...], ...},                            # [] where B was trained and scored like A
     "pictures": {"<caption>": "<file beside the report>"},
     "notes": ["<line>", ...]}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from segexp.errors import ConfigError
from segexp.experiments.replicates import Summary, format_summary
from segexp.reports import markdown_table

FILE = "comparison.json"
FORMAT = "segexp.comparison/1"
# the columns of the differences table, in the report and in the studies' results
COLUMNS = ["metric", "A", "other", "other - A", "p", "detectable (80% power)", "verdict"]


def number(value: float | None) -> float | None:
    """Returns value as a JSON number, None where it is not finite (JSON has no NaN)."""
    return float(value) if value is not None and math.isfinite(value) else None


def summary_data(summary: Summary) -> dict[str, Any]:
    return {"mean": number(summary.mean), "std": number(summary.std), "ci95": number(summary.ci95), "n": summary.n}


def summary_of(data: Mapping[str, Any]) -> Summary:
    """Returns the Summary a summary_data dict holds (null as NaN)."""
    nan = lambda key: math.nan if data[key] is None else data[key]  # noqa: E731
    return Summary(nan("mean"), nan("std"), nan("ci95"), data["n"])


def write_comparison(data: Mapping[str, Any], directory: Path) -> Path:
    """Writes comparison.json into directory; returns its path."""
    path = directory / FILE
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    return path


def read_comparison(directory: Path) -> dict[str, Any]:
    """Returns the comparison a `segexp compare` output directory holds; ConfigError (one line) for a directory
    without comparison.json - a compare of an older segexp, whose report is prose only - or of another format."""
    path = Path(directory) / FILE
    if not path.is_file():
        raise ConfigError(f"{directory}: no {FILE} (an older segexp compare wrote only its report, or this is no "
                          "compare directory); run `segexp compare` of the same runs again")
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ConfigError(f"{path}: format {data.get('format')!r}, not {FORMAT!r}; run `segexp compare` again")
    return data


def label(recipe: Mapping[str, Any]) -> str:
    return f"{recipe['letter']} ({recipe['name']})"


def cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def difference_cells(d: Mapping[str, Any]) -> list[str]:
    """Returns one row of the differences table (COLUMNS) for one entry of data["differences"]."""
    diff = cell(d["diff"], "+.4f") + (f" ± {d['ci95']:.4f}" if d["ci95"] is not None else "")
    return [d["metric"], format_summary(summary_of(d["a"])), f"{d['letter']}: {format_summary(summary_of(d['b']))}",
            diff, cell(d["p"], ".2g"), cell(d["detectable"], ".4f"), d["verdict"]]


def markdown(data: Mapping[str, Any]) -> str:
    """Returns the report as markdown; its pictures are files beside it."""
    recipes = markdown_table(["", "recipe", "argument", "runs", "replicates"], [
        [r["letter"], r["name"], f"`{r['ref']}`", len(r["runs"]), ", ".join("=".join(run["replicate"]) for run in r["runs"])]
        for r in data["recipes"]])
    lines = ["# segexp compare", "", recipes]
    lines += ["", "Scores on each run's report slices (no choice saw them): mean ± std [95% CI of the mean] (n). "
              "Differences are the later recipe minus A, with the 95% CI of the difference; p from a paired "
              "t-test when both hold the same seeds or folds, else Welch's; p < 0.05 counts as a difference "
              "(per metric, not corrected for the several metrics).", ""]
    lines.append(markdown_table(COLUMNS, [difference_cells(d) for d in data["differences"]]))
    letters = [r["letter"] for r in data["recipes"]]
    differences = data["config_differences"]
    lines += ["", "## What the recipes' configs differ in", "",
              markdown_table(["key", *letters], [[d["key"], *d["values"]] for d in differences])
              if differences else "Their resolved configs are the same, seeds and folds aside."]
    lines += ["", "## Is the comparison fair?", ""]
    for letter, found in data["fairness"].items():
        lines += [f"- WARNING {line}" for line in found] or [f"- A and {letter}: same budget, held-out slices, "
                                                             "data, code and versions"]
    for caption, file in data["pictures"].items():
        lines += ["", f"## {caption}", "", f"![{caption}]({file})"]
    lines += ["", *data["notes"]]
    return "\n".join(lines) + "\n"


def printed_lines(data: Mapping[str, Any]) -> list[str]:
    """Returns what `segexp compare` prints about a comparison, line by line (without its "[segexp] " prefix):
    the recipes, the verdicts, what the comparison could have seen, the config keys that differ, the warnings."""
    letters = [r["letter"] for r in data["recipes"]]
    return [*recipe_lines(data), *verdicts(data),
            *(d["power"] for d in data["differences"]),
            *(f"config {d['key']}: " + ", ".join(f"{letter} {v}" for letter, v in zip(letters, d["values"]))
              for d in data["config_differences"]),
            *(f"WARNING A vs {letter}: {line}" for letter, found in data["fairness"].items() for line in found)]


def table_rows(data: Mapping[str, Any], metric_prefix: str = "") -> list[list[str]]:
    """Returns the differences table's rows (COLUMNS) of the metrics that start with metric_prefix."""
    return [difference_cells(d) for d in data["differences"] if d["metric"].startswith(metric_prefix)]


def recipe_names(data: Mapping[str, Any]) -> dict[str, str]:
    """Returns {letter: recipe name}."""
    return {r["letter"]: r["name"] for r in data["recipes"]}


def differences_by_letter(data: Mapping[str, Any]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Returns {letter: {metric: (other - A, 95% CI half-width, p)}} of the differences that have all three."""
    found: dict[str, dict[str, tuple[float, float, float]]] = {}
    for d in data["differences"]:
        if None not in (d["diff"], d["ci95"], d["p"]):
            found.setdefault(d["letter"], {})[d["metric"]] = (d["diff"], d["ci95"], d["p"])
    return found


def compared_run_ids(data: Mapping[str, Any]) -> list[str]:
    return [run["run_id"] for r in data["recipes"] for run in r["runs"]]


def recipe_lines(data: Mapping[str, Any]) -> list[str]:
    """Returns one line per recipe: its letter and name, what named it and how many runs it holds."""
    return [f"{label(r)}: {r['ref']}, {len(r['runs'])} run(s)" for r in data["recipes"]]


def verdicts(data: Mapping[str, Any], metrics: Sequence[str] | None = None) -> list[str]:
    """Returns the one-line verdicts, of the given metrics only if `metrics` is given."""
    return [d["verdict"] for d in data["differences"] if metrics is None or d["metric"] in metrics]
