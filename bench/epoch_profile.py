"""Profile: where one epoch of a recipe (default `experiment=isbi_best`) spends its wall time.

The epoch is taken apart into what segexp runs: the training steps with the real augmented
pipeline, the same steps fed a pre-made batch (the model alone), the pipeline alone, and the
per-epoch selection pass (whole selection slices through the model, pixel scores, the ISBI topology
scores). The topology scoring is pure numpy/scipy/scikit-image, so cProfile names its hot
functions. Parts are interleaved per repeat like every other benchmark here.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from dataclasses import dataclass
from typing import Any, Sequence

from bench import common, render
from bench.training import TINY_MODEL

NAME = "epoch_profile"
TITLE = "Profile: where an epoch of experiment=isbi_best goes"
METHOD = (
    "One epoch = steps_per_epoch training steps + one scoring pass over the selection slices. Timed apart, "
    "interleaved per repeat: a training step with segexp's augmented tf.data pipeline (train.fit), the same "
    "step fed one pre-made batch (model alone), a batch of the pipeline alone, and the per-epoch selection "
    "pass's parts: whole-slice prediction, pixel scores and loss, ISBI topology scores (the reference's 11 "
    "thresholds). cProfile of the topology scoring names its hot functions."
)


@dataclass(frozen=True)
class Settings:
    overrides: tuple[str, ...]
    steps: int
    warmup: int
    repeats: int
    select_slices: int | None  # None: the recipe's selection slices, whole


FULL = Settings(("experiment=isbi_best",), steps=10, warmup=2, repeats=3, select_slices=None)
QUICK = Settings(("experiment=isbi_best", *TINY_MODEL, "trainer.crop_size=64", "trainer.batch_size=2",
                            "trainer.precision=float32", "trainer.jit_compile=false",
                            # generated slices, the recipe's own pipeline: checks the script without a 512x512 stack
                            "data=synthetic", "data.size=96", "split.select=[-2]", "split.report=[-1]"),
                 steps=2, warmup=1, repeats=1, select_slices=1)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from bench import training
    from segexp.evaluation.metrics import isbi_scores
    from segexp.inference.tiling import predict_slices
    from segexp.evaluation.scoring import slice_scores
    from segexp.training.build import prepare_data

    args, settings, result = common.begin(NAME, TITLE, METHOD, argv, FULL, QUICK)
    training.fresh_session()
    cfg = training.compose(*settings.overrides, "tracking=none", "trainer.verbose=0")
    parts, weights = prepare_data(cfg)
    train_set, select_set = parts["train"], parts["select"]
    if settings.select_slices:
        select_set = select_set.subset(list(range(settings.select_slices)))
    model = training.build_compiled_model(cfg, train_set)
    batch = cfg.trainer.batch_size
    stream = training.segexp_training_stream(cfg, train_set, weights)
    fit_real = training.segexp_fit(cfg, model, train_set, weights)
    fit_model = training.dataset_fit(model, training.in_memory_dataset(*training.sample_batch(cfg, train_set, weights)))
    common.log("warming up (tracing)")
    training.seconds_per_step(fit_real, 1, settings.warmup)
    training.seconds_per_step(fit_model, 1, settings.warmup)
    probs = predict_slices(model, select_set.images)
    masks, fg, loss = select_set.masks, select_set.foreground, model.loss

    def timed(work):
        def arm() -> float:
            start = time.perf_counter()
            work()
            return time.perf_counter() - start
        return arm

    arms = {
        "train step, augmented pipeline": lambda: training.seconds_per_step(fit_real, settings.steps, settings.warmup),
        "train step, model alone": lambda: training.seconds_per_step(fit_model, settings.steps, settings.warmup),
        "pipeline batch alone": lambda: training.seconds_per_batch(stream, settings.steps, settings.warmup),
        "selection pass: predict slices": timed(lambda: predict_slices(model, select_set.images)),
        "selection pass: loss + pixel scores": timed(lambda: slice_scores(loss, probs, masks, fg, topology=False)),
        "selection pass: topology scores": timed(lambda: isbi_scores(probs, masks)),
    }
    samples = common.interleaved(arms, settings.repeats)
    median = {name: common.summarize(values)["median"] for name, values in samples.items()}

    steps_per_epoch = cfg.trainer.steps_per_epoch
    epoch = {"training steps": steps_per_epoch * median["train step, augmented pipeline"],
             "selection pass: predict slices": median["selection pass: predict slices"],
             "selection pass: loss + pixel scores": median["selection pass: loss + pixel scores"],
             "selection pass: topology scores": median["selection pass: topology scores"]}
    total = sum(epoch.values())
    model_share = median["train step, model alone"] / median["train step, augmented pipeline"]

    profiler = cProfile.Profile()
    profiler.runcall(isbi_scores, probs, masks)
    stats = pstats.Stats(profiler)
    topology_total = sum(row[2] for row in stats.stats.values())  # total internal time
    hot = sorted(((row[2], f"{func[2]} ({func[0].rsplit('/', 1)[-1]}:{func[1]})")
                  for func, row in stats.stats.items()), reverse=True)[:6]

    result.update(seconds=samples, epoch_seconds=epoch, model_share_of_step=model_share,
                  topology_hot=[{"function": name, "seconds": s, "share": s / topology_total} for s, name in hot])
    result["tables"] = [
        common.table(f"Parts, median of {settings.repeats} ({len(select_set.images)} selection slices, batch {batch})",
                     ["part", "s min", "s median"],
                     [[name, min(values), median[name]] for name, values in samples.items()]),
        common.table(f"One epoch ({steps_per_epoch} steps + one selection pass), from the medians",
                     ["part", "s", "share of epoch"], [[name, s, s / total] for name, s in epoch.items()]),
        common.table("Topology scoring, cProfile internal time", ["function", "s", "share"],
                     [[h["function"], h["seconds"], h["share"]] for h in result["topology_hot"]]),
    ]
    pipeline_vs_step = median["pipeline batch alone"] / median["train step, model alone"]
    result["notes"] += [
        f"The model alone takes {model_share:.0%} of a training step with the real pipeline; the pipeline alone "
        f"needs {pipeline_vs_step:.2f}x a model step per batch (on 2 cores its workers compete with the model "
        "for the same CPUs, so the two do not simply overlap).",
        "cProfile times are with the profiler's overhead; read them as shares.",
    ]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
