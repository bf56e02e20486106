"""README.md states what the code does: its defaults table is the configs' own, and its generated
blocks are still marked so `python -m bench.readme` can rewrite them."""

from __future__ import annotations

import re
import sys

from conftest import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import readme  # noqa: E402

README = (REPO / "README.md").read_text()


def test_the_defaults_table_matches_the_composed_config():
    block = readme.defaults_block(*readme.compose_train_defaults())
    assert f"<!-- begin generated: defaults -->\n{block}\n<!-- end generated: defaults -->" in README
    # and the table is not trivially empty: the protocol's keys are there
    assert "| `trainer.monitor` | `\"select_v_rand\"` |" in block and "| `split.report` |" in block


def test_every_generated_block_is_marked_once():
    for name in ("defaults", "default-recipe", "test-suite", "compare-example", "levers", "levers-more", "study",
                 "study-30"):
        assert len(re.findall(rf"<!-- begin generated: {name} -->", README)) == 1, name
        assert len(re.findall(rf"<!-- end generated: {name} -->", README)) == 1, name


def test_the_readme_commands_ci_runs_are_the_makefile_targets():
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "    make test " in README and "    make train " in README
