"""B2: how much of the CPU's matmul speed segexp's fit loop turns into U-Net training FLOPs.

Reference: fp32 GFLOP/s of a large tf.matmul. Model cost: training FLOPs per image counted
from the convolutions' shapes (forward 2*H*W*k*k*Cin*Cout per conv, training ~3x forward).
Achieved: images/s of segexp.training.build.fit (real augmented pipeline) x FLOPs per image. Variants
(jit_compile, batch size, mixed_bfloat16 where the CPU has native bf16) are interleaved with
the matmul reference in one process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from bench import common, render
from bench.training import TINY_MODEL

NAME = "compute"
TITLE = "B2 compute efficiency: achieved training FLOP/s vs fp32 matmul"
METHOD = (
    "Matmul: n x n fp32 (and, where the CPU has native bf16, bf16) tf.matmul repeated, 2n^3 FLOPs each. U-Net: conv "
    "FLOPs from layer shapes, training = 3x forward. Achieved = steady-state images/s of segexp.training.build.fit x "
    "training FLOPs/image, against the fp32 matmul and the matmul of the variant's own precision. Variants and the "
    "matmul references are interleaved per repeat; effects are ratios to the variant's baseline, paired per repeat. "
    "The isbi_best variants change one piece of its step each: what that does to images/s is what the piece costs."
)


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]
    baseline: str  # the variant this one's effect is measured against (itself for a baseline)
    steps: int
    warmup: int
    needs_bf16: bool = False


@dataclass(frozen=True)
class Settings:
    matmul_size: int
    matmuls_per_sample: int
    crop_size: int
    repeats: int
    variants: tuple[Variant, ...]


def small(name: str, *extra: str, baseline: str = "unet_small b4", steps: int = 8, bf16: bool = False) -> Variant:
    return Variant(name, ("model=unet_small", *extra), baseline, steps, warmup=2, needs_bf16=bf16)


def best(name: str, *extra: str, precision: str = "mixed_bfloat16") -> Variant:
    """isbi_best's training step as it runs where bf16 pays (XLA off, as the probe chose on the machines measured),
    with one piece changed: its effect on images/s says what that piece costs."""
    return Variant(name, ("experiment=isbi_best", "trainer.max_minutes=null", "trainer.jit_compile=false",
                          f"trainer.precision={precision}", *extra), "isbi_best bf16", steps=6, warmup=2,
                   needs_bf16=True)


FULL = Settings(
    matmul_size=2048,
    matmuls_per_sample=10,
    crop_size=256,
    repeats=3,
    variants=(
        small("unet_small b4", "trainer.batch_size=4"),
        small("unet_small b4 jit", "trainer.batch_size=4", "trainer.jit_compile=true"),
        small("unet_small b2", "trainer.batch_size=2", steps=12),
        small("unet_small b8", "trainer.batch_size=8", steps=4),
        small("unet_small b4 bf16", "trainer.batch_size=4", "trainer.precision=mixed_bfloat16", bf16=True),
        Variant("unet b2", ("model=unet", "trainer.batch_size=2"), "unet b2", steps=3, warmup=1),
        Variant("unet b2 jit", ("model=unet", "trainer.batch_size=2", "trainer.jit_compile=true"), "unet b2",
                steps=3, warmup=1),
        # where isbi_best's step goes (issue 24): each piece taken out or swapped for a cheaper one
        best("isbi_best bf16"),
        best("isbi_best float32", precision="float32"),
        best("isbi_best bf16, Keras' batch norm", "model.fused_batch_norm=false"),  # not TensorFlow's fused kernel
        best("isbi_best float32, Keras' batch norm", "model.fused_batch_norm=false", precision="float32"),
        best("isbi_best bf16, no batch norm", "model.batch_norm=false"),
        best("isbi_best bf16, bilinear upsampling", "model.upsampling=bilinear"),
        best("isbi_best bf16, BCE loss only", "loss=bce"),
        best("isbi_best bf16, Adam", "optimizer=adam"),
        best("isbi_best bf16, light aug", "aug=light"),
    ),
)
# quick: the baseline only (each model costs a graph trace, ~5 s; XLA compiling the tiny one ~25 s)
QUICK = Settings(
    matmul_size=512,
    matmuls_per_sample=4,
    crop_size=64,
    repeats=1,
    variants=(
        Variant("tiny b2", (*TINY_MODEL, "trainer.batch_size=2"), "tiny b2", steps=2, warmup=1),
        Variant("tiny b2 bf16", (*TINY_MODEL, "trainer.batch_size=2", "trainer.precision=mixed_bfloat16"), "tiny b2",
                steps=2, warmup=1, needs_bf16=True),
    ),
)


def matmul_arm(size: int, count: int, dtype: str):
    """Returns an arm measuring seconds per size x size matmul (mean over `count` back-to-back calls)."""
    import tensorflow as tf

    a = tf.random.normal((size, size), dtype=tf.float32)
    b = tf.random.normal((size, size), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    tf.matmul(a, b).numpy()  # first call picks the kernel

    def arm() -> float:
        start = time.perf_counter()
        for _ in range(count):
            c = tf.matmul(a, b)
        c.numpy()  # CPU ops run synchronously; this only guards against lazy execution
        return (time.perf_counter() - start) / count

    return arm


def own_matmul(variant: Variant, matmul: dict) -> str:
    """The matmul reference of a variant's precision: bf16 for the mixed_bfloat16 variants where it was timed."""
    bf16 = "trainer.precision=mixed_bfloat16" in variant.overrides
    return "matmul bf16" if bf16 and "matmul bf16" in matmul else "matmul fp32"


def variant_arm(variant: Variant, crop_size: int) -> tuple:
    """Returns (arm measuring seconds per image, FLOPs per image, batch size) of one segexp fit-loop variant."""
    from bench import training

    cfg = training.compose(*variant.overrides, f"trainer.crop_size={crop_size}", "tracking=none", "trainer.verbose=0")
    train_set, weights = training.load_data(cfg)
    model = training.build_compiled_model(cfg, train_set)
    flops = training.forward_flops_per_image(model, crop_size, crop_size)
    fit = training.segexp_fit(cfg, model, train_set, weights)
    batch = cfg.trainer.batch_size
    common.log(f"{variant.name}: warming up (tracing{', XLA compile' if cfg.trainer.jit_compile else ''})")
    training.seconds_per_step(fit, 1, variant.warmup)
    return (lambda: training.seconds_per_step(fit, variant.steps, variant.warmup) / batch), flops, batch


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from bench.training import fresh_session
    from segexp.training.runtime import cpu_has_bf16

    args, settings, result = common.begin(NAME, TITLE, METHOD, argv, FULL, QUICK)
    bf16 = cpu_has_bf16()  # native bf16 advertised: worth timing at all
    fresh_session()
    n = settings.matmul_size
    arms = {"matmul fp32": matmul_arm(n, settings.matmuls_per_sample, "float32")}
    if bf16:
        arms["matmul bf16"] = matmul_arm(n, settings.matmuls_per_sample, "bfloat16")
    variants = [v for v in settings.variants if bf16 or not v.needs_bf16]
    skipped = [v.name for v in settings.variants if v not in variants]
    by_name = {v.name: v for v in variants}
    if skipped:
        result["notes"].append(f"skipped {', '.join(skipped)}: the CPU has neither avx512_bf16 nor amx_bf16, so "
                               "TensorFlow would emulate bfloat16 (slower than fp32, not a useful variant here); "
                               "isbi_best's float32 step is measured against its bf16 one, so it goes too")
    info = {}
    for variant in variants:
        arm, flops, batch = variant_arm(variant, settings.crop_size)
        arms[variant.name] = arm
        info[variant.name] = {**flops, "batch_size": batch, "baseline": variant.baseline}
    samples = common.interleaved(arms, settings.repeats)

    matmul_flops = 2.0 * n**3
    matmul = {name: [matmul_flops / s / 1e9 for s in samples[name]] for name in arms if name.startswith("matmul")}
    result["matmul"] = {name: {"size": n, "gflops": common.summarize(values)} for name, values in matmul.items()}
    measured = {}
    for name, meta in info.items():
        images_per_s = [1 / s for s in samples[name]]
        achieved = [r * meta["train_flops"] / 1e9 for r in images_per_s]
        measured[name] = {
            **meta,
            "images_per_s": common.rate_summary(samples[name]),
            "achieved_gflops": common.summarize(achieved),
            "achieved_over_matmul": common.paired_ratios(achieved, matmul["matmul fp32"]),
            "achieved_over_own_matmul": common.paired_ratios(achieved, matmul[own_matmul(by_name[name], matmul)]),
            "effect_vs_baseline": common.paired_ratios(images_per_s, [1 / s for s in samples[meta["baseline"]]]),
        }
    result["variants"] = measured

    result["tables"] = [
        common.table("Matmul reference", ["kernel", "size", "GFLOP/s best", "GFLOP/s median"],
                     [[name, f"{n}x{n}", m["gflops"]["max"], m["gflops"]["median"]] for name, m in result["matmul"].items()]),
        common.table(
            f"segexp fit loop at {settings.crop_size}x{settings.crop_size} (default aug, real pipeline)",
            ["variant", "train GFLOP/image", "images/s median", "achieved GFLOP/s median", "achieved / matmul fp32",
             "achieved / matmul of its precision", "images/s vs baseline"],
            [[name, m["train_flops"] / 1e9, m["images_per_s"]["median"], m["achieved_gflops"]["median"],
              m["achieved_over_matmul"]["median"], m["achieved_over_own_matmul"]["median"],
              "baseline" if m["baseline"] == name else f"{m['effect_vs_baseline']['median']:.3g}x of {m['baseline']}"]
             for name, m in measured.items()],
        ),
    ]
    result["notes"] += [
        "FLOPs count convolutions only (batch norm, activations, pooling, loss and optimizer excluded), so "
        "achieved/matmul slightly understates the work done.",
        "Fit loop = segexp.training.build.fit with its augmented tf.data pipeline (conf/train.yaml's default aug): the "
        "pipeline's CPU time is part of the cost, as in a real run.",
    ]
    render.write_results(result, args.out)
    return result


if __name__ == "__main__":
    main()
