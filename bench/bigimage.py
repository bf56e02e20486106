"""B10: images larger than memory: `segexp predict` streams a 4096x4096 and a 16384x16384 image (16x the pixels)
to Zarr; peak RSS should not grow with the image (issue 34: within 1.25x of each other), time per megapixel
should stay level.

Each image is a synthetic EM-like uint8 picture written first as a chunked Zarr array (block by block, so this
process never holds it). Each prediction is the real command, `python -m segexp predict ... output_format=zarr`,
in its own process, from an untrained U-Net saved as model.keras (the quick mode's tiny one); that process's peak
RSS comes from the kernel (os.wait4's rusage of exactly that child).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench import common, render
from bench.training import TINY_MODEL

NAME = "bigimage"
TITLE = "B10 images larger than memory: streamed predict, peak RSS and time per megapixel by image size"
METHOD = (
    "`python -m segexp predict ckpt=model.keras input=<size>.zarr output=... output_format=zarr` on a synthetic "
    "uint8 image stored as a Zarr array in 1024x1024 chunks, each size in its own process, one after the other "
    "(quick mode: at once); peak RSS is the child's ru_maxrss (os.wait4), the whole command (imports, model load, "
    "prediction, Zarr writes); wall s/Mpx is the whole command's time per megapixel, stream s/Mpx the time from "
    "the command's `streaming` line (model loaded) to its exit (the model's first trace included)."
)
CHUNK = 1024  # the input's Zarr chunks and the rows written at a time


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]  # square images, side in pixels
    model_overrides: tuple[str, ...]
    predict_overrides: tuple[str, ...]  # beyond conf/predict.yaml's inference defaults
    concurrent: bool  # quick mode: the children at once (their times are noise either way)


FULL = Settings(sizes=(4096, 16384), model_overrides=("model=unet_small", "model.base_filters=4"),
                predict_overrides=(), concurrent=False)
QUICK = Settings(sizes=(256, 512), model_overrides=TINY_MODEL,
                 predict_overrides=("inference.tile=128", "inference.overlap=16"), concurrent=True)


def synthetic_rows(top: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Returns rows [top, top + height) of an EM-like uint8 image: bright cells between dark curved membranes,
    plus noise. The pattern depends only on the pixel's position, so any block of rows is the same image's."""
    rows, cols = np.mgrid[top:top + height, 0:width].astype(np.float32)
    field = np.sin(rows / 37.0 + np.sin(cols / 91.0)) * np.sin(cols / 43.0 + np.cos(rows / 73.0))
    membrane = np.exp(-(field / 0.12) ** 2)
    noise = np.random.default_rng(seed + top).normal(0, 12, (height, width))
    return np.clip(170 - 120 * membrane + noise, 0, 255).astype(np.uint8)


def write_input(path: Path, size: int) -> Path:
    """Writes a size x size synthetic image as a Zarr array chunked CHUNK x CHUNK, a band of chunks at a time."""
    import zarr

    array = zarr.create_array(store=str(path), shape=(size, size), dtype="uint8",
                              chunks=(min(CHUNK, size), min(CHUNK, size)), overwrite=True)
    for top in range(0, size, CHUNK):
        height = min(CHUNK, size - top)
        array[top:top + height] = synthetic_rows(top, height, size)
    return path


def save_model(overrides: Sequence[str], path: Path) -> int:
    """Saves the untrained U-Net of the model overrides (one gray channel, one output) as model.keras; returns its
    parameter count."""
    from bench.training import compose, fresh_session
    from segexp.training.build import build_model

    fresh_session()
    cfg = compose(*overrides, "tracking=none")
    model = build_model(cfg, 1, cfg.data.foreground, 1e-4, False)
    model.save(path)
    return int(model.count_params())


def save_model_in_a_child(settings: Settings, path: Path) -> int:
    """Runs save_model in its own process, so this one never imports TensorFlow: the smoke test runs this
    benchmark in a thread beside others that use Keras. Returns the parameter count."""
    code = "import sys; from bench.bigimage import save_model; print(save_model(sys.argv[2:], sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(path), *settings.model_overrides], cwd=common.REPO,
                          env=child_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"saving the model failed: {done.stderr[-2000:]}")
    return int(done.stdout.split()[-1])


def child_env() -> dict[str, str]:
    """Returns this process's environment with this checkout's src first on PYTHONPATH."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(common.REPO / "src"), str(common.REPO),
                                                                    os.environ.get("PYTHONPATH")])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


@dataclass
class Child:
    """A running `segexp predict`: its process, where it logs, and when it started and began streaming."""

    process: subprocess.Popen
    workdir: Path
    started: float
    streaming_at: list[float]  # filled by the thread reading its stdout
    reader: threading.Thread


def start_predict(model: Path, image: Path, output: Path, settings: Settings, workdir: Path) -> Child:
    """Starts `python -m segexp predict` streaming `image` to `output`, in `workdir` (Hydra's folders go there);
    a thread notes when it prints its `streaming` line (its model loaded)."""
    command = [sys.executable, "-m", "segexp", "predict", f"ckpt={model}", f"input={image}", f"output={output}",
               "output_format=zarr", *settings.predict_overrides]
    common.log("running " + " ".join(command[1:]))
    with open(workdir / "stderr.log", "w") as log:  # a file, not a pipe: nothing blocks on what the child logs
        process = subprocess.Popen(command, cwd=workdir, env=child_env(), stdout=subprocess.PIPE, stderr=log,
                                   text=True, bufsize=1)
    streaming_at: list[float] = []

    def read() -> None:
        for line in process.stdout:
            if not streaming_at and "streaming" in line:
                streaming_at.append(time.perf_counter())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return Child(process, workdir, time.perf_counter(), streaming_at, reader)


def finish(child: Child) -> dict[str, Any]:
    """Waits for a predict child; returns its wall seconds, the seconds since its `streaming` line, its peak RSS
    (MB) and its progress lines. Raises when it failed."""
    _, status, usage = os.wait4(child.process.pid, 0)  # the rusage of exactly this child
    ended = time.perf_counter()
    child.process.returncode = os.waitstatus_to_exitcode(status)
    child.reader.join()
    log = (child.workdir / "stderr.log").read_text()
    if child.process.returncode != 0 or not child.streaming_at:
        raise RuntimeError(f"segexp predict failed ({child.process.returncode}): {log[-2000:]}")
    progress = [line for line in log.splitlines() if line.startswith("predict:")]
    return {"wall_s": ended - child.started, "stream_s": ended - child.streaming_at[0],
            "peak_rss_mb": usage.ru_maxrss / 1024, "progress_lines": len(progress),
            "last_progress": progress[-1] if progress else ""}


def measure(settings: Settings, root: Path) -> tuple[dict[str, Any], int]:
    """Returns ({size: measurements}, parameter count): each size's image written, then predicted."""
    model = root / "model.keras"
    params = save_model_in_a_child(settings, model)
    images = {}
    for size in settings.sizes:
        common.log(f"writing a {size}x{size} synthetic image")
        images[size] = write_input(root / f"image_{size}.zarr", size)
    runs: dict[int, dict[str, Any]] = {}
    children = {}
    for size in settings.sizes:
        (root / f"work_{size}").mkdir()
        children[size] = start_predict(model, images[size], root / f"out_{size}", settings, root / f"work_{size}")
        if not settings.concurrent:
            runs[size] = finish(children[size])
    for size, child in children.items():
        if size not in runs:
            runs[size] = finish(child)
    for size, run in runs.items():
        import zarr

        stored = zarr.open_group(str(root / f"out_{size}" / f"image_{size}.zarr"), mode="r")["probability"]
        megapixels = size * size / 1e6
        run.update(megapixels=megapixels, wall_s_per_mpx=run["wall_s"] / megapixels,
                   stream_s_per_mpx=run["stream_s"] / megapixels, output_shape=list(stored.shape),
                   output_chunks=list(stored.chunks))
        common.log(f"{size}x{size}: {run['wall_s']:.1f} s, peak RSS {run['peak_rss_mb']:.0f} MB")
    return runs, params


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, settings, result = common.begin(NAME, TITLE, METHOD, argv, FULL, QUICK,
                                          set_repeats=lambda s, n: s)  # one run per size: the sizes are the repeats
    with tempfile.TemporaryDirectory(prefix="segexp-bigimage-") as tmp:
        runs, params = measure(settings, Path(tmp))
    small, large = (runs[size] for size in (min(settings.sizes), max(settings.sizes)))
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    result.update(sizes={str(size): run for size, run in runs.items()}, params=params,
                  rss_ratio_large_over_small=ratio, rss_target_ratio=1.25, rss_within_target=ratio <= 1.25)
    result["tables"].append(common.table(
        f"untrained U-Net ({' '.join(settings.model_overrides)}, {params:,} params), one process per image",
        ["image", "Mpx", "peak RSS MB", "wall s", "wall s/Mpx", "stream s/Mpx", "output chunks"],
        [[f"{size}x{size}", run["megapixels"], run["peak_rss_mb"], run["wall_s"], run["wall_s_per_mpx"],
          run["stream_s_per_mpx"], "x".join(map(str, run["output_chunks"]))] for size, run in runs.items()]))
    result["tables"].append(common.table(
        "peak RSS of the larger image over the smaller's (issue 34's target: at most 1.25)",
        ["larger / smaller", "pixels larger / smaller", "within 1.25x"],
        [[ratio, (max(settings.sizes) / min(settings.sizes)) ** 2, "yes" if ratio <= 1.25 else "no"]]))
    result["notes"] = [
        "inference: conf/inference/default.yaml (tile 768, overlap 32, batch 4) unless the settings' "
        f"predict_overrides say otherwise ({' '.join(settings.predict_overrides) or 'none'}); the command writes "
        "`probability` (float32) and `mask` (uint8), chunked by the tile.",
        f"The child's progress bar, with stderr not a terminal, wrote one line per update: "
        f"{large['progress_lines']} lines for the larger image, the last `{large['last_progress']}`.",
    ]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
