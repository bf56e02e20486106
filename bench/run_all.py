"""Runs every speed benchmark (each in its own process, as `python -m bench.<name>`) and writes BENCHMARKS.md.

Separate processes keep each benchmark's peak-memory figures and TensorFlow state its own.
Startup runs first, while nothing else has warmed the file cache beyond what a user would see.
The results of the long runs started on their own - the quality studies of studies/ (`python -m studies.quality`,
an hour, and its `--name quality_default` run of the default recipe, `studies.replicates`, `studies.levers`,
`studies.study`, `studies.metric_agreement`) and `python -m bench.suite` - go into BENCHMARKS.md too when present.
Nothing in it is written by hand; `python -m bench.render` renders the docs from the same results.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from bench import common, render

BENCHMARKS = render.SPEED


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run every benchmark in quick mode")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="results directory (default: bench/results)")
    parser.add_argument("--benchmarks-md", type=Path, default=render.BENCHMARKS_MD, help="where to write BENCHMARKS.md")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS),
                        help="run only these benchmarks (BENCHMARKS.md still lists every result found)")
    parser.add_argument("--render-only", action="store_true", help="run nothing; rebuild BENCHMARKS.md from the results")
    return parser.parse_args(list(argv) if argv is not None else None)


def run_benchmark(name: str, quick: bool, out: Path) -> bool:
    """Runs `python -m bench.<name>` from the repository root; returns True when it succeeded."""
    command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else []), "--out", str(out)]
    common.log(f"running {' '.join(command[1:])}")
    return subprocess.run(command, cwd=common.REPO).returncode == 0


def main(argv: Sequence[str] | None = None) -> list[str]:
    """Runs the benchmarks and writes BENCHMARKS.md; returns the names that failed (exit status 1 if any)."""
    args = parse_args(argv)
    failed = [] if args.render_only else [name for name in args.only if not run_benchmark(name, args.quick, args.out)]
    given = list(argv) if argv is not None else sys.argv[1:]
    command = common.command_line("run_all", [a for a in given if a != "--render-only"])
    if args.render_only:  # the figures came from an earlier full run; say so instead of naming this one
        command += "` (this file re-rendered from its results with `--render-only"
    render.write_benchmarks_md(args.out, args.benchmarks_md, command)
    if failed:
        common.log(f"FAILED: {', '.join(failed)}")
    return failed


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
