"""The test suite's size and wall time, as docs/results.md quotes it: `make test` in a checkout, which on a
fresh clone includes creating its venv and installing, exactly as a new user (and CI) runs it.

    python -m bench.suite --repo /tmp/fresh-clone    # `make test` there (git clone main first)
    python -m bench.suite --quick                    # one small test file here, to check this script

Writes bench/results/suite.{json,md}; `python -m bench.render` puts the figure into docs/results.md.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench import common, render

NAME = "suite"
TITLE = "Test suite: size and wall time"
METHOD = ("The README's test command in a checkout (a fresh clone: venv creation and install included), as a "
          "subprocess; wall time of the whole command; the summary is pytest's last line.")


@dataclass(frozen=True)
class Settings:
    command: str
    repeats: int = 1


FULL = Settings("make test")
QUICK = Settings(f"{Path(sys.executable).name} -m pytest -q -n0 tests/test_readme.py")  # no workers for one file


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--repo", type=Path, default=common.REPO, help="the checkout to test (default: this one)")
    known, rest = pre.parse_known_args(argv)
    args, settings, result = common.begin(NAME, TITLE, METHOD, rest, FULL, QUICK)
    result["command"] = common.command_line(NAME, list(argv) if argv is not None else sys.argv[1:])
    command = shlex.split(settings.command)
    if command[0] == Path(sys.executable).name:
        command[0] = sys.executable
    done = subprocess.run(command, cwd=known.repo, capture_output=True, text=True)
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    result["summary"] = lines[-1].strip("= ") if lines else "(no output)"
    result["exit_code"] = done.returncode
    result["fresh_clone"] = not (known.repo / ".venv").exists() or known.repo != common.REPO
    result["slowest"] = slowest(lines)
    result["tables"] = [common.table("", ["command", "in", "exit code", "pytest summary"],
                                     [[settings.command, str(known.repo), done.returncode, result["summary"]]]),
                        common.table("Where the time goes: pytest's slowest phases (--durations)",
                                     ["seconds", "phase", "test"], result["slowest"])]
    render.write_results(result, args.out)
    return result


def slowest(lines: Sequence[str]) -> list[list]:
    """Returns [seconds, phase, test] of the rows pytest's --durations section printed ("12.34s call tests/...")."""
    rows = []
    for line in lines:
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[0].endswith("s") and parts[1] in ("setup", "call", "teardown"):
            try:
                rows.append([float(parts[0][:-1]), parts[1], parts[2]])
            except ValueError:
                continue
    return rows


if __name__ == "__main__":
    main()
