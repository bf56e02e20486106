"""The docs state what the code does: README.md's defaults table is the configs' own, and every generated block
is still marked, once, in the file `python -m bench.render` rewrites it in."""

from __future__ import annotations

import re

from conftest import REPO


from bench import render

README = (REPO / "README.md").read_text()
DOCS = {path: path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]}


def test_the_defaults_table_matches_the_composed_config():
    block = render.defaults_block(*render.compose_train_defaults())
    assert f"<!-- begin generated: defaults -->\n{block}\n<!-- end generated: defaults -->" in README
    # and the table is not trivially empty: the protocol's keys are there
    assert "| `trainer.monitor` | `\"select_v_rand\"` |" in block and "| `split.report` |" in block


def test_every_generated_block_is_marked_once():
    names = ("defaults", "default-recipe", "test-suite", "compare-example", "levers", "levers-more", "study",
             "study-30", "postprocess", "isbi-best-30", "isbi-quick-5", "width32-30",
             "label-tolerance", "multiclass", "partitioning")
    assert set(render.BLOCKS) == set(names)
    for name in names:
        home = render.BLOCKS[name]
        for path, text in DOCS.items():
            expected = 1 if path == home else 0
            assert len(re.findall(rf"<!-- begin generated: {name} -->", text)) == expected, (name, path)
            assert len(re.findall(rf"<!-- end generated: {name} -->", text)) == expected, (name, path)


def test_the_readme_commands_ci_runs_are_the_makefile_targets():
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "    make test " in README and "    make train " in README
