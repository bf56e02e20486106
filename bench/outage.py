"""What logging through the journal (segexp.tracking.spool) costs a run, and whether a tracking server
that dies mid-run slows training: the same short training as fresh `segexp train` processes, arms
interleaved per repeat, epoch times read from each run's own per-epoch lines:

    python -m bench.outage            # isbi_quick's model at 256x256, 5 epochs x 10 steps, 3 repeats
    python -m bench.outage --quick    # debug=smoke: seconds, the numbers are noise

Arms: `none` (tracking=none: nothing logged at all), `server` (a real `mlflow server` on loopback, up
all along) and `outage` (the same server SIGKILLed once the run's first epoch reached it, and started
again only after the run ended; the run's end waits tracking.outage_wait=5 s and leaves the rest to
`segexp upload`). Epoch 1 (graph tracing) is left out of every arm's median.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench import common, render
from bench.training import TINY_MODEL
from bench.mlflow_server import MlflowServer

NAME = "outage"
TITLE = "Tracking outage: epoch time with the journal, with a live server and through a server outage"
METHOD = ("Each arm is a fresh `segexp train` process of the same recipe and seed; arms interleaved per repeat "
          "(none, server, outage). An epoch's time is what the run prints for it (training steps plus the "
          "selection pass, callbacks included); the first epoch (tracing) is left out. `server` logs to a real "
          "`mlflow server` on 127.0.0.1; in `outage` that server is SIGKILLed as soon as the run's first epoch "
          "reached it and stays down until the run has ended. Ratios are of per-repeat medians, paired by repeat.")
EPOCH_LINE = re.compile(r"^\[segexp\] epoch (\d+)/\d+: .*\((\d+(?:\.\d+)?) s")


@dataclass(frozen=True)
class Settings:
    repeats: int
    recipe: tuple[str, ...]
    timeout_s: int
    # seconds from the run's first epoch line to the kill: the sender takes an epoch's records within a second or
    # two of the line. Quick runs kill at once: their epochs take a fraction of a second, and a run that ended
    # within the delay would have no outage at all.
    kill_delay_s: float = 3.0


FULL = Settings(repeats=3, timeout_s=1800, recipe=(
    "experiment=isbi_quick", "trainer.max_minutes=null", "trainer.epochs=5", "trainer.steps_per_epoch=10",
    "trainer.precision=float32", "trainer.jit_compile=false", "trainer.seed=1"))
QUICK = Settings(repeats=1, timeout_s=600, recipe=(  # checks the script: the cheapest model to trace, no model upload
    "debug=smoke", *TINY_MODEL, "trainer.crop_size=32", "trainer.epochs=3", "trainer.steps_per_epoch=2",
    "data=synthetic", "data.size=48", "tracking.log_model=false"), kill_delay_s=0.0)


def epoch_seconds(output: str) -> list[float]:
    """Returns the seconds of each epoch after the first, from a run's per-epoch lines."""
    return [float(m.group(2)) for line in output.splitlines() if (m := EPOCH_LINE.match(line)) and m.group(1) != "1"]


def train(settings: Settings, arm: str, server: MlflowServer, workdir: Path) -> dict[str, Any]:
    """Runs one arm; returns its epoch times and what the run printed about the store."""
    tracking = ["tracking=none"] if arm == "none" else [f"tracking.uri={server.uri}", "tracking.outage_wait=5"]
    if arm != "none" and server.process is None:  # first use, or back after the outage arm killed it
        server.start()
    command = [sys.executable, "-m", "segexp", "train", *settings.recipe, *tracking, "trainer.verbose=null",
               f"hydra.run.dir={workdir / arm / str(time.time_ns())}"]
    job = subprocess.Popen(command, cwd=common.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    for line in job.stdout:  # read as it comes: the outage arm kills the server after the first epoch
        lines.append(line)
        if arm == "outage" and EPOCH_LINE.match(line) and server.process is not None:
            time.sleep(settings.kill_delay_s)
            server.stop()
    job.wait(timeout=settings.timeout_s)
    output = "".join(lines)
    if job.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {job.returncode}:\n{output[-3000:]}")
    return {"epoch_s": epoch_seconds(output), "left_for_upload": "segexp upload" in output}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, settings, result = common.begin(NAME, TITLE, METHOD, argv, FULL, QUICK)
    arms = ("none", "server", "outage")
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="segexp-outage-") as tmp:
        server = MlflowServer(Path(tmp) / "server")
        try:
            for repeat in range(settings.repeats):
                for arm in arms:
                    common.log(f"repeat {repeat + 1}/{settings.repeats}: {arm}")
                    runs[arm].append(train(settings, arm, server, Path(tmp)))
        finally:
            server.stop()
    medians = {arm: [statistics.median(r["epoch_s"]) for r in runs[arm]] for arm in arms}
    result["runs"] = runs
    rows = [[arm, len(runs[arm]), statistics.median(medians[arm]), min(medians[arm]), max(medians[arm]),
             sum(r["left_for_upload"] for r in runs[arm])] for arm in arms]
    result["tables"] = [common.table(
        f"Seconds per epoch (epochs 2-{len(runs['none'][0]['epoch_s']) + 1}), median over runs",
        ["arm", "runs", "s median", "s min", "s max", "runs ending with `segexp upload`"], rows)]
    ratios = {arm: common.paired_ratios(medians[arm], medians["none"]) for arm in ("server", "outage")}
    result["ratios"] = ratios
    result["tables"].append(common.table(
        "Epoch time ratio against tracking=none, paired by repeat",
        ["arm", "ratio median", "ratio min", "ratio max"],
        [[arm, r["median"], r["min"], r["max"]] for arm, r in ratios.items()]))
    result["notes"] = [f"Recipe: `segexp train {' '.join(settings.recipe)}`. In `outage` the server was down from "
                       "the end of epoch 1 to the end of the run, so every later epoch ran without a store."]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
