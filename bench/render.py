"""Writes README.md's generated blocks from the configs and from benchmark result files, so no figure in
the README is typed by hand:

    python -m bench.readme           # after bench.quality --name quality_default ..., bench.replicates and bench.suite

Each block sits between `<!-- begin generated: NAME -->` and `<!-- end generated: NAME -->`; a block
whose source does not exist yet is left as it is.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from bench import common

README = common.REPO / "README.md"
# the train config keys whose defaults the README states; tests check the block against the configs
DEFAULT_KEYS = ("split.select", "split.report", "trainer.checkpoint", "trainer.monitor", "trainer.monitor_mode",
                "objective", "trainer.epochs", "trainer.steps_per_epoch", "trainer.batch_size", "trainer.crop_size",
                "optimizer.lr", "trainer.precision", "trainer.max_minutes")
GROUPS = ("model", "aug", "loss", "optimizer", "data", "split", "trainer", "tracking")


def compose_train_defaults():
    """Returns (config, {group: chosen option}) of plain `segexp train`."""
    from omegaconf import OmegaConf

    from segexp.config import compose

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


def default_recipe_block(result: dict[str, Any]) -> str:
    """Returns the default recipe's report scores from `bench.quality --name quality_default` results."""
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
        f"Command: `{result['command']}` (bench/results/{result['benchmark']}.json).",
    ])


def suite_block(result: dict[str, Any]) -> str:
    """Returns the test suite's size and time from `python -m bench.suite` results."""
    return (f"On {machine_line(result)}, `{result['settings']['command']}` in a fresh clone (creating the venv "
            f"and installing included) took {result['wall_seconds'] / 60:.1f} min and ended with "
            f"`{result['summary']}` (`python -m bench.suite --repo CLONE`).")


def compare_block(result: dict[str, Any]) -> str:
    """Returns `segexp compare`'s table and verdicts on the sweeps of `python -m bench.replicates`."""
    runs, comparison = result["tables"]
    lines = [f"`python -m bench.replicates` on {machine_line(result)}: "
             f"{' and '.join(f'`experiment={r}`' for r in result['recipes'])}, seeds "
             f"{', '.join(map(str, result['seeds']))}, {result['budget_minutes']:g} training minutes per run; then "
             f"`python -m segexp compare {' '.join(f'<sweep of {r}>' for r in result['recipes'])}` printed:", "",
             *(f"    {line}" for line in result["verdicts"]), "",
             "| " + " | ".join(comparison["columns"][:5]) + " |", "|---" * 5 + "|",
             *("| " + " | ".join(str(c) for c in row[:5]) + " |" for row in comparison["rows"]), "",
             f"(bench/results/{result['benchmark']}.json; BENCHMARKS.md has each run.)"]
    return "\n".join(lines)


def levers_block(result: dict[str, Any], a_is: str = "isbi_best as it was when the study began") -> str:
    """Returns the lever study's verdicts and comparison table from `python -m bench.levers` results."""
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
             f"(bench/results/{result['benchmark']}.json; BENCHMARKS.md has each run and the commit it was trained at.)"]
    return "\n".join(lines)


def study_block(result: dict[str, Any]) -> str:
    """Returns the study's trials, its winner and the final comparison from `python -m bench.study` results."""
    trials, _, comparison = result["tables"][:3]
    settings = result["settings"]
    lines = [f"`python -m bench.study` on {machine_line(result)}: {len(trials['rows'])} trials of "
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
             f"(bench/results/{result['benchmark']}.json; BENCHMARKS.md has each run and the commit it was trained at.)"]
    return "\n".join(lines)


def comparison_lines(comparison: dict[str, Any]) -> list[str]:
    """Returns the markdown rows of a compare_table (metric, A, other, other - A, p), then a blank line."""
    return ["| metric | A | other | other - A | p |", "|---" * 5 + "|",
            *("| " + " | ".join(str(c) for c in row[:5]) + " |" for row in comparison["rows"]), ""]


def confirmation_block(result: dict[str, Any]) -> str:
    """Returns a study winner retrained at another budget against the baseline (`bench.study --study-from`)."""
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
             f"(bench/results/{result['benchmark']}.json; BENCHMARKS.md has the whole result.)"]
    return "\n".join(lines)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and value >= 1 else f"{value:.4f}"
    return str(value)


def replace_block(text: str, name: str, block: str) -> str:
    """Returns text with the named generated block's body replaced; raises if the markers are missing."""
    pattern = re.compile(rf"(<!-- begin generated: {name} -->\n).*?(<!-- end generated: {name} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no generated block {name!r}")
    return pattern.sub(lambda m: m.group(1) + block.rstrip("\n") + "\n" + m.group(2), text)


def main(argv: list[str] | None = None) -> str:
    results = common.RESULTS_DIR
    text = README.read_text()
    text = replace_block(text, "defaults", defaults_block(*compose_train_defaults()))
    sources = {"default-recipe": (results / "quality_default.json", default_recipe_block),
               "test-suite": (results / "suite.json", suite_block),
               "compare-example": (results / "replicates.json", compare_block),
               "levers": (results / "levers.json", levers_block),
               "levers-more": (results / "levers_more.json",
                               lambda r: levers_block(r, "isbi_best as shipped, precision by the speed probe")),
               "study": (results / "study.json", study_block),
               "study-30": (results / "study_30.json", confirmation_block)}
    for name, (path, render) in sources.items():
        if path.is_file():
            text = replace_block(text, name, render(json.loads(path.read_text())))
        else:
            common.log(f"{path} missing: block {name} left as it is")
    README.write_text(text)
    common.log(f"wrote {README}")
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
