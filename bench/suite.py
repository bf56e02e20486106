"""The test suite's size and wall time, as docs/results.md quotes it: `make test` in a checkout, which on a
fresh clone includes creating its venv and installing, exactly as a new user (and CI) runs it.

    python -m bench.suite --repo /tmp/fresh-clone    # `make test` there (git clone main first)
    python -m bench.suite --quick                    # one small test file here, to check this script

Writes bench/results/suite.{json,md}; `python -m bench.render` puts the figure into docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench import common, render

NAME = "suite"
TITLE = "Test suite: size and wall time"
METHOD = ("The README's test command in a checkout (a fresh clone: venv creation and install included), as a "
          "subprocess; wall time of the whole command; the summary is pytest's last line. CPU seconds per test (its "
          "worker's and those of the processes it started) come from tests/conftest.py (SEGEXP_CPU_LOG); how busy "
          "the machine's cores were over the whole command, from /proc/stat.")


@dataclass(frozen=True)
class Settings:
    command: str
    repeats: int = 1
    reference_repeats: int = 3  # fresh `import tensorflow` processes timed before and after (0: none)


FULL = Settings("make test")
QUICK = Settings(f"{Path(sys.executable).name} -m pytest -q -n0 tests/test_readme.py",  # no workers for one file
                 reference_repeats=0)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--repo", type=Path, default=common.REPO, help="the checkout to test (default: this one)")
    known, rest = pre.parse_known_args(argv)
    args, settings, result = common.begin(NAME, TITLE, METHOD, rest, FULL, QUICK)
    result["command"] = common.command_line(NAME, list(argv) if argv is not None else sys.argv[1:])
    result["code"] = common.code_version(known.repo)  # the checkout under test, not the one running the benchmark
    command = shlex.split(settings.command)
    if command[0] == Path(sys.executable).name:
        command[0] = sys.executable
    # before `make test` runs: afterwards every checkout has its .venv
    result["fresh_clone"] = not (known.repo / ".venv").exists()
    # the machine's speed drifts (a shared host: the same test used 30% more CPU in one run than another the same
    # day), so a fixed piece of work is timed before and after: runs are compared through it, not by minutes alone
    reference_before = import_tensorflow_cpu_seconds(settings.reference_repeats)
    with tempfile.TemporaryDirectory(prefix="segexp-suite-") as tmp:
        cpu_log = Path(tmp) / "cpu.jsonl"
        busy_before, started = cpu_ticks(), time.time()
        done = subprocess.run(command, cwd=known.repo, capture_output=True, text=True,
                              env={**os.environ, "SEGEXP_CPU_LOG": str(cpu_log)})
        busy_after, ended = cpu_ticks(), time.time()
        per_test = [json.loads(line) for line in cpu_log.read_text().splitlines()] if cpu_log.exists() else []
    result["reference_cpu_s"] = {"before": reference_before,
                                 "after": import_tensorflow_cpu_seconds(settings.reference_repeats)}
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    result["summary"] = lines[-1].strip("= ") if lines else "(no output)"
    result["exit_code"] = done.returncode
    result["slowest"] = slowest(lines)
    result["cpu_seconds"] = sum(r["self_s"] + r["children_s"] for r in per_test)
    # every test, heaviest first: the next cut starts from here
    result["cpu_per_test"] = [{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}
                              for r in sorted(per_test, key=lambda r: -(r["self_s"] + r["children_s"]))]
    result["cores_busy"] = tick_share(busy_before, busy_after, BUSY)
    result["cores_stolen"] = tick_share(busy_before, busy_after, STOLEN)
    # when each worker's last test ended, from the command's start: a worker done early leaves its core idle
    result["workers_done_s"] = {w: round(max(r["ended"] for r in per_test if r.get("worker") == w) - started, 1)
                                for w in sorted({r.get("worker") for r in per_test if "ended" in r}, key=worker_order)}
    heaviest = result["cpu_per_test"][:15]
    result["tables"] = [common.table("", ["command", "in", "exit code", "pytest summary"],
                                     [[settings.command, str(known.repo), done.returncode, result["summary"]]]),
                        common.table("Where the time goes: pytest's slowest phases (--durations)",
                                     ["seconds", "phase", "test"], result["slowest"]),
                        common.table(f"Where the CPU goes: the {len(heaviest)} heaviest of "
                                     f"{len(per_test)} tests, {result['cpu_seconds']:.0f} CPU seconds in all",
                                     ["CPU s", "of which child processes", "wall s", "test"],
                                     [[r["self_s"] + r["children_s"], r["children_s"], r["wall_s"], r["test"]]
                                      for r in heaviest])]
    if result["cores_busy"] is not None:
        result["notes"].append(f"The cores were {result['cores_busy']:.1%} busy over the whole command" + (
            ": with every core busy, the suite gets faster only by doing less, not by more workers or another order."
            if result["cores_busy"] >= 0.95 else ".") + f" The hypervisor took {result['cores_stolen']:.1%} of their "
            "time for other guests (steal).")
    if None not in result["reference_cpu_s"].values():
        result["notes"].append("Machine speed: `python -c 'import tensorflow'` took {before:.2f} CPU s before the "
                               "command and {after:.2f} after (median of {n} each; lower is faster).".format(
                                   **result["reference_cpu_s"], n=settings.reference_repeats))
    if result["workers_done_s"]:
        result["notes"].append("Each worker's last test ended at " + ", ".join(
            f"{w} {t:.0f} s" for w, t in result["workers_done_s"].items()) + f" of {ended - started:.0f} s "
            "(the command's start is 0, the install included).")
    render.write_results(result, args.out)
    return result


def import_tensorflow_cpu_seconds(repeats: int) -> float | None:
    """Returns the median CPU seconds (user + system) of `repeats` fresh `python -c 'import tensorflow'`, or None
    for none."""
    import resource
    import statistics

    samples = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if done.returncode != 0:  # a reference that fails must not cost the suite's result
            return None
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(samples) if samples else None


def worker_order(worker: str) -> tuple[int, str]:
    """Sorts xdist's workers by number (gw2 before gw10), anything else after them."""
    digits = worker[2:] if worker.startswith("gw") else ""
    return (int(digits), "") if digits.isdigit() else (1 << 30, worker)


def cpu_ticks() -> tuple[int, int, int] | None:
    """Returns (busy, total, stolen) CPU ticks of all cores since boot from /proc/stat, or None where there is
    none. Stolen: time the hypervisor gave this machine's cores to another guest."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields), fields[7]


BUSY, TOTAL, STOLEN = 0, 1, 2  # the fields of cpu_ticks()


def tick_share(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None, field: int) -> float | None:
    """Returns the share of all CPU ticks between two cpu_ticks() readings that went to `field` (BUSY or STOLEN)."""
    if before is None or after is None or after[TOTAL] == before[TOTAL]:
        return None
    return (after[field] - before[field]) / (after[TOTAL] - before[TOTAL])


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
