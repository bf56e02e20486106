"""B1: training images/s of one model under four input paths, measured side by side in one process.

(a) the seed example's loop: a Keras-2-style Python generator reading whole slices from disk,
    resizing them and applying the seed's random affine with scipy, in the training process
    (bench/seed_replica.py);
(b) segexp's pipeline (CropSampler + training_dataset, via segexp.training.build.fit) with aug=seed;
(c) the same with aug=heavy;
(d) the model alone on one pre-made in-memory batch: the upper bound.
Plus each input path alone, with no model, against what the model consumes (d).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench import common, render
from bench.training import TINY_MODEL

NAME = "throughput"
TITLE = "B1 training throughput: seed loop vs segexp pipeline vs model alone"
METHOD = (
    "Images/s of model.fit steady-state steps (per fit call: untimed warm-up steps, then timed steps; every "
    "arm warmed once before timing, so tracing is excluded), one compiled model shared by all arms, arms "
    "interleaved a b c d per repeat; ratios are paired within a repeat. Pipelines alone: batches/s of "
    "iterating the tf.data stream with no model."
)
ARMS = {
    "a_seed_loop": "(a) seed loop: Python generator, scipy affine, whole resized slices",
    "b_segexp_aug_seed": "(b) segexp pipeline, aug=seed",
    "c_segexp_aug_heavy": "(c) segexp pipeline, aug=heavy",
    "d_model_alone": "(d) model alone, in-memory batch",
}
PIPELINES = ("a_seed_loop", "b_segexp_aug_seed", "c_segexp_aug_heavy")
RATIOS = {  # name: (numerator arm, denominator arm), both images/s
    "b/a": ("b_segexp_aug_seed", "a_seed_loop"),
    "c/a": ("c_segexp_aug_heavy", "a_seed_loop"),
    "b/d": ("b_segexp_aug_seed", "d_model_alone"),
    "c/d": ("c_segexp_aug_heavy", "d_model_alone"),
}


@dataclass(frozen=True)
class Case:
    name: str
    model_overrides: tuple[str, ...]
    batch_size: int
    crop_size: int
    steps: int  # timed steps per fit call
    warmup: int  # untimed steps per fit call


@dataclass(frozen=True)
class Settings:
    cases: tuple[Case, ...]
    repeats: int
    pipeline_batches: int
    pipeline_warmup: int


FULL = Settings(
    cases=(
        Case("unet", ("model=unet",), batch_size=2, crop_size=256, steps=3, warmup=1),
        Case("unet_small", ("model=unet_small",), batch_size=4, crop_size=256, steps=10, warmup=2),
    ),
    repeats=3,
    pipeline_batches=30,
    pipeline_warmup=3,
)
QUICK = Settings(
    cases=(Case("tiny", TINY_MODEL, batch_size=2, crop_size=64, steps=2, warmup=1),),
    repeats=1,
    pipeline_batches=3,
    pipeline_warmup=1,
)


def seed_loop_dataset(cfg, train_set):
    """Returns the seed replica over the same training slices, read from disk as the seed did."""
    from bench.seed_replica import seed_dataset
    from segexp.data.datasets import default_isbi_root

    root = default_isbi_root() if cfg.data.root is None else Path(cfg.data.root)
    images = [root / "train" / "image" / f"{name}.png" for name in train_set.names]
    masks = [root / "train" / "label" / f"{name}.png" for name in train_set.names]
    return seed_dataset(images, masks, cfg.trainer.crop_size, cfg.trainer.batch_size, cfg.trainer.seed)


def measure_case(case: Case, settings: Settings) -> dict[str, Any]:
    """Returns images/s per arm and pipeline, and the paired ratios, for one model and batch size."""
    from bench import training

    overrides = [*case.model_overrides, f"trainer.batch_size={case.batch_size}",
                 f"trainer.crop_size={case.crop_size}", "tracking=none", "trainer.verbose=0"]
    cfg_seed = training.compose(*overrides, "aug=seed")
    cfg_heavy = training.compose(*overrides, "aug=heavy")
    train_set, weights = training.load_data(cfg_seed)
    model = training.build_compiled_model(cfg_seed, train_set)
    images, targets = training.sample_batch(cfg_seed, train_set, weights)

    fits = {
        "a_seed_loop": training.dataset_fit(model, seed_loop_dataset(cfg_seed, train_set)),
        "b_segexp_aug_seed": training.segexp_fit(cfg_seed, model, train_set, weights),
        "c_segexp_aug_heavy": training.segexp_fit(cfg_heavy, model, train_set, weights),
        "d_model_alone": training.dataset_fit(model, training.in_memory_dataset(images, targets)),
    }
    streams = {
        "a_seed_loop": seed_loop_dataset(cfg_seed, train_set),
        "b_segexp_aug_seed": training.segexp_training_stream(cfg_seed, train_set, weights),
        "c_segexp_aug_heavy": training.segexp_training_stream(cfg_heavy, train_set, weights),
    }
    batch = case.batch_size
    common.log(f"{case.name}: warming up (tracing) {len(fits)} arms")
    for fit in fits.values():
        training.seconds_per_step(fit, 1, case.warmup)

    def fit_arm(fit):
        return lambda: training.seconds_per_step(fit, case.steps, case.warmup) / batch

    def pipeline_arm(stream):
        return lambda: training.seconds_per_batch(stream, settings.pipeline_batches, settings.pipeline_warmup) / batch

    arms = {name: fit_arm(fit) for name, fit in fits.items()}
    arms |= {f"pipeline:{name}": pipeline_arm(stream) for name, stream in streams.items()}
    samples = common.interleaved(arms, settings.repeats)

    def images_per_s(arm: str) -> list[float]:
        return [1 / s for s in samples[arm]]

    ratios = {label: common.paired_ratios(images_per_s(num), images_per_s(den)) for label, (num, den) in RATIOS.items()}
    ratios |= {f"pipeline {name}/d": common.paired_ratios(images_per_s(f"pipeline:{name}"),
                                                           images_per_s("d_model_alone")) for name in PIPELINES}
    return {
        "model": case.name,
        "params": int(model.count_params()),
        "batch_size": batch,
        "crop_size": case.crop_size,
        "fit": {name: common.rate_summary(samples[name]) for name in fits},
        "pipeline": {name: common.rate_summary(samples[f"pipeline:{name}"]) for name in streams},
        "ratios": ratios,
    }


def tables(cases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Returns the report tables: rates, ratios and pipelines alone, one set per case."""
    out = []
    for name, case in cases.items():
        label = f"{name} ({case['params']:,} params), batch {case['batch_size']}, {case['crop_size']}x{case['crop_size']}"
        out.append(common.table(
            f"{label}: training images/s",
            ["input path", "images/s best", "images/s median", "s/step median"],
            [[ARMS[arm], r["best"], r["median"], r["seconds_per_item"]["median"] * case["batch_size"]]
             for arm, r in case["fit"].items()],
        ))
        out.append(common.table(
            f"{label}: ratios of images/s (paired per repeat)",
            ["ratio", "min", "median"],
            [[label_, r["min"], r["median"]] for label_, r in case["ratios"].items()],
        ))
        model_alone = case["fit"]["d_model_alone"]["median"]
        out.append(common.table(
            f"{label}: input pipelines alone (no model) vs what the model consumes ((d) = {model_alone:.3g} images/s)",
            ["pipeline", "images/s best", "images/s median", "median / (d)"],
            [[ARMS[arm], r["best"], r["median"], case["ratios"][f"pipeline {arm}/d"]["median"]]
             for arm, r in case["pipeline"].items()],
        ))
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from bench.training import fresh_session

    args, settings, result = common.begin(NAME, TITLE, METHOD, argv, FULL, QUICK)
    cases = {}
    for case in settings.cases:
        fresh_session()
        cases[case.name] = measure_case(case, settings)
    result["cases"] = cases
    result["tables"] = tables(cases)
    result["notes"] = [
        "All arms share the 2 cores: the input pipeline competes with the model for CPU, so a pipeline "
        "faster than (d) alone can still slow training.",
        "(a) reads and resizes whole 512x512 slices from disk every batch and runs in one producer thread, "
        "as the seed's fit_generator(workers=1, max_queue_size=10) did.",
        "(b) and (c) run segexp.training.build.fit; the per-epoch validation (a callback in a real run) is not part of it.",
    ]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
