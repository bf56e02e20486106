"""The docs a reader opens name no machine's absolute paths, link only to files and sections that exist, and
give each BENCHMARKS.md heading once; the renderer writes paths relative to where a command ran, and its forest
plots read the differences `segexp compare` printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import render

REPO = Path(__file__).resolve().parents[1]

PAGES = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").rglob("*.md"))]
# the result files those pages are written from, committed beside them, and the script that writes the pictures
RESULT_FILES = sorted((REPO / "bench" / "results").glob("*.json")) + sorted((REPO / "bench" / "results").glob("*.md"))
WRITERS = [REPO / "docs" / "screenshots.py"]
# a path of one machine: any absolute path (but the kernel's /dev and /proc, the same everywhere) at the start of a
# line or after a blank, a quote, a bracket, "=", ":", ",", ">", "sqlite:///" or "file://"
MACHINE_PATH = re.compile(r"(?:^|[\s`(\[=:,>'\"]|sqlite:///|file://)/(?!dev/|proc/)[\w.~-]+/", re.M)
PLACEHOLDER = re.compile(r"<[\w -]+>")  # `sqlite:///<cwd>/outputs/...`: a name for the reader's own folder


def machine_paths(text: str) -> list[str]:
    """Returns the lines of `text` that name an absolute path of a machine."""
    return [line for line in text.splitlines() if MACHINE_PATH.search(PLACEHOLDER.sub("folder", line))]


def test_the_machine_path_check_finds_paths_wherever_they_stand():
    for text in ("see /work/main/x", "uri=sqlite:////root/x.db", "file:///home/me/a.png", "[/opt/y](z)", "a,/mnt/b/c",
                 "-> /srv/data/x", "'/Users/me/x'", "/data/isbi/x.png"):
        assert machine_paths(text) == [text], text
    for text in ("https://github.com/org/repo", "sqlite:///<cwd>/outputs/mlflow.db", "2>/dev/null", "/proc/stat",
                 "docs/training.md", "`outputs/runs/<date>/`"):
        assert machine_paths(text) == [], text
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")


@pytest.mark.parametrize("page", PAGES + RESULT_FILES + WRITERS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_page_names_an_absolute_path_of_a_machine(page):
    found = machine_paths(page.read_text())
    assert not found, f"{page.name}: {found[:3]}"


def anchors(page: Path) -> set[str]:
    """Returns the fragments GitHub gives a page's headings: lower case, punctuation dropped, blanks as "-"."""
    headings = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_picture_and_section_exists(page):
    links = [(target, fragment) for target, fragment in LINK.findall(page.read_text()) if "://" not in target]
    missing = [target for target, _ in links if target and not (page.parent / target).exists()]
    assert not missing, f"{page.name}: {missing}"
    unknown = [f"{target}#{fragment}" for target, fragment in links
               if fragment and (target or page.name).endswith(".md")
               and fragment not in anchors(page.parent / target if target else page)]
    assert not unknown, f"{page.name}: {unknown}"


def test_each_benchmarks_heading_is_unique():
    headings = [line for line in (REPO / "BENCHMARKS.md").read_text().splitlines() if line.startswith("#")]
    assert headings and len(headings) == len(set(headings)), sorted(h for h in headings if headings.count(h) > 1)


def test_the_renderer_names_paths_from_where_the_command_ran():
    root = "/work/checkout"
    assert render.portable_text("/work/checkout/.venv/bin/python -m bench.levers --store /work/bench-study "
                                "--out /work/checkout/bench/results", root) == \
        ".venv/bin/python -m studies.levers --store ../bench-study --out bench/results"
    assert render.portable_text("tracking.uri=sqlite:////work/bench-study/mlflow.db", root) == \
        "tracking.uri=sqlite:///../bench-study/mlflow.db"
    assert render.portable_text("--repo /tmp/fresh --out=/work/checkout", root) == "--repo $TMPDIR/fresh --out=."
    # a URL, a rate and a system file are not paths of the machine that ran the command
    kept = "http://127.0.0.1:5000/health at 8 images/s, read from /proc/cpuinfo"
    assert render.portable_text(kept, root) == kept
    # a result recorded before results carried their cwd: the checkout whose .venv ran it
    old = {"command": "/work/other/.venv/bin/python -m bench.quality --out /work/other/bench/results",
           "notes": ["store in /work/other/outputs"]}
    assert render.portable(old) == {"command": ".venv/bin/python -m studies.quality --out bench/results",
                                    "notes": ["store in outputs"]}


def test_the_forest_plot_reads_the_differences_from_compares_data_not_its_prose(tmp_path):
    def difference(letter, metric, diff, ci95, p):
        return {"letter": letter, "metric": metric, "diff": diff, "ci95": ci95, "p": p, "verdict": "(prose)"}

    comparison = {"recipes": [{"letter": "A", "name": "isbi_best"}, {"letter": "B", "name": "loss=dice"},
                              {"letter": "C", "name": "one run"}],
                  "differences": [difference("B", "report_v_rand", 0.01, 0.02, 0.31),
                                  difference("B", "report_dice", -0.05, 0.01, 0.002),
                                  difference("C", "report_dice", -0.05, None, None)]}  # untestable: left out
    result = {"benchmark": "levers", "comparison": comparison, "verdicts": ["A (wrong): x, 3 run(s)"],
              "tables": [{"title": "compare", "columns": ["metric", "A", "other", "other - A", "p", "verdict"],
                          "rows": [["report_v_rand", "-", "B: -", "+9.0000 ± 9.0000", "0.9", ""]]}]}
    assert render.recipe_labels(result) == {"A": "isbi_best", "B": "loss=dice", "C": "one run"}
    assert render.differences(result) == {"B": {"report_v_rand": (0.01, 0.02, 0.31),
                                                "report_dice": (-0.05, 0.01, 0.002)}}
    with pytest.raises(ValueError, match="levers.json holds no comparison data"):
        render.differences({"benchmark": "levers", "verdicts": result["verdicts"], "tables": result["tables"]})
    path = render.forest_plot([("group", None), ("loss=dice", render.differences(result)["B"])], "title",
                              tmp_path / "forest.png", "note")
    assert path.read_bytes()[:4] == b"\x89PNG"
