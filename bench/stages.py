"""B9: seconds per 512x512 slice of each segmentation stage, side by side in one run.

The inputs are what a stage meets after a good network, made without one so that the benchmark stands alone: the
cell probability of an ISBI training label (membranes 0.05, cells 0.95) blurred by a Gaussian of 1.5 px with
noise of sd 0.05, and for the Mutex Watershed the affinities of that label at the paper's 12 offsets, noised
the same way. Each stage runs at its config's default parameters (conf/postprocess/*.yaml `params`); arms
interleaved per repeat, each over the same slices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from bench import common, render

NAME = "stages"
TITLE = "B9 segmentation stages: seconds per 512x512 slice"
METHOD = ("Seconds per slice of each `postprocess` stage at its default parameters, on the cell probability of an "
          "ISBI training label blurred (Gaussian, 1.5 px) and noised (sd 0.05), and on that label's affinities at the "
          "Mutex Watershed paper's 12 offsets, noised the same way (no network, so the benchmark stands alone); arms "
          "interleaved per repeat over the same slices, one process, 2 threads at most (bioimage-cpp's own).")
METHODS = ("watershed", "agglomerate", "multicut", "gasp", "mutex_watershed")


@dataclass(frozen=True)
class Settings:
    slices: int  # ISBI training labels used as inputs
    size: int  # their top-left crop, px
    repeats: int


FULL = Settings(slices=5, size=512, repeats=5)
QUICK = Settings(slices=1, size=128, repeats=1)


def inputs(settings: Settings) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Returns (cell-probability maps, affinity maps) made from ISBI training labels."""
    from PIL import Image
    from scipy import ndimage

    from segexp.config.compose import compose
    from segexp.data.affinities import affinity_target, object_ids, target_of
    from segexp.data.datasets import default_isbi_root
    from segexp.data.sets import IGNORE

    target = target_of(compose("train", ["target=affinities"]).target)
    rng = np.random.default_rng(0)
    maps, affinities = [], []
    for index in range(settings.slices):
        label = np.asarray(Image.open(default_isbi_root() / "train" / "label" / f"{index}.png"))
        cells = (label[: settings.size, : settings.size] > 127).astype(np.uint8)
        prob = ndimage.gaussian_filter(np.where(cells == 1, 0.95, 0.05).astype(np.float32), 1.5)
        maps.append(np.clip(prob + rng.normal(0, 0.05, prob.shape), 0, 1).astype(np.float32))
        same = affinity_target(object_ids(cells, 0, IGNORE), target.offsets)[..., : len(target.offsets)]
        affinities.append(np.clip(same * 0.9 + 0.05 + rng.normal(0, 0.05, same.shape), 0, 1).astype(np.float32))
    return maps, affinities


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from segexp.config.compose import compose
    from segexp.data.affinities import BOUNDARY, target_of
    from segexp.postprocessing.stage import segment

    args, settings, result = common.begin(NAME, TITLE, METHOD, argv, FULL, QUICK)
    maps, affinities = inputs(settings)
    target = target_of(compose("train", ["target=affinities"]).target)

    def arm(method: str):
        params = OmegaConf.to_container(compose("train", [f"postprocess={method}"]).postprocess.params)
        predictions, of = (affinities, target) if method == "mutex_watershed" else (maps, BOUNDARY)

        def run() -> float:
            start = time.perf_counter()
            for prediction in predictions:
                segment(prediction, method, params, of)
            return (time.perf_counter() - start) / len(predictions)
        run()  # imports and first calls out of the timing
        return run

    samples = common.interleaved({method: arm(method) for method in METHODS}, settings.repeats)
    result["seconds_per_slice"] = {m: common.summarize(samples[m]) for m in METHODS}
    result["ratios"] = {f"{m}/watershed": common.paired_ratios(samples[m], samples["watershed"]) for m in METHODS}
    result["tables"].append(common.table(
        f"{settings.slices} slices of {settings.size}x{settings.size}, {settings.repeats} repeats",
        ["stage", "s/slice median", "s/slice min", "vs watershed (median)"],
        [[m, result["seconds_per_slice"][m]["median"], result["seconds_per_slice"][m]["min"],
          result["ratios"][f"{m}/watershed"]["median"]] for m in METHODS]))
    result["notes"] = ["Choosing a stage's parameters costs its grid's size in these times on every selection "
                       "slice (conf/postprocess/*.yaml `grid`)."]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
