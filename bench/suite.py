"""The test suite's size and wall time, as README.md quotes it.

    python -m bench.suite            # the whole suite: `python -m pytest -q`, as `make test` runs it
    python -m bench.suite --quick    # one small test file, to check this script

Writes bench/results/suite.{json,md}; `python -m bench.readme` puts the figure into README.md.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from bench import common

NAME = "suite"
TITLE = "Test suite: size and wall time"
METHOD = "`python -m pytest -q` in a fresh process from the repository root; wall time of the whole process."


@dataclass(frozen=True)
class Settings:
    command: str
    repeats: int = 1


FULL = Settings("python -m pytest -q")
QUICK = Settings("python -m pytest -q tests/test_readme.py")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, settings, result = common.begin(NAME, TITLE, METHOD, argv, FULL, QUICK)
    command = [sys.executable, *settings.command.split()[1:]]
    done = subprocess.run(command, cwd=common.REPO, capture_output=True, text=True)
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    result["summary"] = lines[-1].strip("= ") if lines else "(no output)"
    result["exit_code"] = done.returncode
    result["tables"] = [common.table("", ["command", "exit code", "pytest summary"],
                                     [[settings.command, done.returncode, result["summary"]]])]
    common.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
