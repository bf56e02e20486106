"""B3: 512x512 slices/s of overlap-tile prediction, with and without 8-way TTA, vs one whole-image pass.

Tiled prediction is `segexp predict`'s own predictor (segexp.inference.predictor.make_predictor: segexp.inference.tiling
.predict_image over the model's predict_on_batch) with conf/inference/default.yaml's tile, overlap and batch
size; naive is model.predict_on_batch on the whole slice. Arms interleaved per repeat, each
sample under its own peak-RSS window.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from bench import common, render
from bench.training import TINY_MODEL

NAME = "inference"
TITLE = "B3 inference: overlap-tile prediction (with/without TTA) vs whole-image"
METHOD = (
    "Seconds per 512x512 ISBI test slice, after one untimed pass of each arm (tracing); arms naive, tiled, "
    "tiled+TTA interleaved per repeat; peak RSS per sample from the kernel's resettable high-water mark "
    "(VmHWM), process peak from resource.getrusage."
)
ARMS = {
    "naive": "whole slice, one predict_on_batch",
    "tiled": "overlap-tile (segexp predict)",
    "tiled_tta": "overlap-tile + 8-way TTA",
}


@dataclass(frozen=True)
class Case:
    name: str
    model_overrides: tuple[str, ...]
    slices: tuple[tuple[str, int], ...]  # (arm, slices per sample)
    repeats: int


@dataclass(frozen=True)
class Settings:
    cases: tuple[Case, ...]


FULL = Settings(cases=(
    Case("unet_small", ("model=unet_small",), (("naive", 8), ("tiled", 4), ("tiled_tta", 1)), repeats=3),
    Case("unet", ("model=unet",), (("naive", 1), ("tiled", 1), ("tiled_tta", 1)), repeats=2),
))
QUICK = Settings(cases=(
    Case("tiny", TINY_MODEL, (("naive", 1), ("tiled", 1), ("tiled_tta", 1)), repeats=1),
))


def load_test_slices() -> list[np.ndarray]:
    """Returns the ISBI test slices as float32 (512, 512, 1) in [0, 1]."""
    from segexp.data.datasets import default_isbi_root
    from segexp.data.images import list_images, natural_key, read_image, to_channels, to_unit_float

    found = list_images(default_isbi_root() / "test" / "image", "images")
    return [to_channels(to_unit_float(read_image(found[stem])), 1) for stem in sorted(found, key=natural_key)]


def tiling_note(shape: Sequence[int], inference: dict[str, Any], multiple: int) -> str:
    """Returns how overlap-tile prediction covers a slice of `shape`: tiles per axis and pixels vs one pass."""
    from segexp.inference.tiling import plan_axis

    plans = [plan_axis(length, inference["tile"], inference["overlap"], multiple) for length in shape]
    covered = np.prod([len(p.starts) * p.tile for p in plans])
    grid = " x ".join(str(len(p.starts)) for p in plans)
    return (f"A {shape[0]}x{shape[1]} slice with tile {inference['tile']} and overlap {inference['overlap']} gets a "
            f"{inference['overlap'] // 2}-pixel reflected margin and a {grid} grid of {plans[0].tile}x{plans[1].tile} "
            f"tiles: {covered / np.prod(shape):.2f}x the pixels of one whole-image pass, plus Gaussian blending in numpy.")


def with_tta(inference_cfg):
    """Returns a copy of the predict config's inference node with TTA switched on."""
    tta = copy.deepcopy(inference_cfg)
    tta.tta = True
    return tta


def measure_case(case: Case, slices: list[np.ndarray], repeats: int) -> dict[str, Any]:
    """Returns seconds per slice and peak memory per arm for one model."""
    from omegaconf import OmegaConf

    from bench import training
    from segexp.inference.predictor import make_predictor, model_channels_and_multiple

    cfg = training.compose(*case.model_overrides, "tracking=none")
    inference_cfg = training.compose(config_name="predict").inference
    model = training.build_compiled_model(cfg, training.load_data(cfg)[0])
    tiled = make_predictor(model, inference_cfg)
    tta = make_predictor(model, with_tta(inference_cfg))
    predictors = {
        "naive": lambda image: np.asarray(model.predict_on_batch(image[None]))[0, ..., 0],
        "tiled": tiled,
        "tiled_tta": tta,
    }
    common.log(f"{case.name}: warming up (tracing) naive and tiled")
    for name in ("naive", "tiled"):  # TTA reuses the tiled shapes: square slices stay square when rotated
        predictors[name](slices[0])
    memory: dict[str, list[dict[str, float]]] = {name: [] for name, _ in case.slices}
    cursor = {"next": 0}

    def arm(name: str, count: int):
        def run() -> float:
            with common.PeakMemory() as peak:
                start = time.perf_counter()
                for _ in range(count):
                    predictors[name](slices[cursor["next"] % len(slices)])
                    cursor["next"] += 1
                elapsed = time.perf_counter() - start
            memory[name].append({"peak_mb": peak.peak_mb, "growth_mb": peak.growth_mb, "scope": peak.scope})
            return elapsed / count
        return run

    samples = common.interleaved({name: arm(name, count) for name, count in case.slices}, repeats)
    arms = {}
    for name, _ in case.slices:
        arms[name] = {
            "slices_per_s": common.rate_summary(samples[name]),
            "ms_per_slice": common.summarize([s * 1000 for s in samples[name]]),
            "peak_rss_mb": common.summarize([m["peak_mb"] for m in memory[name]]),
            "rss_growth_mb": common.summarize([m["growth_mb"] for m in memory[name]]),
            "memory_scope": memory[name][0]["scope"],
        }
    naive = [1 / s for s in samples["naive"]]
    ratios = {f"{name}/naive": common.paired_ratios([1 / s for s in samples[name]], naive)
              for name in arms if name != "naive"}
    return {"model": case.name, "params": int(model.count_params()), "slice_shape": list(slices[0].shape),
            "multiple": model_channels_and_multiple(model)[1],
            "inference": OmegaConf.to_container(inference_cfg), "repeats": repeats, "arms": arms, "ratios": ratios}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from bench.training import fresh_session

    args, settings, result = common.begin(
        NAME, TITLE, METHOD, argv, FULL, QUICK,
        set_repeats=lambda s, n: Settings(cases=tuple(replace(case, repeats=n) for case in s.cases)))
    slices = load_test_slices()
    cases = {}
    for case in settings.cases:
        fresh_session()
        cases[case.name] = measure_case(case, slices, case.repeats)
    result["cases"] = cases
    for name, case in cases.items():
        inf = case["inference"]
        result["tables"].append(common.table(
            f"{name} ({case['params']:,} params); tile {inf['tile']}, overlap {inf['overlap']}, batch {inf['batch_size']}",
            ["prediction", "slices/s best", "slices/s median", "ms/slice median", "vs naive (median)",
             "peak RSS MB (max)", "RSS growth MB (max)"],
            [[ARMS[arm], r["slices_per_s"]["best"], r["slices_per_s"]["median"], r["ms_per_slice"]["median"],
              "1" if arm == "naive" else case["ratios"][f"{arm}/naive"]["median"], r["peak_rss_mb"]["max"],
              r["rss_growth_mb"]["max"]] for arm, r in case["arms"].items()],
        ))
    result["notes"] = [
        *{tiling_note(case["slice_shape"][:2], case["inference"], case["multiple"]) for case in cases.values()},
        "RSS growth = peak during the sample minus RSS at its start (after gc and malloc_trim); models built "
        "earlier in the process stay resident.",
    ]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
