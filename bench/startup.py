"""B5: wall time of segexp's command line as a user meets it, each command a fresh subprocess.

`--help` and `train --cfg job` must stay instant (no TensorFlow import); the smoke training
shows the fixed cost of any run (imports, data checks, tracing, validation, checkpoint).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench import common, render

NAME = "startup"
TITLE = "B5 startup: CLI wall time"
METHOD = (
    "Wall time of each command as a fresh `python -m ...` subprocess (run from an empty temporary directory, "
    "so run outputs land there), commands interleaved per repeat; min and median over repeats."
)
SEGEXP_COMMANDS = (
    ("segexp --help", ("-m", "segexp", "--help")),
    ("segexp train --cfg job", ("-m", "segexp", "train", "--cfg", "job")),
    # an invalid choice: the one-line error must come back in well under a second
    ("segexp train --cfg job model.upsampling=foo", ("-m", "segexp", "train", "--cfg", "job", "model.upsampling=foo")),
    ("segexp train debug=smoke tracking=none", ("-m", "segexp", "train", "debug=smoke", "tracking=none")),
)
# what a bare `import tensorflow` costs, to read the smoke run against
REFERENCE = (("python -c 'import tensorflow' (reference)", ("-c", "import tensorflow")),)


@dataclass(frozen=True)
class Settings:
    repeats: int
    include_reference: bool
    timeout_s: int


FULL = Settings(repeats=5, include_reference=True, timeout_s=900)
QUICK = Settings(repeats=1, include_reference=False, timeout_s=300)


def command_arm(args: Sequence[str], cwd: Path, timeout_s: int):
    """Returns an arm that runs `python <args>` in cwd and returns its wall time; raises if it ends otherwise
    than it should (an invalid choice must end with segexp's one-line error, exit status 2)."""
    expected = 2 if any(arg.endswith("=foo") for arg in args) else 0

    def arm() -> float:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout_s)
        elapsed = time.perf_counter() - start
        if done.returncode != expected or (expected and len(done.stderr.strip().splitlines()) != 1):
            raise RuntimeError(f"`python {' '.join(args)}` exited {done.returncode}:\n{done.stderr[-2000:]}")
        return elapsed

    return arm


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, settings, result = common.begin(NAME, TITLE, METHOD, argv, FULL, QUICK)
    commands = SEGEXP_COMMANDS + (REFERENCE if settings.include_reference else ())
    with tempfile.TemporaryDirectory(prefix="segexp-startup-") as cwd:
        arms = {label: command_arm(argv_, Path(cwd), settings.timeout_s) for label, argv_ in commands}
        samples = common.interleaved(arms, settings.repeats)
    result["commands"] = {
        label: {"argv": ["python", *argv_], "seconds": common.summarize(samples[label])} for label, argv_ in commands
    }
    result["tables"] = [common.table(
        f"Wall time, {settings.repeats} repeat(s)", ["command", "s min", "s median", "s max"],
        [[label, c["seconds"]["min"], c["seconds"]["median"], c["seconds"]["max"]] for label, c in result["commands"].items()],
    )]
    result["notes"] = ["The smoke run (conf/debug/smoke.yaml) trains a tiny model for a few steps, validates, "
                       "saves and reloads its checkpoint: nearly all of its time is fixed cost (imports, graph "
                       "tracing)."]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
