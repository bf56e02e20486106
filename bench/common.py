"""What every benchmark and study shares: machine facts, the command line, interleaved repeats, memory, result
files (bench/results/, for the quality studies in studies/ too).

Numbers from different machines (or from one machine at different loads) are not comparable,
so every result carries the machine, the library versions and the exact command, and every
A/B comparison is measured in one process, arms interleaved (A B A B ...), as paired ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# distribution names to try per package: TensorFlow installs as tensorflow-cpu on CPU hosts
PACKAGES = {
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "keras": ("keras",),
    "albumentations": ("albumentations",),
    "numpy": ("numpy",),
}


# --- machine and command ---------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Returns the CPU model, the flags that decide matmul speed, core counts and memory."""
    from segexp.training.runtime import cpu_facts  # the one reading of /proc/cpuinfo, as the speed probe keys on it

    model, flags = cpu_facts()
    model = platform.processor() or model if model == "unknown" else model
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return {
        "cpu_model": model,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(pages * page_size / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews every number
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def package_versions() -> dict[str, str]:
    """Returns the installed versions of the packages that decide speed, read without importing them."""
    found = {}
    for package, distributions in PACKAGES.items():
        for distribution in distributions:
            try:
                found[package] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            found[package] = "not installed"
    return found


def code_version(repo: Path = REPO) -> str:
    """Returns the checkout's commit, with "+changes" when tracked files differ from it ("unknown" outside git)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short=10", "HEAD") + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line(name: str, argv: Sequence[str], package: str = "bench") -> str:
    """Returns the shell command that reruns this benchmark (or, with package="studies", study) with these
    arguments."""
    return shlex.join([sys.executable, "-m", f"{package}.{name}", *argv])


# --- arguments -------------------------------------------------------------------------------


def parse_args(name: str, description: str, argv: Sequence[str] | None, package: str = "bench") -> argparse.Namespace:
    """Returns the options every benchmark takes: --quick, --repeats, --out."""
    parser = argparse.ArgumentParser(prog=f"python -m {package}.{name}", description=description)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repeat: finishes in well under a minute (for CI)")
    parser.add_argument("--repeats", type=int, default=None, help="override the number of interleaved repeats")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help=f"directory for {name}.json and {name}.md (default: bench/results)")
    return parser.parse_args(list(argv) if argv is not None else None)


def begin(name: str, title: str, method: str, argv: Sequence[str] | None, full, quick,
          set_repeats: Callable[[Any, int], Any] | None = None,
          package: str = "bench") -> tuple[argparse.Namespace, Any, dict[str, Any]]:
    """Returns (options, settings, result skeleton): full or quick settings, with --repeats applied."""
    args = parse_args(name, title, argv, package)
    settings = quick if args.quick else full
    if args.repeats:
        settings = (set_repeats or (lambda s, n: dataclasses.replace(s, repeats=n)))(settings, args.repeats)
    return args, settings, new_result(name, title, method, args, argv, dataclasses.asdict(settings), package)


def log(message: str) -> None:
    """Prints a progress line to stderr, so long runs show where they are."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- statistics ------------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Returns min, median, max, count and the raw values."""
    values = [float(v) for v in values]
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values),
            "values": values}


def interleaved(arms: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Runs the arms round-robin (A B C A B C ...) `repeats` times; returns each arm's samples.

    Interleaving spreads slow drifts (other jobs, thermal state) over all arms alike, so the
    per-repeat ratios stay meaningful on a shared machine where absolute numbers do not.
    """
    samples: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(repeats):
        for name, arm in arms.items():
            samples[name].append(arm())
            log(f"repeat {repeat + 1}/{repeats} {name}: {samples[name][-1]:.4g}")
    return samples


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """Returns the summary of numerator[i] / denominator[i] over the repeats (pairs from the same repeat)."""
    return summarize([n / d for n, d in zip(numerator, denominator)])


def rate_summary(seconds_per_item: Sequence[float]) -> dict[str, Any]:
    """Returns items/s from per-item seconds: best (from the minimum time) and median, plus the times."""
    times = summarize(seconds_per_item)
    return {"best": 1.0 / times["min"], "median": 1.0 / times["median"], "seconds_per_item": times}


# --- memory ----------------------------------------------------------------------------------


def proc_status_mb(field: str) -> float | None:
    """Returns a /proc/self/status memory field (VmRSS, VmHWM) in MB, or None where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def lifetime_peak_rss_mb() -> float:
    """Returns this process's peak resident memory since it started (resource.getrusage), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB


def release_free_heap() -> None:
    """Collects garbage and asks glibc to hand freed heap back to the OS, so the next baseline is honest."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager: peak resident memory of this process while the block runs.

    Uses the kernel's resettable high-water mark; where it cannot be reset, falls back to the
    process-lifetime peak and says so in `scope`.
    """

    def __enter__(self) -> "PeakMemory":
        release_free_heap()
        self.scope = "block" if reset_peak_rss() else "process lifetime"
        self.start_mb = proc_status_mb("VmRSS") or 0.0
        return self

    def __exit__(self, *exc) -> None:
        high_water = proc_status_mb("VmHWM") if self.scope == "block" else None
        self.peak_mb = high_water if high_water is not None else lifetime_peak_rss_mb()
        self.growth_mb = max(self.peak_mb - self.start_mb, 0.0)


# --- results ---------------------------------------------------------------------------------


def new_result(name: str, title: str, method: str, args: argparse.Namespace, argv: Sequence[str] | None,
               settings: dict[str, Any], package: str = "bench") -> dict[str, Any]:
    """Returns the result skeleton every benchmark fills: what ran, where, with which versions."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    return {
        "benchmark": name,
        "title": title,
        "method": method,
        "mode": "quick" if args.quick else "full",
        "command": command_line(name, argv, package),
        "process_argv": list(getattr(sys, "orig_argv", sys.argv)),  # differs when run in-process (pytest)
        "cwd": os.getcwd(),  # bench.render names the paths in the command relative to it
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code": code_version(),
        "machine": machine_info(),
        "versions": package_versions(),
        "settings": settings,
        "tables": [],
        "notes": [],
        "_started": time.monotonic(),
    }


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Returns a table for the markdown report: a title, column names and rows of values."""
    return {"title": title, "columns": list(columns), "rows": [list(row) for row in rows]}


# --- a real tracking server -------------------------------------------------------------------
