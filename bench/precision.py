"""B2b: mixed_bfloat16 against float32 at equal steps: training speed and held-out quality.

B2 times bf16 steps; this asks whether they are worth having. The same recipe (isbi_best's
model, loss, augmentation and optimizer, a fixed step count, no wall-clock budget) trains once in
float32, once in mixed_bfloat16 (same seed) and, as a control for run-to-run spread, once more in
float32 with another seed; each arm is a fresh `segexp train` process. Speed is training images/s
between the end of the first epoch (after tracing) and the last, per-epoch selection scoring included;
quality is the last epoch's scores on the report slices (nothing selected). Only where the CPU has native bf16 (avx512_bf16 / amx_bf16):
elsewhere TensorFlow emulates it and the comparison says nothing.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench import common, render
from bench.training import TINY_MODEL

NAME = "precision"
TITLE = "B2b mixed_bfloat16 vs float32 at equal steps: speed and held-out quality"
METHOD = (
    "Three `segexp train` processes, one after another: float32, mixed_bfloat16 (same seed) and float32 with "
    "another seed (the run-to-run spread bf16's difference is judged against; quick mode: the first two). "
    "images/s from the MLflow timestamps of the first and last epoch's selection pass (tracing excluded, "
    "per-epoch scoring included); scores are the last epoch's checkpoint (trainer.checkpoint=last: nothing is "
    "selected) on the report slices 25-29."
)
SCORES = ("report_dice", "report_accuracy", "report_v_rand", "report_v_info")
ARMS = {  # name: (precision, seed offset)
    "float32": ("float32", 0),
    "mixed_bfloat16": ("mixed_bfloat16", 0),
    "float32 other seed": ("float32", 1),
}


@dataclass(frozen=True)
class Settings:
    overrides: tuple[str, ...]
    epochs: int
    steps_per_epoch: int
    batch_size: int
    timeout_s: int
    arms: tuple[str, ...] = tuple(ARMS)


FULL = Settings(("experiment=isbi_best", "trainer.max_minutes=null"), epochs=6, steps_per_epoch=50, batch_size=4,
                timeout_s=3600)
QUICK = Settings(("debug=smoke", *TINY_MODEL, "trainer.crop_size=32", "data=synthetic", "data.size=48"), epochs=2,
                 steps_per_epoch=2, batch_size=2, timeout_s=600,
                 arms=("float32", "mixed_bfloat16"))  # checks the script: a third `segexp train` only adds its spread


def train_arm(name: str, precision: str, seed_offset: int, settings: Settings, store: str, workdir: Path) -> dict:
    """Trains one arm in a fresh process; returns its speed and last-epoch report scores from the store."""
    from segexp.tracking.store import find_runs, timed_metric_history

    seed = 42 + seed_offset
    overrides = [*settings.overrides, f"trainer.precision={precision}", f"trainer.seed={seed}",
                 f"trainer.epochs={settings.epochs}", f"trainer.steps_per_epoch={settings.steps_per_epoch}",
                 f"trainer.batch_size={settings.batch_size}", "trainer.verbose=2", "trainer.preview_slices=0",
                 "trainer.checkpoint=last",
                 "tracking.log_model=false", f"tracking.uri={store}", f"tracking.experiment_name={NAME}",
                 f"run_name={name}", f"hydra.run.dir={workdir / precision / str(seed)}"]
    common.log(f"training {name}: segexp train {' '.join(overrides)}")
    done = subprocess.run([sys.executable, "-m", "segexp", "train", *overrides], capture_output=True, text=True,
                          timeout=settings.timeout_s, cwd=common.REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: segexp train exited {done.returncode}:\n{done.stderr[-2000:]}")
    (run,) = find_runs(store, NAME, run_name=name, max_results=1)
    epochs = timed_metric_history(store, run.run_id, "select_dice")
    seconds = (epochs[-1][0] - epochs[0][0]) / 1000
    images = (len(epochs) - 1) * settings.steps_per_epoch * settings.batch_size
    return {"precision": run.precision or precision, "seed": seed, "epochs": len(epochs),
            "images_per_s": images / seconds if seconds > 0 else None,
            "scores": {key: run.metrics[key] for key in SCORES if key in run.metrics}}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from segexp.training.runtime import cpu_has_bf16

    args, settings, result = common.begin(NAME, TITLE, METHOD, argv, FULL, QUICK)
    if not cpu_has_bf16():
        result["notes"].append("not run: the CPU has neither avx512_bf16 nor amx_bf16, so TensorFlow would emulate "
                               "bfloat16 (trainer.precision=auto times it anyway and would keep float32 unless bf16 is 10% faster)")
        result["tables"] = [common.table("Arms", ["arm", "status"],
                                         [[arm, "skipped (no native bf16)"] for arm in settings.arms])]
        render.write_results(result, args.out)
        return result
    with tempfile.TemporaryDirectory(prefix="segexp-precision-") as tmp:
        store = f"sqlite:///{Path(tmp).resolve() / 'mlflow.db'}"
        arms = {name: train_arm(name, *ARMS[name], settings, store, Path(tmp)) for name in settings.arms}
    fp32 = arms["float32"]
    keys = list(fp32["scores"])
    deltas = {name: {k: arm["scores"][k] - fp32["scores"][k] for k in keys} for name, arm in arms.items()
              if name != "float32"}
    result["arms"] = arms
    result["speedup_bf16"] = arms["mixed_bfloat16"]["images_per_s"] / fp32["images_per_s"]
    result["delta_bf16"] = deltas["mixed_bfloat16"]
    if "float32 other seed" in deltas:  # not in quick mode
        result["delta_seed"] = deltas["float32 other seed"]
    result["tables"] = [
        common.table(f"{settings.epochs} epochs x {settings.steps_per_epoch} steps, batch {settings.batch_size}",
                     ["arm", "seed", "images/s", *keys],
                     [[name, a["seed"], a["images_per_s"], *(a["scores"][k] for k in keys)] for name, a in arms.items()]),
        common.table("Differences", ["comparison", "images/s ratio", *(f"delta {k}" for k in keys)], [
            [f"{name} - float32", arms[name]["images_per_s"] / fp32["images_per_s"], *(delta[k] for k in keys)]
            for name, delta in deltas.items()]),
    ]
    result["notes"].append("Target (issue 7): bf16 >= 1.5x float32 images/s with held-out Dice within 0.01 of "
                           "float32 at equal steps; the other-seed row shows how far two float32 runs differ.")
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
