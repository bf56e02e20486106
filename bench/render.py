"""Renders result files (bench/results/*.json, of the speed benchmarks and of the quality studies) into the docs,
so no figure in them is typed by hand:

    python -m bench.render      # after a benchmark or study wrote its result

It rewrites the generated blocks of README.md (the defaults, from the configs) and docs/results.md (the study
logs), draws the pictures of docs/img/ (the lever study's and the Optuna study's forest plots, quality against
training minutes), rewrites each result's bench/results/<name>.md and writes BENCHMARKS.md. A block sits between
`<!-- begin generated: NAME -->` and `<!-- end generated: NAME -->`; a block whose result file does not exist yet
is left as it is. Paths in commands and logs are written relative to the checkout the command ran in (`--store
../bench-study`, `.venv/bin/python`), never as one machine's absolute paths.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from bench import common

README = common.REPO / "README.md"
RESULTS_MD = common.REPO / "docs" / "results.md"
MULTICLASS_MD = common.REPO / "docs" / "multi-class.md"
IMG_DIR = common.REPO / "docs" / "img"
BENCHMARKS_MD = common.REPO / "BENCHMARKS.md"
# result files in the order BENCHMARKS.md lists them: the speed benchmarks (bench.run_all runs these), the quality
# studies (studies/, each started on its own), then the test suite's time
SPEED = ("startup", "compute", "precision", "throughput", "epoch_profile", "inference", "scaling", "outage", "stages",
         "bigimage")
STUDIES = ("quality_default", "quality", "replicates", "isbi_best_30", "isbi_quick_5", "width32_30",
           "label_tolerance", "levers", "levers_more", "study", "study_30", "postprocess", "checkpoint_choice",
           "multiclass", "metric_agreement", "partitioning")
ORDER = (*SPEED, *STUDIES, "suite")
# the modules that ran as bench.<name> until they moved to studies/: results name today's module
MOVED_TO_STUDIES = re.compile(r"\bbench\.(quality|replicates|levers|study|thresholds|metric_agreement)\b")
# the train config keys whose defaults the README states; tests check the block against the configs
DEFAULT_KEYS = ("split.select", "split.report", "trainer.checkpoint", "trainer.monitor", "trainer.monitor_mode",
                "objective", "trainer.epochs", "trainer.steps_per_epoch", "trainer.batch_size", "trainer.crop_size",
                "optimizer.lr", "trainer.precision", "trainer.max_minutes")
GROUPS = ("model", "aug", "loss", "optimizer", "data", "split", "trainer", "tracking")
# where each generated block lives: the README keeps the small one, the study logs live in docs/results.md
BLOCKS = {"defaults": README, "default-recipe": RESULTS_MD, "compare-example": RESULTS_MD, "levers": RESULTS_MD,
          "levers-more": RESULTS_MD, "study": RESULTS_MD, "study-30": RESULTS_MD, "postprocess": RESULTS_MD,
          "isbi-best-30": RESULTS_MD, "isbi-quick-5": RESULTS_MD, "width32-30": RESULTS_MD,
          "label-tolerance": RESULTS_MD, "partitioning": RESULTS_MD,
          "test-suite": RESULTS_MD, "multiclass": MULTICLASS_MD}
METRICS = (("report_v_rand", "V_rand"), ("report_v_info", "V_info"), ("report_dice", "membrane Dice"),
           ("report_accuracy", "pixel accuracy"))


# --- paths relative to where a command ran -----------------------------------------------------------------------

# an absolute path of a machine: a name after "/", not part of a word, a URL ("http://") or a relative path
ABSOLUTE_PATH = re.compile(r"(?<![\w.~$/-])/(?=[\w.-])[^\s`'\"<>|,;()\[\]{}]*|(?<=sqlite:///)/[^\s`'\"<>|,;()]*")
MACHINE_ROOTS = ("work", "tmp", "root", "home", "opt", "usr", "var", "mnt", "Users", "srv", "scratch", "data")


def command_root(result: dict[str, Any]) -> str:
    """Returns the directory a result's command ran in: recorded since results carry `cwd`; before, the checkout
    whose .venv ran it (the benchmarks run from the checkout); else this checkout."""
    if result.get("cwd"):
        return result["cwd"]
    interpreter = str(result.get("command", "")).split(" ", 1)[0]
    if "/.venv/" in interpreter:
        return interpreter.split("/.venv/", 1)[0]
    return str(common.REPO)


def relative_path(path: str, root: str) -> str:
    """Returns `path` named from `root`: inside it relative ("bench/results"), beside it "../name", in the
    temporary directory "$TMPDIR/name", in the home directory "~/name", else relative to root all the same."""
    path, root = os.path.normpath(path), os.path.normpath(root)
    for base, shown in ((root, ""), (os.path.dirname(root), "../"), ("/tmp", "$TMPDIR/"),
                        (tempfile.gettempdir(), "$TMPDIR/"), (os.path.expanduser("~"), "~/")):
        if base not in ("", "/") and (path == base or path.startswith(base + "/")):
            inner = os.path.relpath(path, base)
            return (shown + inner if inner != "." else shown.rstrip("/")) or "."
    return os.path.relpath(path, root)


def portable_text(text: str, root: str) -> str:
    """Returns text with every absolute path of a machine named relative to `root` and the moved study modules
    under their name of today (studies.levers, not bench.levers)."""
    def shorten(match: re.Match) -> str:
        path = match.group(0)
        first = path.strip("/").split("/", 1)[0]
        if first not in MACHINE_ROOTS and not root.startswith("/" + first):
            return path  # not a machine's folder (e.g. /proc/cpuinfo, a URL path): as written
        if path.rsplit("/", 1)[-1].startswith("python") and not path.startswith(root + "/"):
            return path.rsplit("/", 1)[-1]  # an interpreter outside the checkout: by its name
        return relative_path(path, root)
    return MOVED_TO_STUDIES.sub(r"studies.\1", ABSOLUTE_PATH.sub(shorten, text))


def portable(result: dict[str, Any]) -> dict[str, Any]:
    """Returns the result with portable_text applied to every string in it (tables, notes, verdicts, command)."""
    root = command_root(result)

    def walk(value):
        if isinstance(value, str):
            return portable_text(value, root)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value
    return walk(result)


def make_portable(out: Path) -> None:
    """Rewrites each result file in `out` that still names a machine's folders (written before write_results made
    them portable) with those paths relative to where its command ran; the measurements are left as they are."""
    for path in sorted(out.glob("*.json")):
        result = json.loads(path.read_text())
        if (made := portable(result)) != result:
            path.write_text(json.dumps(made, indent=2) + "\n")
            common.log(f"{path.name}: paths made relative to where its command ran")


def load_results(out: Path = common.RESULTS_DIR) -> list[dict[str, Any]]:
    """Returns the results found in `out`, in ORDER, made portable."""
    paths = [out / f"{name}.json" for name in ORDER]
    return [portable(json.loads(path.read_text())) for path in paths if path.is_file()]


# --- BENCHMARKS.md and each result's markdown --------------------------------------------------------------------


def format_value(value: Any) -> str:
    """Returns a cell's text: floats to 3 significant digits (more below 1), everything else as str."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        if value == 0 or 0.001 <= abs(value) < 1e6:
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return f"{value:.3e}"
    return str(value)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Returns a GitHub-markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(format_value(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_machine(result: dict[str, Any]) -> str:
    """Returns the machine and version lines of a result as a markdown list."""
    m, v = result["machine"], result["versions"]
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in m["cpu_flags"].items())
    return "\n".join([
        f"- CPU: {m['cpu_model']} ({flags}); {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['memory_gb']} GB; load average {m['load_average_1m']} at start",
        f"- {m['platform']}, Python {m['python']}",
        "- " + ", ".join(f"{name} {version}" for name, version in v.items()),
    ])


def render_result(result: dict[str, Any], with_machine: bool = False, level: int = 2, title: str | None = None,
                  seen: set[str] | None = None) -> str:
    """Returns one benchmark's markdown section: method, command, tables, notes. Paths are made portable; a
    table heading already in `seen` (headings of earlier sections) gets the result's name, so each is unique."""
    result = portable(result)
    hashes = "#" * level
    parts = [f"{hashes} {title or result['title']}", "", result["method"], "",
             f"- command: `{result['command']}`" + (f" at commit {result['code']}" if "code" in result else ""),
             f"- mode: {result['mode']}{' (tiny sizes, 1 repeat: numbers are noise)' if result['mode'] == 'quick' else ''}; "
             f"started {result['started_utc']}; wall time {result.get('wall_seconds', 0):.0f} s; "
             f"peak RSS {result.get('peak_rss_mb', 0):.0f} MB"]
    if with_machine:
        parts += [render_machine(result)]
    seen = set() if seen is None else seen
    for tab in result["tables"]:
        heading = tab["title"]
        if heading and heading in seen:
            heading = f"{heading} ({result['benchmark']})"
        seen.add(heading)
        parts += ["", f"{hashes}# {heading}" if heading else "", "", markdown_table(tab["columns"], tab["rows"])]
    if result["notes"]:
        parts += ["", *[f"- {note}" for note in result["notes"]]]
    return "\n".join(parts) + "\n"


def write_results(result: dict[str, Any], out_dir: Path) -> Path:
    """Writes <out>/<name>.json and <out>/<name>.md; returns the JSON path."""
    result = dict(result)
    result["wall_seconds"] = round(time.monotonic() - result.pop("_started"), 2)
    result["peak_rss_mb"] = round(common.lifetime_peak_rss_mb(), 1)
    result = portable(result)  # the file names no machine's folders: paths relative to where the command ran
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result['benchmark']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{result['benchmark']}.md").write_text(render_result(result, with_machine=True))
    common.log(f"wrote {path} and {path.with_suffix('.md')} ({result['wall_seconds']:.0f} s)")
    return path


def section_titles(results: Sequence[dict[str, Any]]) -> list[str]:
    """Returns each result's section title: its own title, with its name where two results share one."""
    titles = [r["title"] for r in results]
    return [f"{title} ({r['benchmark']})" if titles.count(title) > 1 else title for title, r in zip(titles, results)]


def render_benchmarks(results: Sequence[dict[str, Any]], command: str) -> str:
    """Returns BENCHMARKS.md: how it was made, an index of what ran where and when (results may come from
    different runs and machines: each section names its own), then one section per result."""
    if not results:
        return "# Benchmarks\n\nNo results yet: run `python -m bench.run_all`.\n"
    results = [portable(r) for r in results]
    titles = section_titles(results)
    index = markdown_table(["benchmark", "result", "started (UTC)", "commit", "CPU", "mode"], [
        [r["title"].split(":")[0], f"{r['benchmark']}.json", r["started_utc"].replace("T", " ")[:16],
         r.get("code", "not recorded"), cpu_summary(r), r["mode"]] for r in results])
    seen = set(titles)
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench.render` (and `python -m bench.run_all`) from bench/results/*.json: the speed "
        "benchmarks of bench/ and the quality studies of studies/; do not edit by hand. Each section below names its "
        "command, commit, machine and date; absolute numbers hold for that machine and its load at the time, so "
        "compare ratios measured in one run, never figures of two machines. Paths are relative to the checkout the "
        "command ran in. [docs/results.md](docs/results.md) reads the quality studies, with pictures.",
        "",
        f"- rendered by: `{portable_text(command, str(common.REPO))}`",
        "",
        index,
        "",
        *[render_result(result, with_machine=True, title=title, seen=seen) for result, title in zip(results, titles)],
    ]
    return "\n".join(parts)


def cpu_summary(result: dict[str, Any]) -> str:
    """Returns e.g. "Intel(R) Xeon(R) Processor (avx2, avx512f, avx512_bf16, amx_bf16)"."""
    m = result["machine"]
    return f"{m['cpu_model']} ({', '.join(f for f, present in m['cpu_flags'].items() if present)})"


def write_benchmarks_md(out: Path, target: Path, command: str) -> list[dict[str, Any]]:
    """Writes BENCHMARKS.md (to `target`) from the results in `out`; returns those results."""
    results = load_results(out)
    target.write_text(render_benchmarks(results, command))
    common.log(f"wrote {target}")
    return results


# --- the generated blocks ----------------------------------------------------------------------------------------


def compose_train_defaults():
    """Returns (config, {group: chosen option}) of plain `segexp train`."""
    from omegaconf import OmegaConf

    from segexp.config.compose import compose

    cfg = compose("train", with_hydra=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    return cfg, {group: choices[group] for group in GROUPS}


def defaults_block(cfg, choices: dict[str, str]) -> str:
    """Returns the markdown table of what plain `segexp train` uses."""
    from omegaconf import OmegaConf

    rows = [f"| `{group}` | `{option}` |" for group, option in choices.items()]
    for key in DEFAULT_KEYS:
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        rows.append(f"| `{key}` | `{json.dumps(value)}` |")
    return "\n".join(["| setting | default |", "|---|---|", *rows])


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    flags = ", ".join(flag for flag, present in m["cpu_flags"].items() if present) or "none of " + ", ".join(
        m["cpu_flags"])
    return (f"{m['cpu_model']} ({flags}), {m['usable_cores']} cores, {result['started_utc'][:10]}, "
            f"commit {result.get('code', 'unknown')}")


def source_line(result: dict[str, Any], what: str) -> str:
    """Returns "([bench/results/<name>.json](...); BENCHMARKS.md has <what>.)", linked from docs/."""
    name = result["benchmark"]
    return (f"([bench/results/{name}.json](../bench/results/{name}.json); [BENCHMARKS.md](../BENCHMARKS.md) "
            f"has {what}.)")


def default_recipe_block(result: dict[str, Any]) -> str:
    """Returns the default recipe's report scores from `studies.quality --name quality_default` results."""
    (recipe,) = result["recipes"]
    rows = []
    for tta, m in (("no", recipe["eval"]), ("8-way", recipe["eval_tta"])):
        rows.append(f"| {tta} | {m['v_rand']:.4f} | {m['v_info']:.4f} | {m['dice']:.4f} | {m['iou']:.4f} | "
                    f"{m['accuracy']:.4f} |")
    base = recipe["all_cell"]
    rows.append(f"| all cell, no model | {base['v_rand']:.4f} | {base['v_info']:.4f} | {base['dice']:.4f} | "
                f"{base['iou']:.4f} | {base['accuracy']:.4f} |")
    return "\n".join([
        f"`python -m segexp train` on {machine_line(result)} (trained at commit "
        f"{recipe.get('trained_at_commit', 'unknown')}): {recipe['epochs_run']} epochs in "
        f"{recipe['train_minutes']:.1f} min of training; the checkpoint of epoch {recipe['checkpoint_epoch']} was "
        f"chosen by V_rand on the selection slices {recipe['select_slices']} (there it scored "
        f"{recipe['select_v_rand']:.4f}); the scores below are on the report slices {recipe['report_slices']}, "
        "which no choice saw, from `segexp evaluate` without and with 8-way TTA:",
        "",
        "| TTA | V_rand | V_info | membrane Dice | membrane IoU | pixel accuracy |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Command: `{result['command']}` ([bench/results/{result['benchmark']}.json]"
        f"(../bench/results/{result['benchmark']}.json)).",
    ])


def suite_block(result: dict[str, Any]) -> str:
    """Returns the test suite's size and time from `python -m bench.suite` results."""
    return (f"On {machine_line(result)}, `{result['settings']['command']}` in a fresh clone (creating the venv "
            f"and installing included) took {result['wall_seconds'] / 60:.1f} min and ended with "
            f"`{result['summary']}` (`python -m bench.suite --repo CLONE`).")


def compare_block(result: dict[str, Any]) -> str:
    """Returns `segexp compare`'s table and verdicts on the sweeps of `python -m studies.replicates`."""
    runs, comparison = result["tables"][:2]
    lines = [f"`python -m studies.replicates` on {machine_line(result)}: "
             f"{' and '.join(f'`experiment={r}`' for r in result['recipes'])}, seeds "
             f"{', '.join(map(str, result['seeds']))}, {result['budget_minutes']:g} training minutes per run; then "
             f"`python -m segexp compare {' '.join(f'<sweep of {r}>' for r in result['recipes'])}` printed:", "",
             *(f"    {line}" for line in result["verdicts"]), "",
             *comparison_lines(comparison),
             source_line(result, "each run")]
    return "\n".join(lines)


def seeds_block(result: dict[str, Any]) -> str:
    """Returns the runs of `python -m studies.replicates` over seeds (one recipe or more): each run, the mean and
    spread per recipe, segexp compare's verdicts when there are two recipes, and the notes given with --note."""
    tables = {table["title"].split(" (")[0]: table for table in result["tables"]}
    runs, spread = tables["Each run"], tables["Mean and spread over seeds"]
    settings = result["settings"]
    recipes, seeds = " and ".join(f"`{r}`" for r in settings["recipes"]), ", ".join(map(str, settings["seeds"]))
    lines = [f"`python -m {result['command'].split(' -m ', 1)[-1]}` on {machine_line(result)}: {recipes} on seeds "
             f"{seeds}, "
             f"{settings['budget_minutes']:g} training minutes per run; scores on the report slices, checkpoints and "
             "stage parameters chosen on the selection slices.", "",
             markdown_table(runs["columns"], [[cell(v) for v in row] for row in runs["rows"]]), "",
             markdown_table(spread["columns"], [[cell(v) for v in row] for row in spread["rows"]]), ""]
    if result["verdicts"]:
        lines += ["`segexp compare` of the sweeps printed:", "", *(f"    {line}" for line in result["verdicts"]), ""]
    if comparison := next((t for t in result["tables"] if t["title"].startswith("segexp compare")), None):
        lines += comparison_lines(comparison)
    own = ("`segexp compare`:", "Pictures:", "Threshold:")
    lines += [*(note for note in result["notes"] if not note.startswith(own)), "", source_line(result, "each run")]
    return "\n".join(lines)


def tables_block(result: dict[str, Any]) -> str:
    """Returns a small study's command, machine, tables and notes as they are."""
    lines = [f"`python -m {result['command'].split(' -m ', 1)[-1]}` on {machine_line(result)}. {result['method']}", ""]
    for table in result["tables"]:
        lines += [f"**{table['title']}**", "", markdown_table(table["columns"], [[cell(v) for v in row]
                                                                                 for row in table["rows"]]), ""]
    lines += [*result["notes"], "", source_line(result, "the same tables")]
    return "\n".join(lines)


def postprocess_block(result: dict[str, Any]) -> str:
    """Returns the on-vs-off comparison of `python -m studies.postprocess`: segexp compare's verdicts on the same
    checkpoints, and each run's scores with the parameters its selection slices chose."""
    runs, comparison = result["tables"][:2]
    methods = result["settings"]["methods"]
    lines = [f"`python -m {result['command'].split(' -m ', 1)[-1]}` on {machine_line(result)}. {result['method']}",
             "", f"**{comparison['title']}**", "", markdown_table(comparison["columns"], comparison["rows"]), "",
             f"**{runs['title']}**", "", markdown_table(runs["columns"], [[cell(v) for v in row] for row in runs["rows"]]),
             "", *(f"{note}" for note in result["notes"] if not note.startswith("`segexp compare`")), "",
             "Report slice panels of the first checkpoint (image | truth | probability | errors at 0.5 | segments, "
             "random colours): " + ", ".join(f"[{m}](../bench/results/postprocess_{m}_panel.png)" for m in methods)
             + ".", source_line(result, "each evaluation")]
    return "\n".join(lines)


def multiclass_block(result: dict[str, Any]) -> str:
    """Returns the multi-class example of `python -m studies.multiclass`: per-class report scores per seed and
    over the seeds, and the pictures of one run as MLflow holds them."""
    runs, summary = result["tables"][:2]
    name = result["benchmark"]
    lines = [f"`python -m {result['command'].split(' -m ', 1)[-1]}` on {machine_line(result)}. {result['method']}",
             "", f"**{summary['title']}**", "", markdown_table(summary["columns"], [[cell(v) for v in row]
                                                                               for row in summary["rows"]]),
             "", f"**{runs['title']}**", "", markdown_table(runs["columns"], [[cell(v) for v in row]
                                                                          for row in runs["rows"]]),
             "", *result["notes"], "",
             f"![confusion matrix of the report slices](../bench/results/{name}_confusion.png)",
             f"![a report slice: image, truth, prediction](../bench/results/{name}_panel.png)", "",
             f"![each class's selection Dice per epoch, one line per seed](../bench/results/{name}_curves.png)", "",
             "MLflow keys of each run: " + ", ".join(f"`{k}`" for k in result["metric_keys"]
                                                     if k.startswith("report_")) + ".",
             source_line(result, "the whole result")]
    return "\n".join(lines)


def levers_block(result: dict[str, Any], a_is: str = "isbi_best as it was when the study began") -> str:
    """Returns the lever study's verdicts and comparison table from `python -m studies.levers` results."""
    runs, comparison, _ = result["tables"]
    lines = [f"`python -m {result['command'].split(' -m ', 1)[-1]}` on {machine_line(result)}: each lever a "
             f"`segexp train -m experiment=isbi_best "
             f"trainer.max_minutes={result['settings']['budget_minutes']:g} <lever> trainer.seed="
             f"{','.join(map(str, result['settings']['seeds']))}` sweep; `segexp compare` of the sweeps printed "
             f"(A = {a_is}):", "",
             *(f"    {line}" for line in result["verdicts"]), "",
             *comparison_lines(comparison),
             "The pixel threshold, chosen per checkpoint on the selection slices (best accuracy) instead of 0.5:", "",
             *(f"    {line}" for line in result["threshold_verdicts"]), "",
             source_line(result, "each run and the commit it was trained at")]
    return "\n".join(lines)


def study_block(result: dict[str, Any]) -> str:
    """Returns the study's trials, its winner and the final comparison from `python -m studies.study` results."""
    trials, _, comparison = result["tables"][:3]
    settings = result["settings"]
    lines = [f"`python -m studies.study` on {machine_line(result)}: {len(trials['rows'])} trials of "
             f"`segexp train -m experiment=isbi_best hparams_search=isbi_best trainer.max_minutes="
             f"{settings['budget_minutes']:g}`, then the winner over seeds {','.join(map(str, settings['seeds']))} "
             f"against {' and '.join(settings['against'])}:", "",
             "| trial | overrides on isbi_best | state | selection V_rand | report V_rand | report Dice | epochs |",
             "|---" * 7 + "|",
             *(f"| {row[0]} | {row[1]} | {row[2]}{' (winner)' if row[-1] else ''} | {cell(row[3])} | {cell(row[4])} "
               f"| {cell(row[6])} | {cell(row[8])} |" for row in trials["rows"]), "",
             "`segexp compare` of the baselines and the winner retrained on fresh seeds printed:", "",
             *(f"    {line}" for line in result["verdicts"]), "",
             *comparison_lines(comparison),
             "The pixel threshold, chosen per checkpoint on the selection slices (best accuracy) instead of 0.5 "
             "(V_rand and V_info are the best over thresholds, as the challenge's script scores them):", "",
             *(f"    {line}" for line in result.get("threshold_verdicts", [])), "",
             source_line(result, "each run and the commit it was trained at")]
    return "\n".join(lines)


def comparison_lines(comparison: dict[str, Any]) -> list[str]:
    """Returns the markdown rows of a compare_table (metric, A, other, other - A, p), then a blank line."""
    return ["| metric | A | other | other - A | p |", "|---" * 5 + "|",
            *("| " + " | ".join(str(c) for c in row[:5]) + " |" for row in comparison["rows"]), ""]


def confirmation_block(result: dict[str, Any]) -> str:
    """Returns a study winner retrained at another budget against the baseline (`studies.study --study-from`)."""
    _, runs, comparison = result["tables"][:3]
    settings = result["settings"]
    lines = [f"`python -m {result['command'].split(' -m ', 1)[-1]}` on {machine_line(result)}: the study's winner retrained "
             f"for {settings['budget_minutes']:g} minutes on seeds {','.join(map(str, settings['seeds']))} against "
             f"{' and '.join(settings['against'])}'s sweep at the same budget:", "",
             "| " + " | ".join(runs["columns"]) + " |", "|---" * len(runs["columns"]) + "|",
             *("| " + " | ".join(cell(c) for c in row) + " |" for row in runs["rows"]), "",
             *comparison_lines(comparison),
             "The pixel threshold, chosen per checkpoint on the selection slices (best accuracy) instead of 0.5:", "",
             *(f"    {line}" for line in result.get("threshold_verdicts", [])), "",
             *(note for note in result["notes"] if note.startswith(("Baseline", "Conditions"))), "",
             source_line(result, "the whole result")]
    return "\n".join(lines)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and value >= 1 else f"{value:.4f}"
    return str(value)


# the blocks written from result files: block name -> (result file stem, renderer)
RESULT_BLOCKS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "default-recipe": ("quality_default", default_recipe_block),
    "test-suite": ("suite", suite_block),
    "compare-example": ("replicates", compare_block),
    "levers": ("levers", levers_block),
    "levers-more": ("levers_more", lambda r: levers_block(r, "isbi_best as shipped, precision by the speed probe")),
    "study": ("study", study_block),
    "study-30": ("study_30", confirmation_block),
    "postprocess": ("postprocess", postprocess_block),
    "isbi-best-30": ("isbi_best_30", seeds_block),
    "isbi-quick-5": ("isbi_quick_5", seeds_block),
    "width32-30": ("width32_30", seeds_block),
    "label-tolerance": ("label_tolerance", tables_block),
    "partitioning": ("partitioning", tables_block),
    "multiclass": ("multiclass", multiclass_block),
}


def replace_block(text: str, name: str, block: str, where: str = "the file") -> str:
    """Returns text with the named generated block's body replaced; raises if the markers are missing."""
    pattern = re.compile(rf"(<!-- begin generated: {name} -->\n).*?(<!-- end generated: {name} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"{where} has no generated block {name!r}")
    return pattern.sub(lambda m: m.group(1) + block.rstrip("\n") + "\n" + m.group(2), text)


def rendered_blocks(results: Path) -> dict[str, str]:
    """Returns {block name: its text} of the defaults and of every block whose result file exists."""
    blocks = {"defaults": defaults_block(*compose_train_defaults())}
    for name, (stem, render) in RESULT_BLOCKS.items():
        path = results / f"{stem}.json"
        if path.is_file():
            blocks[name] = render(portable(json.loads(path.read_text())))
        else:
            common.log(f"{path} missing: block {name} left as it is")
    return blocks


def write_blocks(blocks: dict[str, str]) -> None:
    """Rewrites each block in the file BLOCKS names for it."""
    for doc in dict.fromkeys(BLOCKS.values()):
        text = doc.read_text()
        for name, block in blocks.items():
            if BLOCKS[name] == doc:
                text = replace_block(text, name, block, doc.relative_to(common.REPO).as_posix())
        doc.write_text(text)
        common.log(f"wrote {doc}")


# --- pictures ----------------------------------------------------------------------------------------------------


def comparison_of(result: dict[str, Any]) -> dict[str, Any]:
    """Returns the comparison data (segexp compare's comparison.json) a study kept in its result."""
    if "comparison" not in result:
        raise ValueError(f"bench/results/{result['benchmark']}.json holds no comparison data (a study run before "
                         "segexp compare wrote comparison.json); run the study again, or with --reuse-training")
    return result["comparison"]


def recipe_labels(result: dict[str, Any]) -> dict[str, str]:
    """Returns {letter: recipe name} of the result's `segexp compare`."""
    return {r["letter"]: r["name"] for r in comparison_of(result)["recipes"]}


def differences(result: dict[str, Any]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Returns {letter: {metric: (other - A, 95% CI half-width, p)}} of the result's `segexp compare`."""
    from segexp.experiments.comparison import differences_by_letter

    return differences_by_letter(comparison_of(result))


def chosen_threshold_differences(result: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """Returns {report_<metric>: (winner - baseline, CI, p)} with both at their chosen thresholds (studies.study)."""
    return {metric: (d["diff"], d["ci95"], d["p"]) for metric, d in result.get("threshold_differences", {}).items()}


def new_figure(width: float, height: float):
    """Returns a matplotlib Figure drawn by the Agg canvas, without pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def forest_plot(rows: Sequence[tuple[str, dict[str, tuple[float, float, float]] | None]], title: str, path: Path,
                note: str) -> Path:
    """Draws one panel per report metric: each row's difference with its 95% CI (a row with None is a group
    heading), a vertical line at zero; a filled marker where p < 0.05. Returns the PNG's path."""
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(13.5, 1.3 + 0.36 * len(rows))
    axes = figure.subplots(1, len(METRICS), sharey=True)
    ys = list(range(len(rows)))[::-1]
    for ax, (metric, shown) in zip(axes, METRICS):
        spans = [abs(d[metric][0]) + d[metric][1] for _, d in rows if d and metric in d]
        limit = 1.12 * max(spans, default=0.01)
        for y, (label, diffs) in zip(ys, rows):
            if diffs is None:
                ax.axhspan(y - 0.5, y + 0.5, color="0.93", zorder=0)
                continue
            if metric not in diffs:
                continue
            diff, ci, p = diffs[metric]
            significant = p < 0.05
            color = "tab:red" if significant else "tab:blue"
            ax.errorbar(diff, y, xerr=ci, fmt="o", color=color, mfc=color if significant else "white", ms=6,
                        capsize=3, lw=1.4)
        ax.axvline(0, color="0.2", lw=1)
        ax.set_xlim(-limit, limit)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, symmetric=True))
        ax.set_title(shown, fontsize=11)
        ax.set_xlabel("difference from isbi_best", fontsize=9)
        ax.grid(axis="x", color="0.85", lw=0.6)
        ax.tick_params(labelsize=8.5)
    axes[0].set_yticks(ys, [label for label, _ in rows])
    axes[0].set_ylim(-0.6, len(rows) - 0.4)
    for tick, (_, diffs) in zip(axes[0].get_yticklabels(), rows):
        if diffs is None:
            tick.set_fontweight("bold")
    figure.suptitle(title, fontsize=12)
    figure.supxlabel(textwrap.fill(note, 170), fontsize=8.5, color="0.3")
    figure.savefig(path, dpi=110)
    common.log(f"wrote {path}")
    return path


def lever_rows(result: dict[str, Any], heading: str) -> list[tuple[str, dict | None]]:
    """Returns a heading row, then (recipe, its differences from A) per recipe of a lever study."""
    labels, diffs = recipe_labels(result), differences(result)
    rows: list[tuple[str, dict | None]] = [(heading, None)]
    for letter in sorted(diffs):
        label = labels.get(letter, letter)
        rows.append(("isbi_best as shipped (precision, XLA: auto)" if label == "isbi_best" else label, diffs[letter]))
    return rows


def levers_figure(levers: dict[str, Any], more: dict[str, Any] | None, path: Path) -> Path:
    """Draws the lever study's forest plot from levers.json (and levers_more.json)."""
    rows = lever_rows(levers, "levers: A = isbi_best when the study began (float32)")
    if more:
        rows += lever_rows(more, "levers_more: A = isbi_best as shipped")
    n = levers["settings"]["seeds"]
    return forest_plot(rows, "Which levers move isbi_best: difference from isbi_best on the report slices "
                       f"({len(n)} seeds, {levers['settings']['budget_minutes']:g} training minutes each, paired by "
                       "seed; bars: 95% CI)", path,
                       "Filled red: p < 0.05 (paired t-test, uncorrected); hollow blue: no detectable difference. "
                       "Pixel accuracy and Dice at threshold 0.5; V_rand and V_info best over thresholds. "
                       "Source: bench/results/levers.json, levers_more.json.")


def winner_letter(result: dict[str, Any]) -> str:
    """Returns the compare letter of the study's winner (the sweep run as run_name=study_winner)."""
    return next(letter for letter, label in recipe_labels(result).items() if "run_name=study_winner" in label)


def study_figure(studies: Sequence[dict[str, Any]], path: Path) -> Path:
    """Draws the Optuna study's winner against isbi_best at each budget, at threshold 0.5 and at the thresholds
    each checkpoint's selection slices chose."""
    rows: list[tuple[str, dict | None]] = []
    left_out = []  # the other baselines (seed_replica): on another scale, they would flatten the winner's bars
    for result in studies:
        labels, diffs = recipe_labels(result), differences(result)
        left_out += [f"{labels[letter].split()[0]} ({result['benchmark']}.json, V_rand CI "
                     f"+-{d['report_v_rand'][1]:.2g})" for letter, d in diffs.items()
                     if letter != winner_letter(result) and "report_v_rand" in d]
        minutes = result["settings"]["budget_minutes"]
        rows += [(f"{minutes:g} training minutes ({result['benchmark']})", None),
                 ("threshold 0.5", differences(result)[winner_letter(result)]),
                 ("chosen thresholds", chosen_threshold_differences(result))]
    return forest_plot(rows, "The Optuna study's winner minus isbi_best on the report slices (3 seeds each, paired by "
                       "seed; bars: 95% CI)", path,
                       "Filled red: p < 0.05 (paired t-test, uncorrected); hollow blue: no detectable difference. "
                       "Chosen thresholds: each checkpoint's pixel threshold with the best accuracy on the selection "
                       "slices, which moves only Dice and accuracy (V_rand and V_info are the best over thresholds "
                       "already)." + (f" Left out: {', '.join(left_out)}." if left_out else "") + " Source: "
                       + ", ".join(f"bench/results/{r['benchmark']}.json" for r in studies) + ".")


def study_minutes_figure(studies: Sequence[dict[str, Any]], path: Path) -> Path:
    """Draws each seed's report scores of isbi_best and the study's winner against the training minutes."""
    figure = new_figure(13.5, 3.6)
    axes = figure.subplots(1, len(METRICS))
    recipes = {"isbi_best": ("tab:blue", -0.6), "winner": ("tab:orange", 0.6)}
    for ax, (metric, shown) in zip(axes, METRICS):
        for recipe, (color, shift) in recipes.items():
            means = []
            for result in studies:
                runs = next(t for t in result["tables"] if t["title"].startswith("The winner and the baselines"))
                column = runs["columns"].index(metric)
                minutes = result["settings"]["budget_minutes"]
                values = [row[column] for row in runs["rows"] if row[0] == recipe and row[column] is not None]
                ax.plot([minutes + shift] * len(values), values, "o", color=color, mfc="white", ms=5)
                means.append((minutes, sum(values) / len(values)))
            ax.plot(*zip(*means), "-", color=color, lw=2, label=f"{recipe} (mean; points: seeds)")
        ax.set_title(shown, fontsize=11)
        ax.set_xlabel("training minutes", fontsize=9)
        ax.set_xticks(sorted({r["settings"]["budget_minutes"] for r in studies}))
        ax.grid(color="0.88", lw=0.6)
        ax.tick_params(labelsize=8.5)
    axes[0].set_ylabel("report slices (25-29)", fontsize=9)
    axes[0].legend(fontsize=8, loc="lower right")
    figure.suptitle("Quality against training minutes: isbi_best and the Optuna study's winner, 3 seeds each",
                    fontsize=12)
    figure.supxlabel(textwrap.fill(
        "Report slices, threshold 0.5 for Dice and accuracy. Sources: " + ", ".join(
            f"bench/results/{r['benchmark']}.json ({r['settings']['budget_minutes']:g} min)" for r in studies)
        + "." + (" The recipes trained under different conditions: docs/results.md names them."
                 if any(note.startswith("Conditions") for r in studies for note in r["notes"]) else ""),
        170), fontsize=8.5, color="0.3")
    figure.savefig(path, dpi=110)
    common.log(f"wrote {path}")
    return path


def draw_pictures(results: Path, img_dir: Path = IMG_DIR) -> list[Path]:
    """Draws the pictures of docs/results.md whose result files exist; returns their paths."""
    found = {name: json.loads((results / f"{name}.json").read_text())
             for name in ("levers", "levers_more", "study", "study_30") if (results / f"{name}.json").is_file()}
    img_dir.mkdir(parents=True, exist_ok=True)
    drawn = []
    if "levers" in found:
        drawn.append(levers_figure(found["levers"], found.get("levers_more"), img_dir / "levers_forest.png"))
    studies = [found[name] for name in ("study", "study_30") if name in found]
    if studies:
        drawn.append(study_figure(studies, img_dir / "study_forest.png"))
        drawn.append(study_minutes_figure(studies, img_dir / "study_minutes.png"))
    return drawn


# --- all of it ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Renders everything from bench/results; returns the generated blocks by name."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    results = common.RESULTS_DIR
    make_portable(results)
    blocks = rendered_blocks(results)
    write_blocks(blocks)
    draw_pictures(results)
    for result in load_results(results):
        (results / f"{result['benchmark']}.md").write_text(render_result(result, with_machine=True))
    write_benchmarks_md(results, BENCHMARKS_MD, common.command_line("render", argv))
    return blocks


if __name__ == "__main__":
    main()
